"""What a search engine yields: candidate image URLs with where and how high they were found."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Candidate:
    """One image URL found for a keyword (browsers only find URLs; the downloader fetches)."""

    keyword: str
    source_url: str  # the full-size image URL
    page_url: str | None  # the page the image belongs to, when the engine gives one
    rank: int  # 0-based position in the engine's result list for the keyword
    engine: str | None = None  # the engine that found it, when several are asked (`engines.FallbackEngine`)
