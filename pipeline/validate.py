"""The Great Expectations gate over a CURATED dataset version: validate, document, publish.

`validate_version` first checks the shards against the manifest's checksums, then streams them
once into a SQLite table on local disk (no image bytes: each image is hashed and fully decoded with
Pillow, then dropped), so memory stays flat whatever the version's size, and runs three GX suites
named ``facescale_curated.*``: the per-row one on that table (GX's SQL engine), the others on
small pandas frames. ``.schema``:
the shard columns are exactly `CURATED_SCHEMA`'s, in order. ``.rows``: no nulls in required
columns; unique ``sample_id``; ``split`` in train/val/test; ``aug_index`` >= 0, and 0 in val and
test (only train is augmented); labels within the manifest's, each ``identity_slug`` carrying its
manifest label; every source photo in one split only; every image decoding, to its stated
``width`` x ``height`` and to ``config["crop_size"]``; the manifest's row count; and among the
originals (``aug_index`` 0) at most ``max_duplicate_rate`` whose image bytes (sha256) repeat
another's (every row of a repeated group counts). ``.counts``: rows per (identity, split) equal
the manifest's counts exactly and, when the config names ``per_identity``, ``augment_factor`` and
``split``, every identity has ``split_counts(per_identity).train * augment_factor`` train rows
(padded identities are topped up to it). Each failed expectation becomes one readable line in
``manifest.validation.failures``; nothing about the data raises. The Data Docs site and the raw
results are written under ``<version>/validation/``, with ``decoded.parquet``: the size of every
image that fully decoded, by sha256. A version whose parent passed takes the sizes of the
images it shares with the parent (the same bytes) from the parent's file and decodes only the
others: a night adding a few identities decodes their samples, not the whole version again.
Every shard is still checked against its checksum and every image hashed.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import logging
import os
import posixpath
import sqlite3
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from facescale.errors import IntegrityError, NotFoundError
from facescale.storage import CURATED_SCHEMA, SPLITS, DatasetStore, ValidationSummary
from facescale.storage.manifest import Manifest

from .datadocs import make_offline
from .split import split_counts

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

SUITE_NAME = "facescale_curated"
VALIDATION_DIR = "validation"
DATA_DOCS_DIR = f"{VALIDATION_DIR}/data_docs"
RESULT_FILE = f"{VALIDATION_DIR}/result.json"
#: Every image of a validated version that fully decoded: sha256 (32 bytes) -> width, height.
#: A child version's validation takes the sizes of the images it shares with its parent from
#: here instead of decoding them again (the same bytes decode the same way), so a night that
#: adds a few identities decodes only their samples (`decoded_sizes`).
DECODED_FILE = f"{VALIDATION_DIR}/decoded.parquet"

REQUIRED_COLUMNS = (
    "sample_id",
    "source_image_id",
    "identity",
    "identity_slug",
    "label",
    "split",
    "aug_index",
    "image",
    "width",
    "height",
)
# The shard columns the rows frame keeps as they are (``image`` becomes its byte length).
_KEPT = ("sample_id", "source_image_id", "identity", "identity_slug", "label", "split", "aug_index", "width", "height")
_INTEGERS = ("label", "aug_index", "width", "height")
_COUNT_INDEX = ["identity_slug", "split"]
_INDEX = {"rows": ["sample_id", "source_image_id", "identity_slug"], "counts": _COUNT_INDEX}  # identify offending rows
_EXAMPLES = 3  # offending values quoted per failure line
_PARTIAL = 10  # offending values kept per expectation in the GX result (and the Data Docs)
_MAX_PIXELS = 4096 * 4096  # larger images are not decoded (crops are at most 1024 px a side)


@dataclass(frozen=True)
class _Check:
    """One expectation of the suite and how its failure reads."""

    asset: str  # the frame it runs on: "schema", "rows" or "counts"
    expectation: Any  # a great_expectations Expectation
    statement: str  # what must hold; the Data Docs description and the failure line's start
    show: tuple[str, ...] = ("sample_id",)  # index columns quoted for offending rows
    percent: bool = False  # quote the offending share as a percentage
    unit: str = "rows"  # what the frame's rows are


def validate_version(
    store: DatasetStore,
    version_id: str,
    *,
    publish: bool = True,
    max_duplicate_rate: float = 0.0,
    batch_size: int = 256,
    reuse_parent: bool = True,
) -> ValidationSummary:
    """Run the suite over one committed version and record the outcome.

    Args:
        store: the dataset store holding the version.
        version_id: a committed version.
        publish: record the outcome with `DatasetStore.publish` (a success publishes the version;
            a failure leaves it unpublished with the reasons in ``manifest.validation.failures``).
        max_duplicate_rate: the largest allowed share of original rows (``aug_index`` 0) whose
            image bytes repeat another original's.
        batch_size: rows per batch read from the shards.
        reuse_parent: take the sizes of the images the version shares with its (published)
            parent from the parent's validation instead of decoding them (`decoded_sizes`).

    Returns:
        The summary; its ``data_docs`` is the Data Docs index relative to the version directory.

    Raises:
        NotFoundError: the version does not exist.
        ValueError: ``max_duplicate_rate`` is not within [0, 1].
    """
    if not 0.0 <= max_duplicate_rate <= 1.0:
        raise ValueError(f"max_duplicate_rate must be within [0, 1], got {max_duplicate_rate}")
    manifest = store.get(version_id)
    problems: list[str] = []
    try:
        store.verify(version_id)
    except IntegrityError as exc:
        problems.append(f"shards: {exc}")

    with _quiet(), tempfile.TemporaryDirectory(prefix="facescale-gx-") as tmp:
        # Damaged shards: validate no rows rather than half-read ones.
        batches = iter(()) if problems else store.iter_batches(version_id, batch_size=batch_size)
        database = Path(tmp) / "rows.sqlite"
        known = decoded_sizes(store, manifest.parent) if manifest.parent and reuse_parent else {}
        stats = _load_rows(batches, manifest, database, known)
        _write_decoded(store, version_id, database)
        counts, target = _counts(stats, manifest, problems)
        crop_size = _config_int(manifest.config, "crop_size", problems)
        checks = _suite(manifest, target=target, crop_size=crop_size, max_duplicate_rate=max_duplicate_rate)
        frames = {"schema": _schema_frame(stats.columns), "rows": database, "counts": counts}
        docs = Path(tmp) / "docs"
        results, raw_results = _run_gx(checks, frames, docs)
        make_offline(store.root, docs, store.version_dir(version_id))
        _upload_docs(store, version_id, docs)
        pages = {
            f"{SUITE_NAME}.{page.parent.parent.parent.name}": f"{DATA_DOCS_DIR}/{page.relative_to(docs).as_posix()}"
            for page in sorted((docs / "validations" / SUITE_NAME).glob("*/*/*/*.html"))
        }
        statistics = _statistics(results, stats, database, max_duplicate_rate)

    failures = problems + [line for check, result in results if (line := _failure(check, result))]
    summary = ValidationSummary(
        success=not failures,
        suite=SUITE_NAME,
        statistics=statistics,
        failures=failures,
        data_docs=f"{DATA_DOCS_DIR}/index.html",
        suite_pages=pages,
    )
    raw = {
        "suite": SUITE_NAME,
        "version_id": version_id,
        "success": summary.success,
        "failures": failures,
        "statistics": statistics,
        "results": raw_results,
    }
    base = store.version_dir(version_id)
    store.location.write_bytes_atomic(
        posixpath.join(base, RESULT_FILE), json.dumps(raw, indent=1, default=str).encode() + b"\n"
    )
    if publish:
        store.publish(version_id, summary)  # a published version gets its dataset card (storage.card)
        if summary.success:
            from .growth import write_growth

            write_growth(store)
    log.info(
        "validated %s: %s (%d of %d expectations met)",
        version_id,
        "passed" if summary.success else f"{len(failures)} failure(s)",
        statistics["successful_expectations"],
        statistics["evaluated_expectations"],
    )
    return summary


# -- reading -----------------------------------------------------------------------------------
@dataclass
class _RowStats:
    """What one pass over the shards keeps besides the SQLite table: small aggregates only."""

    columns: list[str]
    rows: int = 0
    per_group: Counter[tuple[str, str]] = field(default_factory=Counter)  # (identity_slug, split) -> rows
    undecodable: int = 0


#: The rows table: the shard columns GX checks (``image`` as its byte length) and derived ones.
_ROW_COLUMNS = (
    *(f"{name} {'INTEGER' if name in _INTEGERS else 'TEXT'}" for name in _KEPT),
    "image INTEGER",
    "image_sha256 TEXT",
    "decoded_width INTEGER",
    "decoded_height INTEGER",
    "manifest_label INTEGER",
    "image_decodes INTEGER",
)


def decoded_sizes(store: DatasetStore, version_id: str) -> dict[str, tuple[int, int]]:
    """The images version ``version_id``'s passed validation decoded fully: sha256 hex -> (width, height).

    Empty when that version is gone, was not published (its facts are not trusted) or was
    validated before these facts were kept.
    """
    from pyarrow import parquet as pq

    try:
        manifest = store.get(version_id)
    except NotFoundError:
        return {}
    path = posixpath.join(store.version_dir(version_id), DECODED_FILE)
    if not manifest.published or not store.location.exists(path):
        return {}
    with store.location.fs.open(path, "rb") as fh:
        table = pq.read_table(fh)
    return {
        digest.hex(): (w, h)
        for digest, w, h in zip(table.column("sha256").to_pylist(), table.column("width").to_pylist(),
                                table.column("height").to_pylist(), strict=True)
    }


def _write_decoded(store: DatasetStore, version_id: str, database: Path) -> None:
    from pyarrow import parquet as pq

    with contextlib.closing(sqlite3.connect(database)) as db:
        found = db.execute(
            "SELECT DISTINCT image_sha256, decoded_width, decoded_height FROM rows "
            "WHERE image_decodes = 1 AND image_sha256 IS NOT NULL ORDER BY image_sha256"
        ).fetchall()
    table = pa.table({
        "sha256": pa.array([bytes.fromhex(d) for d, _, _ in found], pa.binary(32)),
        "width": pa.array([w for _, w, _ in found], pa.int32()),
        "height": pa.array([h for _, _, h in found], pa.int32()),
    })
    path = posixpath.join(store.version_dir(version_id), DECODED_FILE)
    with store.location.open_atomic(path) as fh:
        pq.write_table(table, fh, compression="zstd")


def _load_rows(
    batches: Iterator[pa.RecordBatch],
    manifest: Manifest,
    database: Path,
    known: Mapping[str, tuple[int, int]] | None = None,
) -> _RowStats:
    """Stream the shards once into a SQLite table (no image bytes) that GX then queries.

    Memory stays flat whatever the version's size: each batch's images are hashed and decoded,
    its rows go to disk, and only per-(identity, split) counts stay in memory. Derived columns:
    ``manifest_label`` (the manifest's label for the row's slug, -1 if none), ``image_decodes``
    (1/0) and, once every row is in, ``source_splits`` (how many splits hold the row's source
    photo). Images whose sha256 is in ``known`` (the parent version's `decoded_sizes`) are
    hashed but not decoded again.
    """
    labels = {entry.slug: entry.label for entry in manifest.identities}
    stats = _RowStats(columns=list(CURATED_SCHEMA.names))
    seen_columns: list[str] | None = None
    workers = max(1, min(8, os.cpu_count() or 1))
    with contextlib.closing(sqlite3.connect(database)) as db, ThreadPoolExecutor(workers) as pool:
        db.execute(f"CREATE TABLE rows ({', '.join(_ROW_COLUMNS)})")
        insert = f"INSERT INTO rows VALUES ({', '.join('?' * len(_ROW_COLUMNS))})"
        for batch in batches:
            names = batch.schema.names
            if seen_columns is None or (seen_columns == CURATED_SCHEMA.names and names != seen_columns):
                seen_columns = names
            part = _frame_part(batch, pool, known or {})
            values = {name: part.column(name).to_pylist() for name in part.column_names}
            values["manifest_label"] = [labels.get(slug, -1) for slug in values["identity_slug"]]
            values["image_decodes"] = [int(w >= 0) for w in values["decoded_width"]]
            db.executemany(insert, zip(*(values[c.split()[0]] for c in _ROW_COLUMNS), strict=True))
            stats.rows += batch.num_rows
            stats.per_group.update(
                (slug, split)
                for slug, split in zip(values["identity_slug"], values["split"], strict=True)
                if slug is not None and split is not None
            )
            stats.undecodable += values["image_decodes"].count(0)
        db.executescript(
            """
            CREATE TABLE source_splits (source_image_id TEXT PRIMARY KEY, n INTEGER);
            INSERT INTO source_splits
                SELECT source_image_id, COUNT(DISTINCT split) FROM rows
                WHERE source_image_id IS NOT NULL GROUP BY source_image_id;
            ALTER TABLE rows ADD COLUMN source_splits INTEGER;
            UPDATE rows SET source_splits = COALESCE(
                (SELECT n FROM source_splits s WHERE s.source_image_id = rows.source_image_id), 1);
            DROP TABLE source_splits;
            """
        )
        db.commit()
    if seen_columns is not None:
        stats.columns = list(seen_columns)
    return stats


def _frame_part(
    batch: pa.RecordBatch, pool: ThreadPoolExecutor | None, known: Mapping[str, tuple[int, int]]
) -> pa.Table:
    arrays = {name: _column(batch, name) for name in _KEPT}
    image = _column(batch, "image")
    images = image.to_pylist()
    inspect = functools.partial(_inspect_image, known=known)
    inspected = list(pool.map(inspect, images, chunksize=32) if pool else map(inspect, images))
    arrays["image"] = pc.binary_length(image)  # non-null exactly where the bytes are
    arrays["image_sha256"] = pa.array([digest for digest, _, _ in inspected], pa.string())
    arrays["decoded_width"] = pa.array([w for _, w, _ in inspected], pa.int32())
    arrays["decoded_height"] = pa.array([h for _, _, h in inspected], pa.int32())
    return pa.table(arrays)


def _column(batch: pa.RecordBatch, name: str) -> pa.Array:
    """Column ``name`` with its CURATED type; nulls when it is missing or of another type.

    Either case already fails the schema expectation, and the nulls fail the not-null one.
    """
    type_ = CURATED_SCHEMA.field(name).type
    if name not in batch.schema.names:
        return pa.nulls(batch.num_rows, type_)
    column = batch.column(name)
    try:
        return column.cast(type_)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return pa.nulls(batch.num_rows, type_)


def _inspect_image(
    data: bytes | None, known: Mapping[str, tuple[int, int]] | None = None
) -> tuple[str | None, int, int]:
    """sha256 hex of the bytes, and the size they fully decode to (-1, -1 when they do not; ``known`` first)."""
    if data is None:
        return None, -1, -1
    from PIL import Image

    digest = hashlib.sha256(data).hexdigest()
    if known and digest in known:
        width, height = known[digest]
        return digest, width, height
    try:
        with Image.open(io.BytesIO(data)) as img:  # reads the header only
            if img.width * img.height > _MAX_PIXELS:  # no crop is this big: do not spend the memory
                return digest, -1, -1
            img.load()  # a full decode: truncated or corrupt data raises here
            return digest, img.width, img.height
    except Exception:  # any decoder failure (OSError, SyntaxError, bomb, ...) means undecodable
        return digest, -1, -1


# -- the counts table ----------------------------------------------------------------------------
def _counts(stats: _RowStats, manifest: Manifest, problems: list[str]) -> tuple[pd.DataFrame, int | None]:
    """Observed vs manifest rows per (identity, split), and the train target where configured."""
    import pandas as pd

    found = {(str(slug), str(split)): n for (slug, split), n in stats.per_group.items() if n}
    expected: dict[tuple[str, str], int] = {
        (e.slug, s): e.counts.get(s, 0) for e in manifest.identities for s in SPLITS
    }
    keys = sorted(set(expected) | set(found))
    target = _train_target(manifest.config, problems)
    return (
        pd.DataFrame(
            {
                "identity_slug": pd.Series([k[0] for k in keys], dtype="str"),
                "split": pd.Series([k[1] for k in keys], dtype="str"),
                "observed": pd.Series([found.get(k, 0) for k in keys], dtype="int64"),
                "expected": pd.Series([expected.get(k, 0) for k in keys], dtype="int64"),
            }
        ),
        target,
    )


def _train_target(config: Mapping[str, Any], problems: list[str]) -> int | None:
    """``split_counts(per_identity, fractions).train * augment_factor``, when the config says."""
    if not {"per_identity", "augment_factor", "split"} <= set(config):
        return None
    per_identity = _config_int(config, "per_identity", problems)
    factor = _config_int(config, "augment_factor", problems)
    fractions = config["split"]
    try:
        values = tuple(float(fractions[s]) for s in SPLITS)
        train = split_counts(per_identity, values).train if per_identity is not None else None
    except (TypeError, KeyError, ValueError) as exc:
        problems.append(f"config: split must map train/val/test to fractions adding up to 1 ({exc})")
        return None
    return None if train is None or factor is None else train * factor


def _config_int(config: Mapping[str, Any], key: str, problems: list[str]) -> int | None:
    if key not in config:
        return None
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        problems.append(f"config: {key} must be a non-negative integer, got {value!r}")
        return None
    return value


def _schema_frame(columns: Sequence[str]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame({name: pd.Series([], dtype="object") for name in dict.fromkeys(columns)})


# -- the suite ----------------------------------------------------------------------------------
def _suite(manifest: Manifest, *, target: int | None, crop_size: int | None, max_duplicate_rate: float) -> list[_Check]:
    """The expectations, each with the statement its Data Docs entry and failure line show."""
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    max_label = max((e.label for e in manifest.identities), default=0)
    slugs = sorted(e.slug for e in manifest.identities)
    source = ("source_image_id", "sample_id")
    checks = [
        _Check(
            "schema",
            gxe.ExpectTableColumnsToMatchOrderedList(column_list=list(CURATED_SCHEMA.names)),
            "shard columns must be exactly CURATED_SCHEMA's, in order",
        ),
        _Check("rows", gxe.ExpectTableRowCountToBeBetween(min_value=1), "the version must have rows"),
        _Check(
            "rows",
            gxe.ExpectTableRowCountToEqual(value=manifest.rows),
            f"the row count must equal the manifest's {manifest.rows} shard rows",
        ),
        *(
            _Check("rows", gxe.ExpectColumnValuesToNotBeNull(column=name), f"{name} must not be null")
            for name in REQUIRED_COLUMNS
        ),
        _Check("rows", gxe.ExpectColumnValuesToBeUnique(column="sample_id"), "sample_id must be unique"),
        _Check(
            "rows",
            gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
            "split must be train, val or test",
        ),
        _Check("rows", gxe.ExpectColumnValuesToBeBetween(column="aug_index", min_value=0), "aug_index must be >= 0"),
        _Check(
            "rows",
            gxe.ExpectColumnValuesToBeInSet(
                column="aug_index", value_set=[0], row_condition=Column("split").is_in(["val", "test"])
            ),
            "aug_index must be 0 in val and test (only train is augmented)",
        ),
        _Check(
            "rows",
            gxe.ExpectColumnValuesToBeBetween(column="label", min_value=0, max_value=max_label),
            f"label must be within the manifest's labels 0..{max_label}",
        ),
        _Check(
            "rows",
            gxe.ExpectColumnValuesToBeInSet(column="identity_slug", value_set=slugs),
            "identity_slug must be one of the manifest's identities",
        ),
        _Check(
            "rows",
            gxe.ExpectColumnPairValuesToBeEqual(column_A="label", column_B="manifest_label"),
            "label must be the manifest's label for the row's identity_slug (manifest_label)",
            show=("sample_id", "identity_slug"),
        ),
        _Check(
            "rows",
            gxe.ExpectColumnValuesToBeInSet(column="source_splits", value_set=[1]),
            "source_image_id must be in one split only (source_splits: splits holding the row's source photo)",
            show=source,
        ),
        _Check(
            "rows",
            gxe.ExpectColumnValuesToBeInSet(column="image_decodes", value_set=[1]),
            "image must decode (image_decodes = 1)",
        ),
        _Check(
            "rows",
            gxe.ExpectColumnPairValuesToBeEqual(column_A="decoded_width", column_B="width"),
            "image must decode to its stated width (decoded_width == width)",
        ),
        _Check(
            "rows",
            gxe.ExpectColumnPairValuesToBeEqual(column_A="decoded_height", column_B="height"),
            "image must decode to its stated height (decoded_height == height)",
        ),
    ]
    if crop_size is not None:
        checks += [
            _Check(
                "rows",
                gxe.ExpectColumnValuesToBeInSet(column=name, value_set=[crop_size]),
                f"{name} must be the configured crop_size {crop_size}",
            )
            for name in ("width", "height")
        ]
    checks.append(
        _Check(
            "rows",
            gxe.ExpectColumnValuesToBeUnique(
                column="image_sha256", row_condition=Column("aug_index") == 0, mostly=1.0 - max_duplicate_rate
            ),
            f"image_sha256 must repeat in at most {max_duplicate_rate:.2%} of the originals (aug_index 0)",
            show=source,
            percent=True,
        )
    )
    checks.append(
        _Check(
            "counts",
            gxe.ExpectColumnPairValuesToBeEqual(column_A="observed", column_B="expected"),
            "rows per (identity_slug, split) must equal the manifest's identity counts",
            show=tuple(_COUNT_INDEX),
            unit="groups",
        )
    )
    if target is not None:
        checks.append(
            _Check(
                "counts",
                gxe.ExpectColumnValuesToBeInSet(
                    column="observed", value_set=[target], row_condition=Column("split") == "train"
                ),
                f"train rows per identity must be {target} (train photos of per_identity x augment_factor)",
                show=("identity_slug",),
                unit="identities",
            )
        )
    for check in checks:
        check.expectation.description = check.statement
    return checks


def _run_gx(
    checks: list[_Check], frames: Mapping[str, pd.DataFrame | Path], docs: Path
) -> tuple[list[tuple[_Check, Any]], dict[str, Any]]:
    """Run each asset's suite and build the Data Docs site in ``docs``.

    An asset given as a path is the ``rows`` table of that SQLite file (GX turns its
    expectations into SQL, so the rows never sit in memory); the others are pandas frames.

    Returns:
        (check, its expectation result) in suite order, and the raw results per suite name.
    """
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),  # no temporary docs site of its own
        data_docs_sites={
            "facescale": {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs)},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        },
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    context = gx.get_context(mode="ephemeral", project_config=config)
    pandas_source = context.data_sources.add_pandas("facescale")
    by_key: dict[str, _Check] = {}
    outcomes: dict[str, Any] = {}
    raw: dict[str, Any] = {}
    for asset, frame in frames.items():
        own = [c for c in checks if c.asset == asset]
        for i, check in enumerate(own):
            key = f"{asset}-{i}"  # results do not come back in suite order: match them by key
            check.expectation.meta = {"facescale_check": key}
            by_key[key] = check
        # Passing the expectations at once: add_expectation re-serialises the whole suite each time.
        suite = context.suites.add(
            gx.ExpectationSuite(name=f"{SUITE_NAME}.{asset}", expectations=[c.expectation for c in own])
        )
        parameters: dict[str, Any] = {}
        if isinstance(frame, Path):
            sql = context.data_sources.add_sqlite(f"facescale-{asset}", connection_string=f"sqlite:///{frame}")
            batch = sql.add_table_asset(asset, table_name="rows").add_batch_definition_whole_table("all")
        else:
            batch = pandas_source.add_dataframe_asset(asset).add_batch_definition_whole_dataframe("all")
            parameters = {"dataframe": frame}
        definition = context.validation_definitions.add(gx.ValidationDefinition(name=asset, data=batch, suite=suite))
        result_format: dict[str, Any] = {"result_format": "SUMMARY", "partial_unexpected_count": _PARTIAL}
        if asset in _INDEX:
            result_format["unexpected_index_column_names"] = _INDEX[asset]
        run = definition.run(batch_parameters=parameters, result_format=result_format)
        raw[suite.name] = run.to_json_dict()
        for result in run.results:
            assert result.expectation_config is not None  # GX fills it for every result of a definition run
            outcomes[result.expectation_config.meta["facescale_check"]] = result
    context.build_data_docs()
    return [(by_key[k], outcomes[k]) for k in by_key], raw


# -- reporting ----------------------------------------------------------------------------------
def _failure(check: _Check, result: Any) -> str | None:
    """One line for a failed expectation: its statement, how much fails, a few offending values."""
    if result.success:
        return None
    info = result.exception_info or {}
    if info.get("raised_exception"):
        return f"{check.statement}: could not be evaluated ({info.get('exception_message')})"
    details = result.result or {}
    kwargs = result.expectation_config.kwargs
    kind = result.expectation_config.type
    if kind == "expect_table_columns_to_match_ordered_list":
        observed = list(details.get("observed_value") or [])
        expected = list(kwargs["column_list"])
        what = []
        if missing := [c for c in expected if c not in observed]:
            what.append(f"missing {missing}")
        if extra := [c for c in observed if c not in expected]:
            what.append(f"unexpected {extra}")
        return f"{check.statement}: {'; '.join(what) or 'out of order'} (found {observed})"
    if kind.startswith("expect_table_row_count"):
        return f"{check.statement}: found {details.get('observed_value')}"
    count = details.get("unexpected_count", 0)
    total = details.get("element_count", 0) - details.get("missing_count", 0)
    line = f"{check.statement}: {count} of {total} {check.unit} fail"
    if check.percent:
        line += f" ({details.get('unexpected_percent_nonmissing', 0.0):.2f}%)"
    columns = [kwargs[k] for k in ("column", "column_A", "column_B") if k in kwargs]
    examples: dict[str, str] = {}  # one per value of the first column shown (e.g. per source photo)
    for item in details.get("partial_unexpected_index_list") or []:
        key = _plain(item.get(check.show[0])) if isinstance(item, Mapping) and check.show else str(item)
        examples.setdefault(key, _example(item, check.show, columns))
    if examples:
        line += ", e.g. " + "; ".join(list(examples.values())[:_EXAMPLES])
    return line


def _example(item: Any, show: Sequence[str], columns: Sequence[str]) -> str:
    """``name=value`` for the index columns to show, then the checked columns."""
    if not isinstance(item, Mapping):
        return str(item)
    names = [*show, *(c for c in columns if c not in show)]
    return " ".join(f"{name}={_plain(item[name])}" for name in names if name in item)


def _plain(value: Any) -> str:
    return str(value.item() if hasattr(value, "item") else value)


def _statistics(
    results: list[tuple[_Check, Any]], stats: _RowStats, database: Path, max_duplicate_rate: float
) -> dict[str, Any]:
    with contextlib.closing(sqlite3.connect(database)) as db:
        originals, repeated = db.execute(
            "SELECT COALESCE(SUM(n), 0), COALESCE(SUM(CASE WHEN n > 1 THEN n ELSE 0 END), 0) FROM ("
            " SELECT COUNT(*) AS n FROM rows WHERE aug_index = 0 AND image_sha256 IS NOT NULL GROUP BY image_sha256)"
        ).fetchone()
    met = sum(1 for _, r in results if r.success)
    split_rows: Counter[str] = Counter()
    for (_, split), n in stats.per_group.items():
        split_rows[split] += n
    return {
        "evaluated_expectations": len(results),
        "successful_expectations": met,
        "unsuccessful_expectations": len(results) - met,
        "rows": stats.rows,
        "identities": len({slug for slug, _ in stats.per_group}),
        "split_rows": {s: split_rows.get(s, 0) for s in SPLITS},
        "undecodable_images": stats.undecodable,
        "duplicate_rate": round(repeated / originals, 6) if originals else 0.0,
        "max_duplicate_rate": max_duplicate_rate,
    }


# -- Data Docs ----------------------------------------------------------------------------------
def _upload_docs(store: DatasetStore, version_id: str, site: Path) -> None:
    """Replace ``<version>/validation/data_docs`` with the site built in ``site``."""
    target = posixpath.join(store.version_dir(version_id), DATA_DOCS_DIR)
    store.location.remove_tree(target)
    for path in sorted(p for p in site.rglob("*") if p.is_file()):
        rel = path.relative_to(site).as_posix()
        store.location.write_bytes_atomic(posixpath.join(target, rel), path.read_bytes())


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence GX's logging and warnings (and Pillow's) for the duration of a validation."""
    logger = logging.getLogger("great_expectations")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


__all__ = ["DATA_DOCS_DIR", "REQUIRED_COLUMNS", "RESULT_FILE", "SUITE_NAME", "validate_version"]
