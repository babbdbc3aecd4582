"""The listing index: a store's final records kept in one file, so a listing reads one file plus what is new.

A store with a long history (a RAW run per scrape batch, a crop chunk and a version per night,
a plan per night) would otherwise read one record per entry every time it is listed: on an
object store one request per past night, every night. With the index a listing costs the
directory listing itself (the truth: one LIST, paged by the thousand), one read of
``_index.json``, and one read per entry the index lacks.

Only records that can no longer change are indexed (``final``): a finished RAW run, a
committed crop chunk, a version's id and creation time, a stored plan. Entries that may still
change (an unfinished run) are read from their own record every time. The index is derived
data, never the truth:

- an entry is taken from it only when the listing shows the entry, so a removed entry is
  gone from every listing at once (and from the index at the next rewrite);
- it is rewritten (atomically, `Location.write_bytes_atomic`) by whichever listing learned a
  final record it lacked or saw an indexed entry gone; two listings racing lose at most the
  loser's additions, which a later listing reads again from the entries;
- a missing, malformed or older-format index is rebuilt from the entries, and a store that
  cannot be written (read-only credentials) is listed all the same, from the entries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Generic, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from facescale.errors import NotFoundError, StorageError

from .fs import Location
from .manifest import is_valid_id

log = logging.getLogger(__name__)

INDEX_FILE = "_index.json"
INDEX_FORMAT = 1

S = TypeVar("S", bound=BaseModel)


class _Index(BaseModel):
    format: int
    entries: dict[str, object]


class ListingIndex(Generic[S]):
    """The entries of one store directory and their records (``records()``), read through ``_index.json``.

    Args:
        location: the store's directory (its entries are the sub-directories with valid ids,
            unless ``entries`` lists them another way).
        model: the record (or record summary) type kept per entry.
        read: an entry's record from the entry itself; `NotFoundError` when it is not committed
            (such an entry is not listed).
        final: whether a record can no longer change (only those are indexed).
        entries: the entry names, when they are not the valid sub-directories (e.g. files).
        name: the index file's name (a second index over the same entries keeps other records).
    """

    def __init__(
        self,
        location: Location,
        model: type[S],
        read: Callable[[str], S],
        *,
        final: Callable[[S], bool] = lambda _: True,
        entries: Callable[[], list[str]] | None = None,
        name: str = INDEX_FILE,
    ) -> None:
        self.location = location
        self.path = location.path(name)
        self._adapter = TypeAdapter(dict[str, model])  # type: ignore[valid-type]  # a runtime type argument
        self._read = read
        self._final = final
        self._entries = entries or (lambda: [e for e in location.list_dirs(location.root) if is_valid_id(e)])

    def records(self) -> dict[str, S]:
        """Every committed entry's record, by entry name (sorted)."""
        indexed = self._load()
        found: dict[str, S] = {}
        learned = False
        for entry in sorted(self._entries()):
            record = indexed.get(entry)
            if record is None:
                try:
                    record = self._read(entry)
                except NotFoundError:  # a directory whose record was never written: not committed
                    continue
                learned = learned or self._final(record)
            found[entry] = record
        if learned or not indexed.keys() <= found.keys():
            self._save({k: v for k, v in found.items() if k in indexed or self._final(v)})
        return found

    def _load(self) -> dict[str, S]:
        if not self.location.exists(self.path):
            return {}
        try:
            index = _Index.model_validate_json(self.location.read_bytes(self.path))
            if index.format != INDEX_FORMAT:
                return {}
            entries: dict[str, S] = self._adapter.validate_python(index.entries)
            return entries
        except (StorageError, ValidationError) as exc:
            log.warning("ignoring the listing index %s (rebuilt from the entries): %s",
                        self.location.display(self.path), str(exc).splitlines()[0])
            return {}

    def _save(self, records: dict[str, S]) -> None:
        data = {"format": INDEX_FORMAT, "entries": {k: v.model_dump(mode="json") for k, v in records.items()}}
        try:
            self.location.write_bytes_atomic(self.path, _Index.model_validate(data).model_dump_json().encode())
        except StorageError as exc:  # a read-only store is still listed, from the entries
            log.debug("cannot update the listing index %s: %s", self.location.display(self.path), exc)
