"""The composition root: settings -> stores -> a stage run, built in one place for the CLI and the DAG tasks.

It reaches from scraping to serving: a version is trained, its run registered and calibrated
here (`Services.train_model`, `Services.register_model`), a registered model evaluated and
its evaluation stored here (`Services.evaluate_model`), and a registered model loaded for
serving here (`Services.recognizer`). The CLI, the DAG tasks and the benchmarks call these and
never wire the stages themselves.

`facescale.app.cli` (a command) and `facescale.app.orchestration` (an Airflow task's work) both
start from ``Services(settings)``: the storage root and its shard sizes, each store, and
the stage calls whose wiring they share (a scrape with its engine, browser settings and
stores; curation with its Ray address; the Great Expectations gate with its duplicate
bar). What differs between the two callers (progress bars, XCom results, exit codes)
stays with them. Everything is imported inside the calls (the storage layer's pyarrow
included), so a DAG file that imports `facescale.app.orchestration` parses light.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facescale.config import Settings, TrainingSettings
from facescale.errors import NotFoundError

#: the default local directory of training runs and evaluations started from the CLI
RUNS_DIR = Path("facescale-runs")

if TYPE_CHECKING:

    from facescale.pipeline.curate import CurateSummary, ProgressSink
    from facescale.scraper.scrape import KeywordOutcome, ScrapeSummary
    from facescale.serving.calibration import Calibration
    from facescale.serving.recognizer import Backend, Recognizer
    from facescale.storage import (
        DatasetStore,
        ExclusionList,
        IdentityRegistry,
        Location,
        ModelRecord,
        ModelRegistry,
        RawStore,
        ShardSizing,
        StorageRoot,
        ValidationSummary,
    )
    from facescale.storage.erasures import ErasureRecord
    from facescale.storage.plans import PlanStore
    from facescale.training.rundir import Evaluation, TrainResult


@dataclass(frozen=True)
class TrainedModel:
    """A training run on a version, and its registration (None when not registered)."""

    result: TrainResult
    record: ModelRecord | None
    parent: ModelRecord | None  # the model it was warm-started from


@dataclass(frozen=True)
class EvaluatedModel:
    """A registered model's evaluation on its version, stored with it."""

    evaluation: Evaluation
    record: ModelRecord  # the record with the evaluation's metrics and files
    eval_dir: Path  # the local copy of metrics.json and the plots


class Services:
    """The stores and stage calls of one `Settings` (cheap to build; each call builds what it needs)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    # -- storage -------------------------------------------------------------------------------
    def location(self) -> Location:
        from facescale.storage import Location

        storage = self.settings.storage
        return Location.from_uri(storage.root, storage.storage_options)

    def sizing(self) -> ShardSizing:
        from facescale.storage import ShardSizing

        s = self.settings.storage
        return ShardSizing(s.rows_per_row_group, s.max_rows_per_shard, s.max_bytes_per_shard)

    def root(self) -> StorageRoot:
        """Every store of the configured root (`storage.StorageRoot`), what a stage is handed; each call
        builds a fresh one, as each store method below does."""
        from facescale.storage import StorageRoot

        return StorageRoot(self.location(), self.sizing())

    def datasets(self) -> DatasetStore:
        return self.root().datasets

    def raw(self) -> RawStore:
        return self.root().raw

    def registry(self) -> IdentityRegistry:
        return self.root().registry

    def exclusions(self) -> ExclusionList:
        return self.root().exclusions

    def plans(self) -> PlanStore:
        return self.root().plans

    def models(self) -> ModelRegistry:
        return self.root().models

    # -- stage runs ----------------------------------------------------------------------------
    def scrape(
        self,
        names: Sequence[str],
        *,
        run_id: str,
        engine: str | None = None,
        base_url: str | None = None,
        per_keyword: int | None = None,
        workers: int | None = None,
        on_keyword: Callable[[KeywordOutcome], None] | None = None,
    ) -> ScrapeSummary:
        """Search ``engine`` (default ``scraper.engine``) for ``names`` into RAW run ``run_id`` (resumes it)."""
        from facescale.scraper.engines import get_engine
        from facescale.scraper.scrape import scrape

        scraper = self.settings.scraper
        return scrape(
            names,
            engine=get_engine(engine or scraper.engine, base_url or scraper.base_url,
                              block_third_party=scraper.block_third_party),
            store=self.raw(),
            registry=self.registry(),
            run_id=run_id,
            settings=scraper,
            per_keyword=per_keyword,
            workers=workers,
            on_keyword=on_keyword,
            erased=self.root().erasures.blocklist(),
        )

    def erase_identity(self, name: str, *, requested_by: str, reason: str,
                       on_step: Callable[[str], None] | None = None) -> ErasureRecord:
        """Erase a registered person from every store (`storage.erasure`; resumes an unfinished erasure)."""
        from facescale.storage.erasure import erase, identity_target

        root = self.root()
        target, identity = identity_target(root, name)
        return erase(root, target, requested_by=requested_by, reason=reason, identity=identity, on_step=on_step)

    def erase_photos(self, refs: Sequence[str], *, requested_by: str, reason: str,
                     on_step: Callable[[str], None] | None = None) -> ErasureRecord:
        """Erase photos (image ids or source URLs) from every store (`storage.erasure`)."""
        from facescale.storage.erasure import erase, photos_target

        return erase(self.root(), photos_target(refs), requested_by=requested_by, reason=reason, on_step=on_step)

    def verify_erasure(self, ref: str) -> list[tuple[ErasureRecord, dict[str, int]]]:
        """Each erasure of ``ref`` (an erasure id, a person's name, an image id or a URL) and what the stores still
        hold of it (`storage.erasure.verify`; a name is also searched for in the store's text files)."""
        from facescale.storage.erasure import verify
        from facescale.storage.erasures import is_image_id

        root = self.root()
        records = root.erasures.find(ref)
        if not records:
            raise NotFoundError(f"no erasure of {ref!r} on record")
        names = [ref] if not ref.startswith("erasure-") and "://" not in ref and not is_image_id(ref) else []
        return [(record, verify(root, record, names)) for record in records]

    def curate(
        self,
        *,
        version_id: str | None = None,
        validate: bool = True,
        ray_address: str | None = None,
        progress: ProgressSink | None = None,
    ) -> CurateSummary:
        """Curate every RAW run into a new version on Ray (``ray_address`` overrides ``curation.ray_address``)."""
        from facescale.pipeline.curate import curate

        settings = self.settings.curation
        if ray_address:
            settings = settings.model_copy(update={"ray_address": ray_address})
        return curate(self.root(), settings, version_id=version_id, validate=validate, progress=progress)

    def validate(self, version_id: str, *, publish: bool = True) -> ValidationSummary:
        """The Great Expectations gate over a stored version (publishes it on success when ``publish``)."""
        from facescale.pipeline.validate import validate_version

        return validate_version(
            self.datasets(), version_id, publish=publish,
            max_duplicate_rate=self.settings.curation.max_duplicate_rate,
        )

    # -- models --------------------------------------------------------------------------------
    def resolve_version(self, ref: str, *, published_only: bool = True) -> str:
        """A dataset version id, or ``latest``: the newest (published, unless ``published_only`` is False)
        version; `NotFoundError` when it does not exist."""
        from facescale.errors import NotFoundError

        store = self.datasets()
        if ref == "latest":
            newest = store.latest(published_only=published_only)
            if newest is None:
                which = "published " if published_only else ""
                raise NotFoundError(f"no {which}dataset versions yet: run `facescale curate`")
            return newest.version_id
        return store.get(ref).version_id

    def training_settings(self, overrides: Mapping[str, Any] | None = None) -> TrainingSettings:
        """``training.*`` with ``overrides`` (None values ignored), validated; `ConfigError` names what is wrong."""
        from facescale.errors import ConfigError

        changed = {k: v for k, v in (overrides or {}).items() if v is not None}
        try:
            return TrainingSettings.model_validate(self.settings.training.model_dump() | changed)
        except ValueError as exc:
            raise ConfigError(f"invalid training settings: {exc}") from exc

    def train_model(
        self,
        version: str = "latest",
        *,
        run_dir: Path | None = None,
        settings: TrainingSettings | None = None,
        warm_start: str | None = None,
        max_steps_per_epoch: int | None = None,
        register: bool = True,
        verbose: int | str = 2,
        progress: Callable[[str], None] | None = None,
    ) -> TrainedModel:
        """Train on a version (id or ``latest``), warm-started from a registered model, then register and
        calibrate the run (`register_model`).

        ``run_dir`` defaults to ``facescale-runs/<version>`` (``<version>-from-<model>`` with a warm
        start); rerun with the same one to resume a killed run or return a finished one.
        ``settings`` defaults to ``training.*``.
        """
        from facescale.training.train import train

        version_id = self.resolve_version(version)
        root = self.root()
        registry = root.models
        parent = registry.resolve(warm_start) if warm_start else None
        if run_dir is None:
            run_dir = RUNS_DIR / (version_id if parent is None else f"{version_id}-from-{parent.model_id}")
        warm_dir = registry.local_dir(parent.model_id, run_dir / "warm-start") if parent is not None else None
        result = train(
            root.datasets, version_id, settings or self.settings.training, run_dir,
            max_steps_per_epoch=max_steps_per_epoch, warm_start=warm_dir, verbose=verbose, crops=root.crops,
        )
        record = (
            self.register_model(run_dir, parent=parent.model_id if parent else None, progress=progress)
            if register else None
        )
        return TrainedModel(result, record, parent)

    def evaluate_model(
        self,
        ref: str,
        *,
        work_dir: Path | None = None,
        leaky_baseline: bool = False,
        batch_size: int = 64,
        verbose: int | str = 2,
    ) -> EvaluatedModel:
        """Evaluate a registered model (id or ``latest``) on its version's test split and store the evaluation
        (metrics and plots) with it; with ``leaky_baseline``, also train its configuration on the seed's
        leaky split and report both (`training.leaky`).

        ``work_dir`` (default ``facescale-runs/eval-<model>``) holds the model's local copy, the
        evaluation and the leaky run (which resumes like any training run).
        """
        from facescale.storage import StorageRoot
        from facescale.training.artifacts import register_evaluation
        from facescale.training.evaluate import evaluate
        from facescale.training.leaky import leaky_baseline as run_leaky
        from facescale.training.rundir import TrainResult

        root = self.root()
        registry, store = root.models, root.datasets
        record = registry.resolve(ref)
        work = work_dir or RUNS_DIR / f"eval-{record.model_id}"
        model_dir = registry.local_dir(record.model_id, work / "model")
        leaky = None
        if leaky_baseline:
            trained = TrainResult.load(model_dir)
            scratch = StorageRoot.from_uri(str(work / "leaky" / "data")).datasets  # a store of its own
            leaky = run_leaky(
                store, record.version_id, TrainingSettings.model_validate(trained.settings), work / "leaky",
                scratch=scratch, max_steps_per_epoch=trained.max_steps_per_epoch,
                validation_steps=trained.validation_steps, batch_size=batch_size, verbose=verbose,
                crops=root.crops,
            )
        evaluation = evaluate(store, model_dir, work / "eval", batch_size=batch_size, leaky=leaky)
        updated = register_evaluation(registry, record.model_id, work / "eval", evaluation)
        return EvaluatedModel(evaluation, updated, work / "eval")

    def register_model(
        self, run_dir: Path, *, parent: str | None = None, progress: Callable[[str], None] | None = None
    ) -> ModelRecord:
        """Register a finished training run and calibrate it for serving (`calibrate_model`).

        Registration is where a model is measured for serving: the first query on it then
        answers at once with the backend that measured best. Registering the same run again
        returns the first record, and a model calibrated already is not measured again. A
        version that cannot be calibrated (validation photos of fewer than two identities)
        leaves the model registered and uncalibrated, with a warning.
        """
        import logging

        from facescale.errors import ConfigError
        from facescale.training.artifacts import register_run

        registry = self.models()
        record = register_run(registry, run_dir, parent=parent)
        if "calibration" in record.metrics:
            return record
        try:
            self.calibrate_model(record.model_id, progress=progress)
        except ConfigError as exc:
            logging.getLogger(__name__).warning("model %s registered uncalibrated: %s", record.model_id, exc)
            return record
        return registry.get(record.model_id)

    def recognizer(
        self, ref: str | None = None, *, before_load: Callable[[], None] | None = None, to_calibrate: bool = False
    ) -> Recognizer:
        """A registered model (``serving.model`` by default) loaded for serving, with its stored calibration
        (``before_load`` runs before its Keras model loads, on the ``model`` backend's first use; no warning
        about a missing calibration when it is loaded ``to_calibrate``)."""
        from facescale.serving.loading import load_recognizer

        return load_recognizer(
            self.models(), self.datasets(), self.settings.serving, ref or self.settings.serving.model,
            before_load=before_load, warn_uncalibrated=not to_calibrate,
        )

    def evaluate_serving(self, ref: str, *, split: str = "test") -> dict[str, Any]:
        """What each backend of a registered model answers on its version's ``split`` photos, stored in its record
        (``metrics.serving_test``: the default backend's figures first, every backend's under ``backends``)."""
        import tempfile

        from facescale.serving.calibration import identification_on, originals

        recognizer = self.recognizer(ref)
        photos = originals(self.datasets(), recognizer.version_id, {split: None})[split]
        backends = identification_on(recognizer, photos, split)
        default = recognizer.default_backend
        summary = {"backend": default, **backends[default], "backends": backends}
        with tempfile.TemporaryDirectory(prefix="facescale-serving-test-") as empty:
            self.models().add_files(recognizer.model_id, empty, [], prefix="serving-test",
                                    metrics={"serving_test": summary})
        return summary

    def calibrate_model(
        self,
        ref: str,
        *,
        backends: Sequence[Backend] | None = None,
        gallery_per_identity: int | None = None,
        max_pairs: int | None = None,
        unseen: Path | None = None,
        unseen_identities: int = 200,
        progress: Callable[[str], None] | None = None,
    ) -> Calibration:
        """Measure a registered model's thresholds, enrol its identities, choose its default backend, store it all."""
        from facescale.serving.calibration import calibrate, store_calibration
        from facescale.serving.loading import image_limits
        from facescale.serving.recognizer import BACKENDS

        serving, root = self.settings.serving, self.root()
        recognizer = self.recognizer(ref, to_calibrate=True)
        calibration = calibrate(
            recognizer, root.datasets, backends=backends or BACKENDS,
            gallery_per_identity=gallery_per_identity or serving.gallery_per_identity,
            max_pairs=max_pairs or serving.calibration_pairs, unseen=unseen, unseen_identities=unseen_identities,
            limits=image_limits(serving), progress=progress, crops=root.crops,
        )
        store_calibration(root.models, calibration)
        return calibration
