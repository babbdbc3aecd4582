"""The curation stage end to end on a real two-node Ray cluster (ray.cluster_utils.Cluster) over lfw-dev photos."""

from __future__ import annotations

import hashlib
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import psutil
import pytest

from facescale.config import CurationSettings
from facescale.pipeline.curate import curate
from facescale.pipeline.split import split_counts
from facescale.scraper.ingest import ingest
from facescale.storage import (
    DatasetStore,
    ExclusionList,
    IdentityRegistry,
    Location,
    RawStore,
    ShardSizing,
    StorageRoot,
    read_table,
)
from facescale.storage.manifest import utcnow

pytestmark = [pytest.mark.ray, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

PEOPLE = ["Jacques_Chirac", "Vladimir_Putin", "Gloria_Macapagal_Arroyo"]
LATER = "Luiz_Inacio_Lula_da_Silva"
INTRUDER = "Tony_Blair"  # photos filed under the wrong name: label noise to clean away
PER_PERSON = 18
SETTINGS = CurationSettings(min_per_identity=8, per_identity=12, augment_factor=3, chunk_rows=24)


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[object]:
    """A real multi-node Ray cluster on this machine: a head and a worker node, one CPU each."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.symlink_to(src)


@pytest.fixture(scope="module")
def photos(lfw_dev: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Identity folders with realistic trouble: a wrong person, a photo under two names, a re-encoded copy."""
    root = tmp_path_factory.mktemp("photos")
    for person in PEOPLE:
        for src in sorted((lfw_dev / person).glob("*.jpg"))[:PER_PERSON]:
            _link(src, root / "night1" / person / src.name)
    intruders = sorted((lfw_dev / INTRUDER).glob("*.jpg"))[:2]
    assert len(intruders) == 2
    for src in intruders:
        _link(src, root / "night1" / PEOPLE[0] / f"x_{src.name}")
    shared = sorted((lfw_dev / PEOPLE[1]).glob("*.jpg"))[0]  # Putin's first photo also filed under Arroyo
    _link(shared, root / "night1" / PEOPLE[2] / "shared.jpg")
    first = sorted((lfw_dev / PEOPLE[0]).glob("*.jpg"))[0]
    image = cv2.imread(str(first))
    small = cv2.resize(image, (200, 200), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(root / "night1" / PEOPLE[0] / "copy.jpg"), small, [cv2.IMWRITE_JPEG_QUALITY, 70])
    for src in sorted((lfw_dev / LATER).glob("*.jpg"))[:PER_PERSON]:
        _link(src, root / "night2" / LATER / src.name)
    return root


def _ingest(root: Path, folder: Path, run_id: str) -> None:
    location = Location.from_uri(str(root))
    ingest(folder, RawStore(location), IdentityRegistry(location), run_id)


def _corrupt_run(root: Path) -> None:
    """A RAW row that claims to be an accepted image but is not one (a bug or bit rot upstream)."""
    location = Location.from_uri(str(root))
    with RawStore(location).open("corrupt") as writer:
        writer.write(
            [
                {
                    "image_id": hashlib.sha256(b"not a jpeg").hexdigest(),
                    "run_id": "corrupt",
                    "identity": PEOPLE[1].replace("_", " "),
                    "identity_slug": IdentityRegistry(location).get(PEOPLE[1].replace("_", " ")).slug,
                    "keyword": PEOPLE[1],
                    "engine": "local",
                    "source_url": "file:///corrupt.jpg",
                    "fetched_at": utcnow(),
                    "image": b"\xff\xd8\xff\xe0 not a jpeg",
                }
            ]
        )
        writer.commit(finished=True)


def _content(store: DatasetStore, version_id: str) -> dict[str, str]:
    table = read_table(store.location, store.shard_paths(store.get(version_id)), ["sample_id", "image"])
    ids = table.column("sample_id").to_pylist()
    assert len(ids) == len(set(ids)), "duplicate samples"
    return {i: hashlib.sha256(b).hexdigest() for i, b in zip(ids, table.column("image").to_pylist(), strict=True)}


@pytest.fixture(scope="module")
def first_night(ray_cluster: object, photos: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    root = tmp_path_factory.mktemp("store")
    _ingest(root, photos / "night1", "night1")
    _corrupt_run(root)
    summary = curate(StorageRoot(Location.from_uri(str(root))), SETTINGS)
    return root, summary


def test_first_night_builds_a_validated_balanced_version(first_night: tuple[Path, object]) -> None:
    root, summary = first_night
    store = DatasetStore(Location.from_uri(str(root)))
    assert summary.created and summary.published, summary
    manifest = store.get(summary.version_id)
    assert manifest.published and manifest.validation is not None and manifest.validation.success
    assert (Path(store.version_dir(manifest.version_id)) / manifest.validation.data_docs).is_file()

    labels = IdentityRegistry(store.root).labels()
    counts = split_counts(SETTINGS.per_identity, (0.7, 0.2, 0.1))
    assert {e.slug for e in manifest.identities} == {p.lower().replace("_", "-") for p in PEOPLE}
    for entry in manifest.identities:
        assert entry.label == labels[entry.slug]
        assert entry.sources == SETTINGS.per_identity
        assert entry.counts == {
            "train": counts.train * SETTINGS.augment_factor,
            "val": counts.val,
            "test": counts.test,
        }

    table = read_table(store.location, store.shard_paths(manifest))
    assert table.num_rows == manifest.rows
    splits_of: dict[str, set[str]] = {}
    for source, split in zip(
        table.column("source_image_id").to_pylist(), table.column("split").to_pylist(), strict=True
    ):
        splits_of.setdefault(source, set()).add(split)
    assert all(len(s) == 1 for s in splits_of.values()), "a source photo is in two splits"
    first = table.slice(0, 1).to_pylist()[0]
    crop = cv2.imdecode(np.frombuffer(first["image"], np.uint8), cv2.IMREAD_COLOR)
    assert crop.shape == (SETTINGS.crop_size, SETTINGS.crop_size, 3)


def _intruder_ids(lfw_dev: Path) -> set[str]:
    return {hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((lfw_dev / INTRUDER).glob("*.jpg"))[:2]}


def test_trouble_is_rejected_with_reasons(first_night: tuple[Path, object], lfw_dev: Path) -> None:
    root, summary = first_night
    manifest = DatasetStore(Location.from_uri(str(root))).get(summary.version_id)
    rejected = manifest.notes["curation"]["rejected"]
    assert rejected.get("undecodable") == 1  # the corrupt RAW row: a reason, not a crash
    assert rejected.get("cross_identity_duplicate") == 2  # one photo under two names: out of both
    assert rejected.get("duplicate", 0) + rejected.get("near_duplicate", 0) >= 1  # the re-encoded copy
    assert rejected.get("wrong_person", 0) >= 2  # the intruder's photos
    excluded = ExclusionList(Location.from_uri(str(root))).excluded("jacques-chirac")
    assert _intruder_ids(lfw_dev) <= excluded  # later versions leave them out too
    sheets = root / "curation" / "sheets"
    assert (sheets / "index.html").is_file()
    page = (sheets / "jacques-chirac.html").read_text()
    assert "wrong_person" in page
    # the review table: every photo an identity held, with its status, distance and crop chunk
    root_ = StorageRoot(Location.from_uri(str(root)))
    review, info = root_.review.read()
    assert info.version_id == summary.version_id and info.threshold == SETTINGS.cleaning_threshold
    rows = {(r["identity_slug"], r["image_id"]): r for r in review.to_pylist()}
    assert {rows[("jacques-chirac", i)]["status"] for i in _intruder_ids(lfw_dev)} == {"wrong_person"}
    assert all(rows[("jacques-chirac", i)]["distance"] > SETTINGS.cleaning_threshold for i in _intruder_ids(lfw_dev))
    kept = [r for r in rows.values() if r["status"] == "kept"]
    assert len(kept) == SETTINGS.per_identity * len(PEOPLE)  # as many as the version's sources
    intruder = rows[("jacques-chirac", min(_intruder_ids(lfw_dev)))]
    crops = root_.crops.crops_of(intruder["chunk"], "jacques-chirac")  # its crop, read by the chunk named
    assert cv2.imdecode(np.frombuffer(crops[intruder["image_id"]], np.uint8), cv2.IMREAD_COLOR) is not None


def test_rerun_without_new_data_makes_no_version(first_night: tuple[Path, object]) -> None:
    root, summary = first_night
    again = curate(StorageRoot(Location.from_uri(str(root))), SETTINGS)
    assert not again.created and again.version_id == summary.version_id and again.published
    assert again.prepared_rows == 0


def test_second_night_adds_an_identity_and_reuses_the_others(
    first_night: tuple[Path, object], photos: Path, tmp_path: Path
) -> None:
    root, summary = first_night
    copy = tmp_path / "store"
    shutil.copytree(root, copy, symlinks=True)
    _ingest(copy, photos / "night2", "night2")
    second = curate(StorageRoot(Location.from_uri(str(copy))), SETTINGS)
    assert second.created and second.published and second.identities_changed == 1
    store = DatasetStore(Location.from_uri(str(copy)))
    manifest = store.get(second.version_id)
    assert manifest.parent == summary.version_id
    assert len(manifest.identities) == len(PEOPLE) + 1
    notes = manifest.notes["curation"]["identities"]
    assert [s for s, n in notes.items() if not n["reused"]] == ["luiz-inacio-lula-da-silva"]
    old, new = _content(store, summary.version_id), _content(store, second.version_id)
    assert {k: v for k, v in new.items() if k in old} == old  # the first night's samples, unchanged


def test_the_layout_is_a_function_of_the_input_and_unchanged_shards_are_kept(
    first_night: tuple[Path, object], photos: Path, tmp_path: Path
) -> None:
    """Curated twice from the same RAW and crop cache on the two-node cluster, the shards are byte-identical
    (so a model trained on either sees the same input order); the next night's version keeps, as files,
    every shard of its parent that holds only unchanged identities."""
    root, _ = first_night
    sizing = ShardSizing(rows_per_row_group=8, max_rows_per_shard=24)  # many shards, identities mixed
    layouts, versions = [], []
    for name in ("a", "b"):
        copy = tmp_path / name
        shutil.copytree(root, copy, symlinks=True)
        shutil.rmtree(copy / "datasets")
        summary = curate(StorageRoot(Location.from_uri(str(copy)), sizing), SETTINGS, validate=False)
        manifest = DatasetStore(Location.from_uri(str(copy))).get(summary.version_id)
        layouts.append([(s.path, s.rows, s.sha256) for s in manifest.shards])
        versions.append(summary.version_id)
    assert len(layouts[0]) > 3
    assert layouts[0] == layouts[1]

    location = Location.from_uri(str(tmp_path / "a"))
    _ingest(tmp_path / "a", photos / "night2", "night2")
    second = curate(StorageRoot(location, sizing), SETTINGS, validate=False)
    store = DatasetStore(location)
    parent, child = store.get(versions[0]), store.get(second.version_id)
    assert child.parent == parent.version_id and second.identities_changed == 1
    assert {(s.path, s.sha256) for s in parent.shards} <= {(s.path, s.sha256) for s in child.shards}
    assert store.verify(child.version_id)


def test_the_order_a_nights_runs_were_committed_in_does_not_change_the_version(
    ray_cluster: object, photos: Path, tmp_path: Path
) -> None:
    """A night's mapped scrape batches finish in any order: two stores that got the same RAW runs
    committed in opposite orders build byte-identical shards."""
    parts = {"n-b00": PEOPLE[:1], "n-b01": PEOPLE[1:]}
    for run_id, people in parts.items():
        for person in people:
            shutil.copytree(photos / "night1" / person, tmp_path / run_id / person, symlinks=True)
    sizing = ShardSizing(rows_per_row_group=8, max_rows_per_shard=24)
    layouts = []
    for name, order in (("forward", ["n-b00", "n-b01"]), ("backward", ["n-b01", "n-b00"])):
        root = tmp_path / name
        # the night's plan registers its identities (and so their labels) before any batch runs
        IdentityRegistry(Location.from_uri(str(root))).add([p.replace("_", " ") for p in PEOPLE])
        for run_id in order:
            _ingest(root, tmp_path / run_id, run_id)
        summary = curate(StorageRoot(Location.from_uri(str(root)), sizing), SETTINGS, validate=False)
        manifest = DatasetStore(Location.from_uri(str(root))).get(summary.version_id)
        layouts.append([(s.path, s.rows, s.sha256) for s in manifest.shards])
    assert len(layouts[0]) > 3
    assert layouts[0] == layouts[1]


def test_killed_ray_worker_loses_and_duplicates_nothing(
    ray_cluster: object, first_night: tuple[Path, object], photos: Path, tmp_path: Path
) -> None:
    """A CropPreparer actor is SIGKILLed mid-run: Ray restarts it and the version equals an undisturbed one."""
    reference_root, reference = first_night
    root = tmp_path / "store"
    _ingest(root, photos / "night1", "night1")
    _corrupt_run(root)
    killed: list[int] = []

    def kill_a_worker() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            for proc in psutil.process_iter(["pid", "cmdline"]):
                if any("CropPreparer" in part for part in proc.info["cmdline"] or []):
                    time.sleep(3)  # let it get into its batches
                    try:
                        proc.kill()
                        killed.append(proc.pid)
                    except psutil.NoSuchProcess:
                        continue
                    return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_a_worker, daemon=True)
    killer.start()
    summary = curate(StorageRoot(Location.from_uri(str(root))), SETTINGS)
    killer.join(timeout=5)
    assert killed, "no CropPreparer worker was found to kill"
    assert summary.created and summary.published
    ours = _content(DatasetStore(Location.from_uri(str(root))), summary.version_id)
    theirs = _content(DatasetStore(Location.from_uri(str(reference_root))), reference.version_id)
    assert ours == theirs


def test_an_empty_store_gives_no_version(tmp_path: Path) -> None:
    summary = curate(StorageRoot(Location.from_uri(str(tmp_path))), SETTINGS)
    assert summary.version_id is None and not summary.created and summary.rows == 0
    assert "nothing to version" in summary.message
