"""A night's overhead does not grow with the store's history (plain unit tier: no Ray, no browser).

What a night reads about the past, besides the photos themselves: the plan (every RAW run's
completed keywords, the newest version, the waiting counts of every earlier plan) and
curation's listings (the RAW shards no crop chunk covers yet, the crop chunks, the parent
version). Each test builds a store of N earlier nights the way nights leave them (a plan by
`plan_night`, a finished RAW run, the crop chunk covering it, a version), each night also
doing a night's listings (so the listing indexes are as a night leaves them), then counts the
file-system requests of one more night. The counts, not wall times, must be the same after 3
and after 30 nights.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fsspec.implementations.local import LocalFileSystem

from facescale.app.orchestration import plan_night
from facescale.config import Settings
from facescale.pipeline.curate import unprepared_shards
from facescale.storage import (
    CropStore,
    DatasetStore,
    IdentityEntry,
    IdentityRegistry,
    Location,
    Manifest,
    RawStore,
    ShardInfo,
    make_slug,
)
from facescale.storage.crops import chunk_id, raw_shard_key

PARAMS = "crop-params-fingerprint"
START = datetime(2026, 10, 1, tzinfo=UTC)
PEOPLE = ["Ada Lovelace", "Alan Turing", "Grace Hopper"]
WAITING = ["Edsger Dijkstra"]  # short of photos every night: the plan counts its earlier searches


def _settings(root: Path) -> Settings:
    return Settings(storage={"root": str(root)}, orchestration={"max_waiting_nights": None, "batch_size": 8})


def _key(night: int) -> str:
    return (START + timedelta(days=night)).strftime("%Y%m%d")


def _night_listings(root: Path, night: int) -> tuple[Any, ...]:
    """What a night reads about the past: its plan, then curation's listings."""
    location = Location.from_uri(str(root))
    plan = plan_night(_settings(root), _key(night))
    raw, crops, datasets = RawStore(location), CropStore(location), DatasetStore(location)
    todo = unprepared_shards(raw, crops, PARAMS)
    return plan, todo, crops.chunks(PARAMS), datasets.latest(published_only=False)


def _leave_night(root: Path, night: int) -> None:
    """What a night leaves behind: its RAW run, the crop chunk covering it, its version (its plan is made first)."""
    location = Location.from_uri(str(root))
    key = _key(night)
    _night_listings(root, night)
    registry = IdentityRegistry(location)
    identities = [i for i, _ in registry.add(PEOPLE + WAITING)]
    raw = RawStore(location)
    with raw.open(f"nightly-{key}-b00") as writer:
        writer.write([{
            "image_id": None, "run_id": f"nightly-{key}-b00", "identity": i.name, "identity_slug": i.slug,
            "keyword": i.name, "engine": "demo", "source_url": f"http://site.invalid/{key}/{i.slug}.jpg",
            "page_url": None, "rank": 0, "fetched_at": START + timedelta(days=night), "http_status": 404,
            "content_type": None, "image": None, "width": None, "height": None, "error": "http_error",
        } for i in identities])
        record = writer.commit([i.slug for i in identities], finished=True)
    keys = [raw_shard_key(record.run_id, s) for s in record.shards]
    crops = CropStore(location)
    with crops.open(chunk_id(PARAMS, keys), PARAMS, keys) as chunk:
        chunk.commit({"rows_in": record.rows})
    store = DatasetStore(location)
    version = f"nightly-{key}"
    manifest = Manifest(
        version_id=version,
        created_at=START + timedelta(days=night, hours=1),
        identities=[IdentityEntry(name=n, slug=make_slug(n), label=i) for i, n in enumerate(PEOPLE)],
        shards=[ShardInfo(path="shards/part-0.parquet", rows=365 * len(PEOPLE), bytes=1, sha256="0" * 64)],
        published_at=START + timedelta(days=night, hours=2),
        notes={"curation": {"waiting": {make_slug(n): {} for n in WAITING}}},
    )
    location.makedirs(store.version_dir(version))
    location.write_bytes_atomic(store.manifest_path(version), manifest.to_json())


@pytest.fixture
def requests(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Counts the local file system's reads, existence checks and listings (the requests of an object store)."""
    counts: Counter[str] = Counter()

    def counting(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(self: LocalFileSystem, *args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return method(self, *args, **kwargs)

        return call

    # (not `info`: the local `ls` stats every entry it lists, which an object store's LIST returns at once)
    for name in ("cat_file", "exists", "ls", "_open"):
        monkeypatch.setattr(LocalFileSystem, name, counting(name, getattr(LocalFileSystem, name)))
    yield counts


def _store_with_history(root: Path, nights: int) -> None:
    for night in range(nights):
        _leave_night(root, night)


def _one_more_night(root: Path, nights: int, requests: Counter[str]) -> tuple[Counter[str], tuple[Any, ...]]:
    requests.clear()
    found = _night_listings(root, nights)
    return Counter(requests), found


def test_a_nights_requests_do_not_grow_with_the_number_of_earlier_nights(
    tmp_path: Path, requests: Counter[str]
) -> None:
    results = {}
    for nights in (3, 30):
        root = tmp_path / f"history-{nights}"
        _store_with_history(root, nights)
        results[nights] = _one_more_night(root, nights, requests)
    (few, (plan3, *_)), (many, (plan30, todo30, chunks30, latest30)) = results[3], results[30]
    # the night still sees its whole history ...
    # (the first night had no version yet, so nobody was waiting)
    assert plan3.waiting_nights == {"Edsger Dijkstra": 2} and plan30.waiting_nights == {"Edsger Dijkstra": 29}
    assert plan30.pending == [] and todo30 == [] and len(chunks30) == 30
    assert latest30 is not None and latest30.version_id == f"nightly-{_key(29)}"
    # ... for the same requests: reads, existence checks and listings alike
    assert many == few, f"after 30 nights {dict(many)}, after 3 {dict(few)}"


def test_a_new_entry_is_read_once_then_comes_from_the_index(tmp_path: Path, requests: Counter[str]) -> None:
    root = tmp_path / "store"
    _store_with_history(root, 5)
    _leave_night(root, 5)  # a night the indexes have not seen yet: read from its entries
    first, _ = _one_more_night(root, 6, requests)
    second, found = _one_more_night(root, 7, requests)  # the same history, one night later
    assert second["cat_file"] + second["_open"] < first["cat_file"] + first["_open"]
    assert len(found[2]) == 6 and found[1] == []
