"""The stores' commit rule, written once: an entry is a directory whose record file is written last.

RAW runs (``run.json``), crop-cache chunks (``chunk.json``), dataset versions
(``manifest.json``) and models (``model.json``) all write their files first and their record
last, so a directory without its record is an unfinished write: listed by nobody, read by
nobody, and reported by the store's ``uncommitted()``.
"""

from __future__ import annotations

import posixpath

from facescale.errors import NotFoundError

from .fs import Location
from .manifest import is_valid_id
from .records import Record, parse_record


def committed_ids(location: Location, record_file: str) -> list[str]:
    """The ids of the committed entries under ``location``, sorted (valid ids holding ``record_file``)."""
    return [
        entry
        for entry in location.list_dirs(location.root)
        if is_valid_id(entry) and location.exists(posixpath.join(location.path(entry), record_file))
    ]


def uncommitted_ids(location: Location, record_file: str) -> list[str]:
    """The directories under ``location`` that a write left without ``record_file``."""
    return [
        entry
        for entry in location.list_dirs(location.root)
        if not location.exists(posixpath.join(location.path(entry), record_file))
    ]


def read_record(location: Location, path: str, model: type[Record], what: str, missing: str) -> Record:
    """The ``model`` stored at ``path``: `NotFoundError` ``missing`` when absent, `ManifestError` when malformed."""
    try:
        data = location.read_bytes(path)
    except NotFoundError:
        raise NotFoundError(missing) from None
    return parse_record(model, data, what, location.display(path))
