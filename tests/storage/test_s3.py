"""The storage on a real S3 API (moto's server on localhost): versions, RAW runs, aborts."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from facescale.errors import ConflictError, NotFoundError
from facescale.storage import (
    RAW_SCHEMA,
    DatasetStore,
    Location,
    RawStore,
    ShardSizing,
    ShardWriter,
    ValidationSummary,
)

boto3 = pytest.importorskip("boto3")
pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

pytestmark = pytest.mark.s3

SIZING = ShardSizing(rows_per_row_group=2, max_rows_per_shard=3)


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(s3_endpoint: str):
    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def bucket(s3) -> str:
    name = f"facescale-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_location(s3_endpoint: str, bucket: str) -> Location:
    options = {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": s3_endpoint, "region_name": "us-east-1"},
    }
    return Location.from_uri(f"s3://{bucket}/store", options)


def _keys(s3, bucket: str) -> list[str]:
    listed = s3.list_objects_v2(Bucket=bucket)
    return sorted(obj["Key"] for obj in listed.get("Contents", []))


def _read(store: DatasetStore, version_id: str) -> list[dict]:
    return [row for batch in store.iter_batches(version_id) for row in batch.to_pylist()]


def test_version_round_trip_on_s3(s3, bucket, s3_location, make_curated_row, identities_for):
    store = DatasetStore(s3_location, SIZING)
    rows = [make_curated_row(i) for i in range(7)]
    with store.create("v1", config={"where": "s3"}) as writer:
        writer.write(rows)
        committed = writer.commit(identities_for(rows))

    assert [s.rows for s in committed.shards] == [3, 3, 1]
    assert store.version_ids() == ["v1"]
    assert [m.version_id for m in store.list()] == ["v1"]
    assert store.verify("v1") == committed
    assert _read(store, "v1") == rows
    assert _keys(s3, bucket) == [
        "store/datasets/v1/manifest.json",
        *(f"store/datasets/v1/shards/part-{i:05d}.parquet" for i in range(3)),
    ]
    with pytest.raises(ConflictError):
        store.create("v1")

    more = [make_curated_row(i) for i in range(10, 12)]
    with store.create("v2") as writer:
        writer.write(more)
        writer.commit(identities_for(more))
    store.publish("v2", ValidationSummary(success=True, suite="curated"))

    fresh = DatasetStore(Location.from_uri(s3_location.uri, s3_location.storage_options))
    assert fresh.version_ids() == ["v1", "v2"]
    assert fresh.get("v2").parent == "v1"
    assert fresh.latest().version_id == "v2"
    assert _read(fresh, "v2") == more
    fresh.verify("v2")


def test_aborted_shard_write_leaves_no_object(s3, bucket, s3_location, make_raw_row):
    writer = ShardWriter(s3_location, s3_location.path("d"), RAW_SCHEMA, SIZING)
    with pytest.raises(RuntimeError, match="boom"), writer:
        writer.write([make_raw_row(i) for i in range(2)])  # one row group in the open shard
        raise RuntimeError("boom")

    assert _keys(s3, bucket) == []
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_aborted_version_is_invisible_on_s3(s3, bucket, s3_location, make_curated_row, identities_for):
    store = DatasetStore(s3_location, SIZING)
    with pytest.raises(RuntimeError, match="boom"), store.create("v1") as writer:
        writer.write([make_curated_row(i) for i in range(5)])
        raise RuntimeError("boom")

    assert store.version_ids() == []
    with pytest.raises(NotFoundError):
        store.get("v1")
    assert not [k for k in _keys(s3, bucket) if k.endswith("manifest.json")]

    rows = [make_curated_row(i) for i in range(20, 24)]
    with store.create("v1") as writer:
        writer.write(rows)
        writer.commit(identities_for(rows))
    assert _read(store, "v1") == rows
    store.verify("v1")


def test_raw_run_on_s3(s3_location, make_raw_row):
    store = RawStore(s3_location, SIZING)
    rows = [make_raw_row(i, rejected=(i == 2)) for i in range(5)]
    writer = store.open("run-1")
    writer.write(rows)
    writer.commit(["kw"], finished=True)

    assert store.run_ids() == ["run-1"]
    assert store.verify("run-1").completed == ["kw"]
    assert [r for b in store.iter_batches() for r in b.to_pylist()] == rows
    with pytest.raises(ConflictError):
        store.open("run-1")


def test_an_export_to_s3_resumes_and_reads_back(s3, bucket, s3_endpoint, product_store) -> None:
    """A WebDataset export of a local version to an S3 destination, killed after two parts, then finished."""
    import io
    import tarfile

    from facescale.storage.export import export_version

    options = {"key": "testing", "secret": "testing",
               "client_kwargs": {"endpoint_url": s3_endpoint, "region_name": "us-east-1"}}
    dest = Location.from_uri(f"s3://{bucket}/exports/v2", options)

    class Killed(Exception):
        pass

    seen: list[str] = []

    def die_after_two(name: str, samples: int) -> None:
        seen.append(name)
        if len(seen) == 2:
            raise Killed

    with pytest.raises(Killed):
        export_version(product_store.store, "v2", dest, "webdataset", on_shard=die_after_two)
    assert not any(k.endswith("labels.json") for k in _keys(s3, bucket))
    summary = export_version(product_store.store, "v2", dest, "webdataset")
    assert summary.skipped == 2
    keys = _keys(s3, bucket)
    assert "exports/v2/README.md" in keys and "exports/v2/labels.json" in keys
    samples = 0
    for key in keys:
        if key.endswith(".tar"):
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            with tarfile.open(fileobj=io.BytesIO(body)) as tar:
                names = tar.getnames()
            assert len(names) % 3 == 0
            samples += len(names) // 3
    assert samples == product_store.store.get("v2").rows
