"""Erasure: a person and single photos leave every store; the rest stays byte-identical; a kill mid-way
converges; verify finds a planted leftover; bad input changes nothing; an s3:// root works the same."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from facescale.errors import ConflictError, FacescaleError, NotFoundError
from facescale.storage import Location, StorageRoot, raw_shard_key
from facescale.storage.erasure import (
    ErasureRecord,
    digest,
    erase,
    identity_target,
    photos_target,
    verify,
)
from facescale.storage.lease import store_lease

from ..helpers import moto_bucket
from .erasure_store import PHOTOS, ErasureStore, build, row_digests

ADA = "Ada Lovelace"
PROC = Path(__file__).with_name("_erasure_proc.py")


def _erase_person(store: ErasureStore, name: str = ADA) -> ErasureRecord:
    target, identity = identity_target(store.root, name)
    return erase(store.root, target, requested_by="test", reason="takedown", identity=identity)


def _files(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its sha256, the lease's lock file aside."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "_lease.lock"}


def _consistent(root: StorageRoot) -> None:
    """Every record matches its shards, and the crop cache covers every RAW shard (nothing is cropped twice)."""
    for run_id in root.raw.run_ids():
        root.raw.verify(run_id)
    for version_id in root.datasets.version_ids():
        root.datasets.verify(version_id)
    current = {raw_shard_key(r.run_id, s) for r in root.raw.list() for s in r.shards}
    assert root.crops.covered("params") == current


@pytest.fixture(scope="module")
def pristine(lfw_dev: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("erasure")
    build(lfw_dev, Location.from_uri(str(work / "store")), work)
    return work


@pytest.fixture
def store(pristine: Path, lfw_dev: Path, tmp_path: Path) -> ErasureStore:
    shutil.copytree(pristine, tmp_path / "w")
    work = tmp_path / "w"
    photos = {slug: [p.read_bytes() for p in sorted((lfw_dev / folder).glob("*.jpg"))[:6]]
              for slug, folder in (("ada-lovelace", "Jiang_Zemin"), ("alan-turing", "Paul_Bremer"),
                                   ("grace-hopper", "Naomi_Watts"))}
    from .erasure_store import SIZING

    return ErasureStore(StorageRoot(Location.from_uri(str(work / "store")), SIZING), photos, "m-1", work / "export")


def test_a_person_leaves_every_store_and_the_rest_stays_identical(store: ErasureStore) -> None:
    before = row_digests(store.root)
    ada_ids = {store.image_id("ada-lovelace", i) for i in range(6)}

    record = _erase_person(store)

    # nothing of Ada anywhere, her name included (searched for in every text file of the store)
    hits = verify(store.root, record, [ADA])
    assert sum(hits.values()) == 0, hits
    assert "text files: the name" in hits and "crops: embeddings" in hits
    assert set(record.found.image_ids) == ada_ids
    after = row_digests(store.root)
    for kind in before:  # every row that was not hers is unchanged, byte for byte
        kept = {row for row in before[kind] if not any(i in row for i in ada_ids)
                and not any("ada-lovelace" in part or "gone.jpg" in part for part in row)}
        assert after[kind] == kept, kind
    assert record.removed["raw"] == 8  # her 6 photos, her rejected result, her photo found for Alan
    assert record.removed["samples"] == 20  # 10 samples in each of v1 (unpublished) and v2 (published)
    _consistent(store.root)

    # the versions: her entry and notes gone, counts of the others intact, the erasure named, card rewritten
    v2 = store.root.datasets.get("v2")
    assert [e.slug for e in v2.identities] == ["alan-turing", "grace-hopper"]
    assert {e.slug: e.counts for e in v2.identities} == {s: {"train": 8, "val": 1, "test": 1}
                                                          for s in ("alan-turing", "grace-hopper")}
    assert v2.notes["erasures"] == [record.erasure_id] and "ada-lovelace" not in v2.notes["curation"]["identities"]
    assert ADA not in Path(store.root.datasets.card_path("v2")).read_text()
    decoded = pq.read_table(store.root.location.path("datasets", "v2", "validation", "decoded.parquet"))
    assert decoded.num_rows == v2.rows

    # the model: her label gone from serving, her enrolled rows gone, marked for retraining
    files = Path(store.root.models.files_dir("m-1"))
    labels = json.loads((files / "labels.json").read_text())["labels"]
    assert sorted(labels) == ["1", "2"]
    with np.load(files / "calibration" / "gallery-dlib.npz") as npz:
        assert 0 not in npz["labels"] and not set(npz["ids"]) & ada_ids and len(npz["labels"]) == 8
    model = store.root.models.get("m-1")
    assert model.notes["retrain"] is True and model.notes["erasures"] == [record.erasure_id]
    assert {f.path for f in model.files} >= {"eval/curves.png", "model.keras"}
    assert not {"eval/feature_maps.png", "eval/confusion.png"} & {f.path for f in model.files}
    for f in model.files:  # the record's checksums follow the rewritten files
        assert hashlib.sha256((files / f.path).read_bytes()).hexdigest() == f.sha256

    # the registry keeps her label reserved under a tombstone; the rest forgets her
    erased = store.root.registry.load()[0]
    assert (erased.label, erased.status, erased.slug) == (0, "erased", "erased-0")
    assert [e.identity_slug for e in store.root.exclusions.load()] == ["alan-turing"]
    assert not Path(store.root.location.path("curation", "sheets", "ada-lovelace.html")).exists()
    review, info = store.root.review.read()  # the review view's table: her rows gone, the others' intact
    assert sorted(set(review.column("identity_slug").to_pylist())) == ["alan-turing", "grace-hopper"]
    assert review.num_rows == 2 * PHOTOS and info.version_id == "v2" and record.removed["review table"] == PHOTOS

    # the record: who, why, counts, ids and hashes; never her name, slug, URLs or bytes
    text = Path(store.root.erasures.path(record.erasure_id)).read_text()
    assert record.status == "done" and record.requested_by == "test" and record.reason == "takedown"
    for secret in (ADA, "ada-lovelace", store.url("ada-lovelace", 0), "images.example"):
        assert secret not in text
    [export] = record.found.exports  # the export made before the erasure: outside the store, named
    assert Path(export["destination"]).name == "export"
    assert (export["version_id"], export["format"]) == ("v2", "parquet")

    # never fetched, stored or searched again; re-added by hand, she is a new identity with a new label
    blocked = store.root.erasures.blocklist()
    assert blocked.url(store.url("ada-lovelace", 3)) and blocked.name("ada lovelace")
    assert store.root.registry.add([ADA])[0][0].label == 3


def test_single_photos_by_id_and_by_url(store: ErasureStore) -> None:
    alan = store.image_id("alan-turing", 1)
    grace = store.image_id("grace-hopper", 2)
    before = row_digests(store.root)

    record = erase(store.root, photos_target([alan, store.url("grace-hopper", 2)]), requested_by="ops",
                   reason="takedown")

    assert set(record.found.image_ids) == {alan, grace}
    assert sum(verify(store.root, record).values()) == 0
    after = row_digests(store.root)
    for kind in before:
        assert after[kind] == {row for row in before[kind] if alan not in row and grace not in row
                               and not any(h in part for part in row for h in ("grace-hopper/2", "alan-turing/1"))}
    _consistent(store.root)
    v2 = store.root.datasets.get("v2")
    assert {e.slug: e.total for e in v2.identities} == {"ada-lovelace": 10, "alan-turing": 8, "grace-hopper": 8}
    files = Path(store.root.models.files_dir("m-1"))
    with np.load(files / "calibration" / "gallery-dlib.npz") as npz:  # rows by photo id: exactly those two
        assert len(npz["labels"]) == 10 and not {alan, grace} & set(npz["ids"])
    with np.load(files / "calibration" / "gallery-model.npz") as npz:  # no ids kept: their identities' rows
        assert sorted(set(npz["labels"].tolist())) == [0]
    assert json.loads((files / "labels.json").read_text())["labels"].keys() == {"0", "1", "2"}
    assert [i.status for i in store.root.registry.load()] == ["active"] * 3


def test_a_killed_erasure_converges_when_run_again(store: ErasureStore, tmp_path: Path) -> None:
    clean = tmp_path / "clean"
    shutil.copytree(store.root.location.root, clean)
    done = subprocess.run([sys.executable, str(PROC), str(clean), "identity", ADA], capture_output=True, text=True,
                          timeout=120, cwd=PROC.parent)
    assert done.returncode == 0, done.stderr
    writes = int(done.stdout.split()[-1])
    assert writes > 10
    expected = row_digests(StorageRoot.from_uri(str(clean)))
    for kill in sorted({1, 2, writes // 3, writes // 2, writes - 2, writes - 1}):
        copy = tmp_path / f"kill-{kill}"
        shutil.copytree(store.root.location.root, copy)
        killed = subprocess.run([sys.executable, str(PROC), str(copy), "identity", ADA, "--kill-after", str(kill)],
                                capture_output=True, text=True, timeout=120, cwd=PROC.parent)
        assert killed.returncode == -9, (kill, killed.stderr)
        again = subprocess.run([sys.executable, str(PROC), str(copy), "identity", ADA], capture_output=True,
                               text=True, timeout=120, cwd=PROC.parent)
        assert again.returncode == 0, (kill, again.stderr)
        root = StorageRoot.from_uri(str(copy))
        assert row_digests(root) == expected, kill
        records = root.erasures.list()
        assert [r.status for r in records] == ["done"], kill
        assert sum(verify(root, records[0], [ADA]).values()) == 0, kill
        _consistent(root)


def test_verify_finds_a_planted_leftover(store: ErasureStore) -> None:
    record = _erase_person(store)
    ada = store.photos["ada-lovelace"][2]
    with store.root.raw.open("late-night") as writer:  # a scrape that ran beside the erasure stored one more
        from .erasure_store import _crop_row, _raw_row

        row = _raw_row("late-night", "Someone", "someone", 0, ada, "http://elsewhere.example/x.jpg")
        writer.write([row])
        writer.commit(["someone"], finished=True)
    chunk = store.root.crops.open("chunk-late", "params", [])
    with chunk:
        chunk.write([_crop_row(row)])
        chunk.commit()

    review, info = store.root.review.read()  # a curation that ran beside it listed her photo under someone
    late = {**review.slice(0, 1).to_pylist()[0], "identity_slug": "someone", "image_id": row["image_id"]}
    store.root.review.write(pa.concat_tables([review, pa.Table.from_pylist([late], review.schema)]),
                            threshold=info.threshold, version_id=info.version_id)

    hits = verify(store.root, record)

    assert hits["raw: image ids"] == 1 and hits["review: image ids"] == 1
    assert hits["crops: image ids"] == 1 and hits["crops: perceptual keys"] == 1 and hits["crops: embeddings"] == 1
    again = erase(store.root, photos_target([row["image_id"]]), requested_by="test", reason="leftover")
    assert sum(verify(store.root, record).values()) == 0 and again.removed["raw"] == 1
    assert again.removed["review table"] == 1


def test_a_person_only_waiting_in_a_version_leaves_its_notes(store: ErasureStore) -> None:
    """v1 holds no sample of Grace, only the note that she waits for photos: erasing her rewrites that too."""
    record = _erase_person(store, "Grace Hopper")
    assert "v1" in record.found.versions
    assert store.root.datasets.get("v1").notes["curation"]["waiting"] == {}
    assert sum(verify(store.root, record, ["Grace Hopper"]).values()) == 0


def test_bad_input_changes_nothing(store: ErasureStore) -> None:
    before = _files(Path(store.root.location.root))
    with pytest.raises(NotFoundError, match="unknown identity 'Nobody'"):
        identity_target(store.root, "Nobody")
    with pytest.raises(NotFoundError, match="no stored photo"):
        erase(store.root, photos_target(["0" * 64, "http://nowhere.example/a.jpg"]), requested_by="t", reason="r")
    with pytest.raises(FacescaleError, match="neither an image id"):
        photos_target(["not-an-id"])
    with store_lease(store.root.location, "curation"), pytest.raises(ConflictError, match="held by curation"):
        _erase_person(store)
    assert _files(Path(store.root.location.root)) == before
    record = _erase_person(store)
    with pytest.raises(NotFoundError, match="already erased"):
        identity_target(store.root, ADA)
    assert store.root.erasures.find(ADA) == [record] == store.root.erasures.find(store.image_id("ada-lovelace", 0))


def test_curation_waits_for_an_erasure(store: ErasureStore) -> None:
    with store_lease(store.root.location, "erasure"), pytest.raises(ConflictError, match="held by erasure"), \
            store_lease(store.root.location, "curation"):
        pass


def test_scraper_history_and_plan_honour_an_erasure(store: ErasureStore) -> None:
    from facescale.scraper.history import History

    record = _erase_person(store)
    history = History.load(store.root.raw, erased=store.root.erasures.blocklist())
    assert history.fetched(store.url("ada-lovelace", 4)) and history.erased_url(store.url("ada-lovelace", 4))
    assert history.erased_image(store.image_id("ada-lovelace", 4))
    assert not history.erased_url(store.url("alan-turing", 4))
    assert digest(store.url("ada-lovelace", 4)) in record.found.url_hashes


# -- an s3:// root ----------------------------------------------------------------------------------
@pytest.mark.s3
def test_erasure_on_s3(lfw_dev: Path, tmp_path: Path) -> None:
    with moto_bucket() as (bucket, options):
        location = Location.from_uri(f"{bucket}/store", options)
        store = build(lfw_dev, location, tmp_path)
        before = row_digests(store.root)
        record = _erase_person(store)
        assert sum(verify(store.root, record, [ADA]).values()) == 0
        after = row_digests(store.root)
        assert after["raw"] < before["raw"] and after["versions"] < before["versions"]
        assert all(not any(i in row for i in record.found.image_ids) for kind in after for row in after[kind])
        _consistent(store.root)
        assert not location.exists(location.path("_lease.json"))
        with store_lease(location, "curation"), pytest.raises(ConflictError, match="held by curation"):
            _erase_person(store, "Alan Turing")
        gallery = location.read_bytes(location.path("models", "m-1", "files", "calibration", "gallery-dlib.npz"))
        with np.load(io.BytesIO(gallery)) as npz:
            assert 0 not in npz["labels"]


def test_the_commands_erase_verify_and_refuse(store: ErasureStore, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI contract: each erase command reports what it removed and the exports to erase by hand; verify
    exits 0 when nothing is left and names what it finds otherwise; bad input is one error line."""
    monkeypatch.setenv("FACESCALE_STORAGE__ROOT", store.root.location.root)
    erased = cli("identities", "erase", ADA, "--reason", "takedown #7", "--by", "dpo")
    assert erased.code == 0, erased.err
    assert "raw 8" in erased.out and "models to retrain (marked): m-1" in erased.out
    assert "an export outside the store holds them" in erased.out
    photo = cli("photos", "erase", store.url("alan-turing", 3))
    assert photo.code == 0 and "1 photos" in photo.out
    assert "nothing left" in cli("erasures", "verify", ADA).out
    listed = cli("erasures", "list", "--json")
    first = json.loads(listed.out)[0]
    assert (first["requested_by"], first["reason"]) == ("dpo", "takedown #7")

    cli_root = StorageRoot.from_uri(store.root.location.root)
    with cli_root.raw.open("late") as writer:  # a leftover: verify must fail and say where
        from .erasure_store import _raw_row

        writer.write([_raw_row("late", "X", "x", 0, store.photos["ada-lovelace"][1], "http://x.example/1.jpg")])
        writer.commit(["x"], finished=True)
    leftover = cli("erasures", "verify", ADA)
    assert "raw: image ids: 1" in leftover.out and "leftovers" in leftover.single_error_line()

    assert "unknown identity 'Nobody'" in cli("identities", "erase", "Nobody").single_error_line()
    assert "already erased" in cli("identities", "erase", ADA).single_error_line()
    assert "no stored photo" in cli("photos", "erase", "f" * 64).single_error_line()
    assert "no erasure of 'Grace Hopper'" in cli("erasures", "verify", "Grace Hopper").single_error_line()
