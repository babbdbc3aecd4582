"""What the scraper does with what an erasure took out (`storage.erasure`): never fetched, never stored."""

from __future__ import annotations

import hashlib

from facescale.scraper.candidates import Candidate
from facescale.scraper.downloader import FetchResult
from facescale.scraper.history import History
from facescale.scraper.scrape import build_rows
from facescale.storage import Identity
from facescale.storage.erasures import ERASED, Blocklist, digest


def test_erased_urls_and_bytes_become_rows_without_bytes() -> None:
    erased_bytes, kept_bytes = b"\xff\xd8 erased photo", b"\xff\xd8 another photo"
    erased_id = hashlib.sha256(erased_bytes).hexdigest()
    blocklist = Blocklist(url_hashes=frozenset({digest("http://x.example/erased.jpg")}),
                          image_ids=frozenset({erased_id}))
    history = History(erased=blocklist)
    candidates = [Candidate("Ada", url, None, rank) for rank, url in enumerate(
        ["http://x.example/erased.jpg", "http://y.example/same-bytes.jpg", "http://z.example/ok.jpg"])]
    assert history.fetched(candidates[0].source_url)  # so the downloader is never asked for it
    fetched = {
        c.source_url: FetchResult(c.source_url, 200, "image/jpeg", data, hashlib.sha256(data).hexdigest(), 8, 8)
        for c, data in zip(candidates[1:], [erased_bytes, kept_bytes], strict=True)
    }
    rows = build_rows(Identity(name="Ada", slug="ada", label=0), "run-1", "demo", candidates, fetched, history)
    assert [(r["error"], r.get("image")) for r in rows] == [(ERASED, None), (ERASED, None), (None, kept_bytes)]
