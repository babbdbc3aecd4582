"""Read a keyword file safely: one identity name per line, '#' comments, blanks ignored.

Names are validated and normalised by the identity registry's rules (`normalize_name`):
unusable lines (control characters, over-long) are reported with their line number and
skipped, and case/whitespace duplicates collapse to their first spelling. Names are only
ever used as data (queries, registry entries); paths come from slugs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from facescale.errors import FacescaleError, InvalidIdentityError
from facescale.storage.identities import name_key, normalize_name


@dataclass
class KeywordList:
    names: list[str] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)
    duplicates: int = 0


def parse_keywords(lines: list[str]) -> KeywordList:
    result = KeywordList()
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            name = normalize_name(text)
        except InvalidIdentityError as exc:
            result.rejected.append((number, str(exc)))
            continue
        key = name_key(name)
        if key in seen:
            result.duplicates += 1
            continue
        seen.add(key)
        result.names.append(name)
    return result


def read_keywords(path: Path) -> KeywordList:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise FacescaleError(f"keyword file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise FacescaleError(f"keyword file {path} is not UTF-8 text (byte {exc.start})") from exc
    except OSError as exc:
        raise FacescaleError(f"cannot read keyword file {path}: {exc.strerror}") from exc
    return parse_keywords(text.splitlines())
