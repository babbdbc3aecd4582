"""What earlier RAW runs already hold: fetched URLs and stored image hashes.

Loaded once per run from two or three columns of every committed RAW shard (streamed), and
updated as the run commits, so exact duplicates are never stored twice and a URL fetched
once is not fetched again, across runs. URLs are kept as 16-byte BLAKE2 digests to keep
the index small (about 80 bytes per URL in a Python set).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from facescale.storage import RawStore
from facescale.storage.erasures import Blocklist

from .downloader import DownloadReason

# Verdicts of a failed fetch that say nothing lasting about the URL: a later run retries it.
TRANSIENT_ERRORS = frozenset({DownloadReason.TIMEOUT, DownloadReason.CONNECTION_ERROR, "http_429"})
# Rows for URLs that were not fetched at all.
NOT_FETCHED = frozenset({"already_fetched", DownloadReason.INVALID_URL})


def counts_as_fetched(error: str | None) -> bool:
    """Whether a row with this verdict means its URL need not be fetched again."""
    if error is None:
        return True
    return error not in NOT_FETCHED and error not in TRANSIENT_ERRORS and not error.startswith("http_5")


def url_key(url: str) -> bytes:
    return hashlib.blake2b(url.encode("utf-8", "surrogatepass"), digest_size=16).digest()


@dataclass
class History:
    urls: set[bytes] = field(default_factory=set)  # url_key of every URL ever fetched
    image_ids: set[str] = field(default_factory=set)  # sha256 of every stored image
    erased: Blocklist = field(default_factory=Blocklist)  # URLs and images erased (`storage.erasure`)

    @classmethod
    def load(
        cls, store: RawStore, run_ids: Iterable[str] | None = None, erased: Blocklist | None = None
    ) -> History:
        history = cls(erased=erased or Blocklist())
        columns = ["source_url", "image_id", "error"]
        for batch in store.iter_batches(run_ids, columns=columns, batch_size=8192):
            history.add_batch(batch.to_pydict())
        return history

    def add_batch(self, columns: Mapping[str, list[Any]]) -> None:
        for url, image_id, error in zip(columns["source_url"], columns["image_id"], columns["error"], strict=True):
            if counts_as_fetched(error):
                self.urls.add(url_key(url))
            if error is None and image_id:
                self.image_ids.add(image_id)

    def add_rows(self, rows: Iterable[Mapping[str, Any]]) -> None:
        rows = list(rows)
        self.add_batch({k: [r.get(k) for r in rows] for k in ("source_url", "image_id", "error")})

    def fetched(self, url: str) -> bool:
        """Whether ``url`` needs no fetch: fetched before, or erased (never fetched again)."""
        return url_key(url) in self.urls or self.erased.url(url)

    def stored(self, image_id: str | None) -> bool:
        return image_id is not None and image_id in self.image_ids

    def erased_url(self, url: str) -> bool:
        return self.erased.url(url)

    def erased_image(self, image_id: str | None) -> bool:
        return image_id is not None and image_id in self.erased.image_ids

