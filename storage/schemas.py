"""Arrow schemas of the RAW and CURATED shard rows: the contracts between stages.

Field docs live in each field's metadata (``doc``) and in docs/ARCHITECTURE.md. A change
here is a contract change: add nullable fields at the end, never rename or retype.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

import pyarrow as pa

from facescale.errors import StorageError

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, Split, Split] = ("train", "val", "test")


def _f(name: str, type_: pa.DataType, nullable: bool, doc: str) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={"doc": doc})


RAW_SCHEMA = pa.schema(
    [
        _f("image_id", pa.string(), True, "sha256 hex of the image bytes; null when no body was stored"),
        _f("run_id", pa.string(), False, "the scrape/ingest run that produced the row"),
        _f("identity", pa.string(), False, "display name of the identity searched for"),
        _f("identity_slug", pa.string(), False, "the identity's registry slug"),
        _f("keyword", pa.string(), False, "the query sent to the engine"),
        _f("engine", pa.string(), False, "search engine adapter name (or 'local' for ingest)"),
        _f("source_url", pa.string(), False, "where the image bytes came from"),
        _f("page_url", pa.string(), True, "the result page the URL was found on"),
        _f("rank", pa.int32(), True, "0-based position of the result for the keyword"),
        _f("fetched_at", pa.timestamp("us", tz="UTC"), False, "when the fetch finished"),
        _f("http_status", pa.int16(), True, "final HTTP status; null when no response"),
        _f("content_type", pa.string(), True, "sniffed media type of the body"),
        _f("image", pa.binary(), True, "original encoded bytes; null when rejected"),
        _f("width", pa.int32(), True, "decoded width in pixels"),
        _f("height", pa.int32(), True, "decoded height in pixels"),
        _f("error", pa.string(), True, "null when accepted, else a reason code"),
    ],
    metadata={"facescale.schema": "raw/1"},
)

FACE_BOX = pa.struct(
    [
        pa.field("x", pa.int32(), nullable=False),
        pa.field("y", pa.int32(), nullable=False),
        pa.field("w", pa.int32(), nullable=False),
        pa.field("h", pa.int32(), nullable=False),
    ]
)

CURATED_SCHEMA = pa.schema(
    [
        _f("sample_id", pa.string(), False, "deterministic id: source_image_id + aug_index"),
        _f("source_image_id", pa.string(), False, "image_id of the RAW photo the crop came from"),
        _f("identity", pa.string(), False, "display name"),
        _f("identity_slug", pa.string(), False, "registry slug"),
        _f("label", pa.int32(), False, "stable registry label (never reused)"),
        _f("split", pa.string(), False, "train / val / test, assigned per source photo"),
        _f("aug_index", pa.int16(), False, "0 for the original crop, 1..N for augmented copies"),
        _f("face_box", FACE_BOX, False, "face box in the source image, pixels"),
        _f("image", pa.binary(), False, "encoded face crop (JPEG)"),
        _f("width", pa.int32(), False, "crop width in pixels"),
        _f("height", pa.int32(), False, "crop height in pixels"),
        _f("sharpness", pa.float32(), True, "variance of the Laplacian of the grey crop"),
        _f("brightness", pa.float32(), True, "mean grey level, 0-255"),
        _f("contrast", pa.float32(), True, "standard deviation of the grey level"),
    ],
    metadata={"facescale.schema": "curated/1"},
)

EMBEDDING_DIM = 128
HASH_BYTES = 24  # a 192-bit perceptual key (pipeline/dedup.py), big-endian
HASH_WINDOWS = 5  # window keys per image (pipeline/dedup.py)

CROP_SCHEMA = pa.schema(
    [
        _f("image_id", pa.string(), False, "image_id of the RAW photo"),
        _f("run_id", pa.string(), False, "the RAW run the photo came from"),
        _f("identity", pa.string(), False, "display name"),
        _f("identity_slug", pa.string(), False, "registry slug"),
        _f("error", pa.string(), True, "null when the crop is usable, else a reason code (cropping or hashing)"),
        _f("crop", pa.binary(), True, "encoded face crop (JPEG); null when rejected"),
        _f("face_box", FACE_BOX, True, "face box in the source image, pixels"),
        _f("sharpness", pa.float32(), True, "variance of the Laplacian of the grey crop"),
        _f("brightness", pa.float32(), True, "mean grey level, 0-255"),
        _f("contrast", pa.float32(), True, "standard deviation of the grey level"),
        _f("faces", pa.int32(), True, "distinct faces detected in the source image"),
        _f("phash", pa.binary(HASH_BYTES), True, "192-bit perceptual key of the crop"),
        _f("phash_windows", pa.binary(HASH_BYTES * HASH_WINDOWS), True, "the keys of its inner windows"),
        _f("embedding", pa.list_(pa.float32(), EMBEDDING_DIM), True, "128-d face embedding (dlib)"),
        _f(
            "face_key",
            pa.binary(HASH_BYTES),
            True,
            "192-bit perceptual key of the face aligned on dlib's five landmarks (128 px chip, padding 0.25)",
        ),
    ],
    metadata={"facescale.schema": "crops/2"},
)

SCHEMAS: dict[str, pa.Schema] = {"raw": RAW_SCHEMA, "curated": CURATED_SCHEMA, "crops": CROP_SCHEMA}


def to_table(rows: Iterable[Mapping[str, Any]] | pa.Table, schema: pa.Schema) -> pa.Table:
    """Build a table with exactly ``schema`` from rows (dicts) or a table, or raise.

    Extra keys are an error (a typo would otherwise drop data silently), as are nulls in
    non-nullable fields and values of the wrong type.
    """
    if isinstance(rows, pa.Table):
        table = rows
        extra = set(table.column_names) - set(schema.names)
        if extra:
            raise StorageError(f"unknown columns for {_name(schema)} shard: {sorted(extra)}")
        missing = [n for n in schema.names if n not in table.column_names]
        for name in missing:
            table = table.append_column(schema.field(name), pa.nulls(len(table), schema.field(name).type))
        try:
            table = table.select(schema.names).cast(schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise StorageError(f"rows do not fit the {_name(schema)} schema: {exc}") from exc
    else:
        rows = list(rows)
        for row in rows:
            extra = set(row) - set(schema.names)
            if extra:
                raise StorageError(f"unknown columns for {_name(schema)} shard: {sorted(extra)}")
        try:
            table = pa.Table.from_pylist(rows, schema=schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
            raise StorageError(f"rows do not fit the {_name(schema)} schema: {exc}") from exc
    for field in schema:
        _check_required(table.column(field.name), field, field.name, schema)
    return table


def _check_required(
    column: pa.ChunkedArray | pa.Array, field: pa.Field, where: str, schema: pa.Schema
) -> None:
    """Raise if a required field, or a required member of a struct field, holds a null."""
    if not field.nullable and column.null_count:
        raise StorageError(f"{_name(schema)} rows have nulls in required field {where!r}")
    if pa.types.is_struct(field.type):
        chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
        # Members of a null struct are not values: only those of present structs count.
        present = [c.filter(c.is_valid()).flatten() for c in chunks]
        for i, child in enumerate(field.type):
            members = pa.chunked_array([p[i] for p in present], child.type)
            _check_required(members, child, f"{where}.{child.name}", schema)


def _name(schema: pa.Schema) -> str:
    meta = schema.metadata or {}
    return meta.get(b"facescale.schema", b"?").decode().split("/")[0]
