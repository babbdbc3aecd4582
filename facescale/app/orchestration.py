"""The work behind the Airflow DAGs, as typed functions that run (and are tested) without Airflow.

The DAG files in ``dags/`` only wire these together; each function takes the `Settings`
and plain values, builds what it needs through `facescale.app.services.Services` (the
composition root the CLI uses too), does one task's work idempotently and returns a typed
result (a pydantic model: ids and counts, never data) that the task dumps to XCom with
``model_dump(mode="json")`` and the next task validates with ``model_validate``. The night's
plan (`scraper.night`) and the retraining decision (`training.decision`) are their stages'
own; the functions here hand them the store root. Idempotency comes from ids derived from the run's
key (its logical date, or its run id for manual runs): the nightly run of 2026-11-30 writes
RAW runs ``nightly-20261130-b00``, ``-b01``, ... and dataset version ``nightly-20261130``,
and a retry or rerun resumes or returns those instead of writing new ones.

Heavy libraries (ray, tensorflow, selenium, cv2) are imported by the stage modules, and
those only inside the functions here, so a DAG file that imports this module stays light.
"""

from __future__ import annotations

import importlib
import logging
import re
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from facescale.app.services import Services
from facescale.config import Settings
from facescale.errors import FacescaleError

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from facescale.scraper.night import Batch, Plan
    from facescale.training.decision import Decision

#: The stages' own results a DAG reads back from XCom (`orch.Decision.model_validate(...)`), imported
#: when first asked for: their modules import the storage layer (pyarrow), which a DAG file's parse must not.
_STAGE_RESULTS = {"Batch": "facescale.scraper.night", "Plan": "facescale.scraper.night",
                  "Decision": "facescale.training.decision"}


def __getattr__(name: str) -> Any:
    if name in _STAGE_RESULTS:
        return getattr(importlib.import_module(_STAGE_RESULTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

# Airflow Assets (constructed in the DAG files from these names; `x-` schemes are free-form).
DATASET_ASSET = "facescale_dataset"
DATASET_ASSET_URI = "x-facescale://datasets/published"
MODEL_ASSET = "facescale_model"
MODEL_ASSET_URI = "x-facescale://models/published"
TRAINING_QUEUE = "gpu"  # Celery queue of train/evaluate tasks (the GPU worker); local executors ignore it
SCRAPE_POOL = "facescale_scrape"  # Airflow pool capping concurrent scrape tasks (browsers + downloads)

_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def run_key(logical_date: datetime | None, run_id: str) -> str:
    """The idempotency key of a DAG run: its logical date (``20261130``), else its run id made id-safe."""
    if logical_date is not None:
        return f"{logical_date:%Y%m%d}"
    _, _, rest = run_id.rpartition("__")  # "manual__2026-11-30T09:10:00+00:00": drop the run type
    return _ID_UNSAFE.sub("-", rest or run_id).strip("-._")[:80] or "run"


class TaskResult(BaseModel):
    """What one task hands the next through XCom: ids and counts, validated when read back
    (``model_dump(mode="json")`` out, ``model_validate`` in: a `ValidationError` names the field)."""

    model_config = ConfigDict(extra="forbid")


# -- nightly: plan --------------------------------------------------------------------------


def plan_night(
    settings: Settings,
    key: str,
    *,
    prefix: str = "nightly",
    new_per_night: int | None = None,
    per_keyword: int | None = None,
    batch_size: int | None = None,
    names: list[str] | None = None,
) -> Plan:
    """The keywords of run ``key`` (`scraper.night.plan_night`: made once, then read back)."""
    from facescale.scraper.night import plan_night as plan

    return plan(
        Services(settings).root(), settings, key, prefix=prefix, new_per_night=new_per_night,
        per_keyword=per_keyword, batch_size=batch_size, names=names,
    )


class Registered(TaskResult):
    """One name of an add-identities run as the registry holds it (``new``: it was not active before)."""

    name: str
    slug: str
    label: int
    new: bool


def register_identities(settings: Settings, names: list[str]) -> list[Registered]:
    """Add ``names`` to the identity registry (re-adding a removed one restores it)."""
    from facescale.scraper.keywords import parse_keywords

    parsed = parse_keywords(list(names))
    if parsed.rejected:
        raise FacescaleError("invalid names: " + "; ".join(f"#{n}: {why}" for n, why in parsed.rejected))
    if not parsed.names:
        raise FacescaleError("no names given: trigger with conf {\"names\": [\"Ada Lovelace\", ...]}")
    added = Services(settings).registry().add(parsed.names)
    return [Registered(name=i.name, slug=i.slug, label=i.label, new=new) for i, new in added]


# -- nightly: scrape, curate, validate, publish ---------------------------------------------


class Scraped(TaskResult):
    """A finished RAW run of one batch."""

    run_id: str
    keywords: int
    skipped: int
    accepted: int
    rejected: dict[str, int]
    failed: list[str]
    search_s: float = 0.0  # browser seconds searching (browsers run in parallel)
    download_s: float = 0.0  # seconds from each keyword's download submit to its last file (keywords overlap)


def scrape_batch(
    settings: Settings,
    batch: Batch,
    *,
    engine: str | None = None,
    base_url: str | None = None,
) -> Scraped:
    """Scrape one batch into its RAW run; raise (so the task retries and resumes) if it is unfinished."""
    summary = Services(settings).scrape(
        batch.names, run_id=batch.run_id, engine=engine, base_url=base_url, per_keyword=batch.per_keyword
    )
    if not summary.finished:
        raise FacescaleError(
            f"RAW run {batch.run_id} is unfinished, searches failed for {sorted(summary.failed)}; "
            "a retry resumes it"
        )
    return Scraped(
        run_id=summary.run_id, keywords=summary.keywords, skipped=summary.skipped, accepted=summary.accepted,
        rejected=dict(summary.rejected), failed=list(summary.failed), search_s=round(summary.search_s, 3),
        download_s=round(summary.download_s, 3),
    )


class Curated(TaskResult):
    """The version a night stands on after curation (``created``: this run made it)."""

    version_id: str | None
    created: bool
    message: str | None
    identities_kept: int
    identities_waiting: int
    identities_changed: int
    rows: int
    prepared_rows: int
    seconds: dict[str, float] = Field(default_factory=dict)  # wall time per curation step


def curate_version(settings: Settings, version_id: str) -> Curated:
    """Curate every RAW run into version ``version_id`` on Ray (no gate: `validate` follows).

    Returns the version tonight stands on: ``version_id`` itself when it was made (or had been
    by an earlier try), the unchanged newest version when nothing new arrived, or None when no
    identity has enough photos yet.
    """
    summary = Services(settings).curate(version_id=version_id, validate=False)
    return Curated(
        version_id=summary.version_id,
        created=summary.version_id == version_id,
        message=summary.message,
        identities_kept=summary.identities_kept,
        identities_waiting=summary.identities_waiting,
        identities_changed=summary.identities_changed,
        rows=summary.rows,
        prepared_rows=summary.prepared_rows,
        seconds={step: round(s, 3) for step, s in summary.seconds.items()},
    )


class Validated(TaskResult):
    """A version that passed the Great Expectations gate and is published in the store."""

    version_id: str
    success: bool
    data_docs: str | None


def validate_version(settings: Settings, version_id: str) -> Validated:
    """The Great Expectations gate: publish ``version_id`` in the store if it passes, else raise."""
    services = Services(settings)
    manifest = services.datasets().get(version_id)
    if manifest.published and manifest.validation is not None:
        summary = manifest.validation
    else:
        summary = services.validate(version_id, publish=True)
    if not summary.success:
        failed = ", ".join(str(f) for f in summary.failures[:5])
        raise FacescaleError(f"dataset version {version_id} failed validation: {failed}")
    return Validated(version_id=version_id, success=True, data_docs=summary.data_docs)


class DatasetEvent(TaskResult):
    """The extra of the dataset Asset event announcing a published version."""

    version_id: str
    parent: str | None
    uri: str
    identities: int
    new_identities: list[str]
    rows: int
    published_at: str | None


def dataset_event(settings: Settings, version_id: str) -> DatasetEvent:
    """The dataset Asset event's extra for a published version."""
    store = Services(settings).datasets()
    manifest = store.get(version_id)
    if not manifest.published:
        raise FacescaleError(f"dataset version {version_id} is not published")
    parent = store.get(manifest.parent) if manifest.parent else None
    before = {i.slug for i in parent.identities} if parent else set()
    return DatasetEvent(
        version_id=version_id,
        parent=manifest.parent,
        uri=store.location.display(store.version_dir(version_id)),
        identities=len(manifest.identities),
        new_identities=sorted(i.slug for i in manifest.identities if i.slug not in before),
        rows=manifest.rows,
        published_at=manifest.published_at.isoformat() if manifest.published_at else None,
    )


# -- retraining -----------------------------------------------------------------------------


def retrain_decision(settings: Settings, version_id: str | None, *, force: bool = False) -> Decision:
    """Whether ``version_id`` (default: the newest published version) warrants training
    (`training.decision.retrain_decision`)."""
    from facescale.training.decision import retrain_decision as decide

    return decide(Services(settings).root(), settings, version_id, force=force)


class Trained(TaskResult):
    """A model trained on the decision's version and registered."""

    model_id: str
    version_id: str
    classes: int
    epochs: int
    stopped_by: str | None
    run_dir: str


def train_model(settings: Settings, decision: Decision, key: str) -> Trained:
    """Train on the decision's version (warm-started from its base model), register the model and calibrate it."""
    if decision.version_id is None:
        raise FacescaleError("no dataset version to train on")
    run_dir = Path(settings.orchestration.work_dir) / f"retrain-{key}-{decision.version_id}"
    trained = Services(settings).train_model(
        decision.version_id, run_dir=run_dir, warm_start=decision.base_model,
        max_steps_per_epoch=settings.orchestration.max_steps_per_epoch,
    )
    result, record = trained.result, trained.record
    assert record is not None  # registered
    return Trained(
        model_id=record.model_id,
        version_id=record.version_id,
        classes=result.num_classes,
        epochs=result.epochs,
        stopped_by=result.stopped_by,
        run_dir=str(run_dir.resolve()),
    )


class Evaluated(TaskResult):
    """A registered model's test-split evaluation and whether it passed the quality bar."""

    model_id: str
    top1: float
    top5: float
    examples: int
    served_backend: str | None
    served_right: float | None
    passed: bool
    min_test_top1: float
    min_served_right: float
    eval_dir: str


def evaluate_model(settings: Settings, model_id: str, key: str) -> Evaluated:
    """Evaluate a registered model on its version's test split (the Inception V3, and what its default backend
    answers) and store the evaluation with it; `passed_bar` decides whether it is published."""
    from facescale.training.decision import passed_bar

    services = Services(settings)
    registry = services.models()
    work = Path(settings.orchestration.work_dir) / f"eval-{key}-{model_id}"
    result = services.evaluate_model(model_id, work_dir=work).evaluation
    served = services.evaluate_serving(model_id) if "calibration" in registry.get(model_id).metrics else None
    return Evaluated(
        model_id=model_id,
        top1=result.top1,
        top5=result.top5,
        examples=result.examples,
        served_backend=served["backend"] if served else None,
        served_right=served["answered_right"] if served else None,
        passed=passed_bar(registry.get(model_id), settings.orchestration),
        min_test_top1=settings.orchestration.min_test_top1,
        min_served_right=settings.orchestration.min_served_right,
        eval_dir=registry.location.display(registry.files_dir(model_id)) + "/eval",
    )


class ModelEvent(TaskResult):
    """The extra of the model Asset event announcing a model that passed the quality bar."""

    model_id: str
    version_id: str
    classes: int
    parent: str | None
    top1: float | None
    top5: float | None
    uri: str


def model_event(settings: Settings, model_id: str) -> ModelEvent:
    """The model Asset event's extra for a model that passed the quality bar."""
    registry = Services(settings).models()
    record = registry.get(model_id)
    evaluation = record.metrics.get("evaluation") or {}
    return ModelEvent(
        model_id=model_id,
        version_id=record.version_id,
        classes=record.num_classes,
        parent=record.parent,
        top1=evaluation.get("top1"),
        top5=evaluation.get("top5"),
        uri=registry.location.display(registry.model_dir(model_id)),
    )
