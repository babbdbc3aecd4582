"""The composition root: settings -> stores -> a stage run, built in one place for the CLI and the DAG tasks.

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
from typing import TYPE_CHECKING

from facescale.config import Settings

if TYPE_CHECKING:
    from facescale.pipeline.curate import CurateSummary, ProgressSink
    from facescale.scraper.scrape import KeywordOutcome, ScrapeSummary
    from facescale.storage import (
        DatasetStore,
        ExclusionList,
        IdentityRegistry,
        Location,
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
