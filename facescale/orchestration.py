"""The work behind the Airflow DAGs, as typed functions that run (and are tested) without Airflow.

The DAG files in ``dags/`` only wire these together; each function takes the `Settings`
and plain values, builds what it needs through `facescale.services.Services` (the
composition root the CLI uses too), does one task's work idempotently and returns a typed
result (a `TaskResult`: ids and counts, never data) that the task dumps to XCom with
``to_xcom()`` and the next task validates with ``from_xcom()``. Idempotency comes from ids derived from the run's
key (its logical date, or its run id for manual runs): the nightly run of 2026-11-30 writes
RAW runs ``nightly-20261130-b00``, ``-b01``, ... and dataset version ``nightly-20261130``,
and a retry or rerun resumes or returns those instead of writing new ones.

Heavy libraries (ray, tensorflow, selenium, cv2) are imported by the stage modules, and
those only inside the functions here, so a DAG file that imports this module stays light.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field

from facescale.config import OrchestrationSettings, Settings
from facescale.errors import FacescaleError
from facescale.services import Services

log = logging.getLogger(__name__)

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
    """What one task hands the next through XCom: ids and counts, validated when read back."""

    model_config = ConfigDict(extra="forbid")

    def to_xcom(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_xcom(cls, value: Any) -> Self:
        """The result a task returned (a `ValidationError` names the field if it is not one)."""
        return cls.model_validate(value)


# -- nightly: plan --------------------------------------------------------------------------


class Batch(TaskResult):
    """One mapped scrape task: a RAW run id and the names it searches."""

    run_id: str
    names: list[str]
    per_keyword: int


class Plan(TaskResult):
    """A nightly run's keywords, fixed once per run key (a rerun scrapes the same batches)."""

    key: str
    new: list[str] = Field(default_factory=list)  # names not registered before tonight
    pending: list[str] = Field(default_factory=list)  # registered, never scraped to completion
    waiting: list[str] = Field(default_factory=list)  # curated, still short of clean photos: searched deeper
    given_up: list[str] = Field(default_factory=list)  # still short, but searched max_waiting_nights already
    exhausted: list[str] = Field(default_factory=list)  # still short, but their last search had every result
    waiting_nights: dict[str, int] = Field(default_factory=dict)  # nights other plans searched them (waiting, given up)
    max_waiting_nights: int | None = None  # the cap in effect when the plan was made
    batches: list[Batch] = Field(default_factory=list)


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
    """Plan the keywords of run ``key`` (or return the plan already made for it).

    New identities are the next ``new_per_night`` names of ``orchestration.keywords_file``
    that are not registered yet (or ``names``, when given: the add-identities DAG), registered
    here in that order so their labels do not depend on which scrape task runs first. Added to
    them: registered identities no RAW run has completed (a failed or interrupted scrape),
    and identities the newest dataset version lists as waiting for more clean photos, which
    are searched twice as deep (URLs fetched before are skipped by the scraper) unless the
    stored plans of ``orchestration.max_waiting_nights`` other nights searched them already:
    those are listed as ``given_up`` (with every waiting identity's count in ``waiting_nights``),
    so the plan shows why they are not searched; so are those whose latest search already had
    every result the engine lists (``exhausted``: fewer than asked, see `storage.raw.EXHAUSTED`).
    Adding such a person by hand searches it again.
    """
    from facescale.scraper.keywords import parse_keywords, read_keywords
    from facescale.storage.identities import name_key

    orch = settings.orchestration
    services = Services(settings)
    plans, plan_name = services.plans(), f"{prefix}-{key}"
    stored = plans.read(plan_name)
    if stored is not None:
        plan = Plan.model_validate_json(stored)
        log.info("plan %s exists: %d batches", plan_name, len(plan.batches))
        return plan
    per_keyword = per_keyword or settings.scraper.per_keyword
    batch_size = batch_size or orch.batch_size
    registry = services.registry()
    known = {name_key(i.name): i for i in registry.list(include_removed=True)}
    if names is not None:
        wanted = parse_keywords(list(names))
        active_known = {k for k, i in known.items() if i.active}
        new = [n for n in wanted.names if name_key(n) not in active_known]
        pending_names = [known[name_key(n)].name for n in wanted.names if name_key(n) in active_known]
    else:
        limit = orch.new_per_night if new_per_night is None else new_per_night
        candidates = read_keywords(Path(orch.keywords_file)).names if orch.keywords_file else []
        new = [n for n in candidates if name_key(n) not in known][:limit]
        pending_names = []
    raw = services.raw()
    runs = raw.list()
    completed = {slug for record in runs for slug in record.completed}
    active = [i for i in registry.list() if i.slug not in completed]
    pending = list(dict.fromkeys(pending_names + [i.name for i in active]))
    plan = Plan(key=key, new=new, pending=pending, max_waiting_nights=orch.max_waiting_nights)
    if names is None:
        newest = services.datasets().latest(published_only=False)
        waiting_slugs = sorted(newest.curation_notes().waiting) if newest is not None else []
        by_slug = {i.slug: i.name for i in registry.list()}
        short = [(s, by_slug[s]) for s in waiting_slugs if s in by_slug and by_slug[s] not in pending]
        searched = plans.waiting_nights(prefix, besides=plan_name) if short else {}
        ended = _exhausted(runs) if short else set()
        for slug, name in short:
            nights = plan.waiting_nights[name] = searched.get(name_key(name), 0)
            capped = plan.max_waiting_nights is not None and nights >= plan.max_waiting_nights
            if capped:
                plan.given_up.append(name)
            elif slug in ended:
                plan.exhausted.append(name)
            else:
                plan.waiting.append(name)
    normal = new + pending
    chunks = [(normal[s : s + batch_size], per_keyword) for s in range(0, len(normal), batch_size)]
    chunks += [(plan.waiting[s : s + batch_size], per_keyword * 2) for s in range(0, len(plan.waiting), batch_size)]
    plan.batches = [
        Batch(run_id=f"{prefix}-{key}-b{index:02d}", names=names, per_keyword=depth)
        for index, (names, depth) in enumerate(chunks)
    ]
    # Register tonight's new names now, in keyword-file order: labels must not depend on which
    # mapped scrape task happens to run first.
    registry.add(new)
    plans.write(plan_name, plan.model_dump_json(indent=2).encode())
    log.info("planned %s-%s: %d new, %d pending, %d waiting (%d given up, %d exhausted), %d batches", prefix, key,
             len(new), len(pending), len(plan.waiting), len(plan.given_up), len(plan.exhausted), len(plan.batches))
    return plan


def _exhausted(runs: list[Any]) -> set[str]:
    """Slugs whose latest search (RAW runs oldest first) ended before its depth: the engine had nothing more."""
    from facescale.storage.raw import EXHAUSTED

    latest: dict[str, bool] = {}
    for record in runs:
        ended = set(record.meta.get(EXHAUSTED, []))
        for slug in record.completed:
            latest[slug] = slug in ended
    return {slug for slug, ended in latest.items() if ended}


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


class Decision(TaskResult):
    """Whether a dataset version warrants training, and from which model to warm-start."""

    train: bool
    reason: str
    version_id: str | None
    base_model: str | None = None  # newest model that passed the quality bar (the warm start)
    base_version: str | None = None
    new_identities: list[str] = Field(default_factory=list)
    new_samples: float | None = None  # relative growth in samples over base_version


def passed_bar(record: Any, orch: OrchestrationSettings) -> bool:
    """The quality bar: the Inception V3's test top-1, what the default backend answers right on the test photos
    (models evaluated before it was measured: not checked), and, for a warm start, no worse than the model it
    replaces on that model's identities."""
    evaluation = record.metrics.get("evaluation") or {}
    top1 = evaluation.get("top1")
    if top1 is None or top1 < orch.min_test_top1:
        return False
    served = record.metrics.get("serving_test")
    if served is not None and (served.get("answered_right") or 0.0) < orch.min_served_right:
        return False
    warm = record.metrics.get("warm_start") or {}
    return warm.get("at_least_as_good") is not False


def retrain_decision(settings: Settings, version_id: str | None, *, force: bool = False) -> Decision:
    """Train when the version adds ``retrain_min_new_identities`` identities or ``retrain_min_new_samples``
    more samples than the version of the newest model that passed the bar (or when forced, or when
    there is no such model); skip when that model was trained on this very version."""
    orch = settings.orchestration
    services = Services(settings)
    store = services.datasets()
    if version_id is None:
        newest = store.latest(published_only=True)
        if newest is None:
            return Decision(train=False, reason="no published dataset version yet", version_id=None)
        version_id = newest.version_id
    manifest = store.get(version_id)
    if not manifest.published:
        return Decision(
            train=False, reason=f"dataset version {version_id} is not published (validation failed?)",
            version_id=version_id,
        )
    models = [r for r in services.models().list() if passed_bar(r, orch)]
    base = models[-1] if models else None
    if base is None:
        return Decision(train=True, reason="no model has passed the quality bar yet", version_id=version_id)
    decision = Decision(
        train=False, reason="", version_id=version_id, base_model=base.model_id, base_version=base.version_id
    )
    if base.version_id == version_id and not force:
        decision.reason = f"model {base.model_id} was trained on {version_id} already"
        return decision
    base_manifest = store.get(base.version_id)
    old = {i.slug for i in base_manifest.identities}
    decision.new_identities = sorted(i.slug for i in manifest.identities if i.slug not in old)
    decision.new_samples = new_samples = (manifest.rows - base_manifest.rows) / max(1, base_manifest.rows)
    if force:
        decision.train, decision.reason = True, "forced"
    elif len(decision.new_identities) >= orch.retrain_min_new_identities:
        decision.train, decision.reason = True, f"{len(decision.new_identities)} new identities"
    elif new_samples >= orch.retrain_min_new_samples:
        decision.train, decision.reason = True, f"{new_samples:.0%} more samples"
    else:
        decision.reason = (
            f"{len(decision.new_identities)} new identities and {new_samples:.0%} more samples "
            f"than {base.version_id} (model {base.model_id}): below the retraining thresholds"
        )
    return decision


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
