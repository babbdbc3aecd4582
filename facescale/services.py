"""The composition root: settings -> stores -> a stage run, built in one place for the CLI and the DAG tasks.

It reaches from scraping to serving: a trained run is registered and calibrated here
(`Services.register_model`), and a registered model is loaded for serving here
(`Services.recognizer`).

`facescale.cli` (a command) and `facescale.orchestration` (an Airflow task's work) both
start from ``Services(settings)``: the storage root and its shard sizes, each store, and
the stage calls whose wiring they share (a scrape with its engine, browser settings and
stores; curation with its Ray address; the Great Expectations gate with its duplicate
bar). What differs between the two callers (progress bars, XCom results, exit codes)
stays with them. Everything is imported inside the calls (the storage layer's pyarrow
included), so a DAG file that imports `facescale.orchestration` parses light.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from facescale.config import Settings

if TYPE_CHECKING:
    from pathlib import Path

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
        ValidationSummary,
    )


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

    def datasets(self) -> DatasetStore:
        from facescale.storage import DatasetStore

        return DatasetStore(self.location(), self.sizing())

    def raw(self) -> RawStore:
        from facescale.storage import RawStore

        return RawStore(self.location(), self.sizing())

    def registry(self) -> IdentityRegistry:
        from facescale.storage import IdentityRegistry

        return IdentityRegistry(self.location())

    def exclusions(self) -> ExclusionList:
        from facescale.storage import ExclusionList

        return ExclusionList(self.location())

    def models(self) -> ModelRegistry:
        from facescale.storage import ModelRegistry

        return ModelRegistry(self.location())

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
            engine=get_engine(engine or scraper.engine, base_url or scraper.base_url),
            store=self.raw(),
            registry=self.registry(),
            run_id=run_id,
            settings=scraper,
            per_keyword=per_keyword,
            workers=workers,
            on_keyword=on_keyword,
        )

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
        return curate(
            self.location(), settings, sizing=self.sizing(), version_id=version_id, validate=validate,
            progress=progress,
        )

    def validate(self, version_id: str, *, publish: bool = True) -> ValidationSummary:
        """The Great Expectations gate over a stored version (publishes it on success when ``publish``)."""
        from facescale.pipeline.validate import validate_version

        return validate_version(
            self.datasets(), version_id, publish=publish,
            max_duplicate_rate=self.settings.curation.max_duplicate_rate,
        )

    # -- models --------------------------------------------------------------------------------
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

        serving = self.settings.serving
        recognizer = self.recognizer(ref, to_calibrate=True)
        calibration = calibrate(
            recognizer, self.datasets(), backends=backends or BACKENDS,
            gallery_per_identity=gallery_per_identity or serving.gallery_per_identity,
            max_pairs=max_pairs or serving.calibration_pairs, unseen=unseen, unseen_identities=unseen_identities,
            limits=image_limits(serving), progress=progress,
        )
        store_calibration(self.models(), calibration)
        return calibration
