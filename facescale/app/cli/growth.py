"""Growing the dataset: `facescale runs`, `ingest`, `scrape`, `curate`, `validate`."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress, TaskID
from rich.table import Table

from facescale.errors import FacescaleError

from .app import app, state_of
from .render import err, out, print_validation

runs_app = typer.Typer(help="RAW runs (scraped or ingested images).", no_args_is_help=True)


@runs_app.command("list")
def runs_list(
    ctx: typer.Context,
    as_json: Annotated[
        bool, typer.Option("--json", help="the run records (meta included: engine, search notes)")
    ] = False,
) -> None:
    """List RAW runs with their committed rows."""
    records = state_of(ctx).services.raw().list()
    if as_json:
        rows = [
            {**r.model_dump(mode="json", exclude={"shards", "completed"}), "rows": r.rows, "shards": len(r.shards)}
            for r in records
        ]
        out.print_json(json.dumps(rows))
        return
    if not records:
        out.print("no raw runs yet")
        return
    table = Table("run", "created (UTC)", "rows", "shards", "units done", "finished")
    for r in records:
        table.add_row(
            r.run_id,
            r.created_at.strftime("%Y-%m-%d %H:%M"),
            str(r.rows),
            str(len(r.shards)),
            str(len(r.completed)),
            "yes" if r.finished else "no",
        )
    out.print(table)


@app.command()
def ingest(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="a folder with one sub-folder of photos per identity")],
    run_id: Annotated[
        str | None, typer.Option(help="RAW run id (default: ingest-<folder>-<UTC date>); rerun it to resume")
    ] = None,
    min_images: Annotated[int, typer.Option(min=1, help="skip folders with fewer photos")] = 1,
    max_images: Annotated[int | None, typer.Option(min=1, help="skip folders with more photos")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="at most this many identities (first by name)")] = None,
) -> None:
    """Store a folder of photos as a RAW run (registering its identities)."""
    from datetime import UTC, datetime

    from facescale.scraper.ingest import identity_folders
    from facescale.scraper.ingest import ingest as run_ingest
    from facescale.storage import make_slug

    state = state_of(ctx)
    run_id = run_id or f"ingest-{make_slug(directory.resolve().name)}-{datetime.now(UTC):%Y%m%d}"
    total = len(identity_folders(directory, min_images, limit, max_images))
    scraper = state.settings.scraper
    with Progress(console=err, transient=True, disable=not err.is_terminal) as progress:
        task = progress.add_task("ingesting identities", total=total)
        summary = run_ingest(
            directory,
            state.services.raw(),
            state.services.registry(),
            run_id,
            min_images=min_images,
            limit=limit,
            max_images=max_images,
            max_pixels=scraper.max_pixels,
            min_side=scraper.min_side,
            on_folder=lambda _name: progress.advance(task),
            erasures=state.services.root().erasures.blocklist(),
        )
    rejected = ", ".join(f"{k} {v}" for k, v in summary.rejected.most_common()) or "none"
    out.print(
        f"run {summary.run_id}: {summary.identities} identities "
        f"({summary.skipped_identities} already done), {summary.accepted} images accepted, rejected: {rejected}"
    )


@app.command()
def scrape(
    ctx: typer.Context,
    keywords: Annotated[
        Path | None, typer.Option("--keywords", "-k", help="file with one identity name per line ('#' comments)")
    ] = None,
    identity: Annotated[
        list[str] | None, typer.Option("--identity", "-i", help="an identity name (repeatable)")
    ] = None,
    per_keyword: Annotated[int | None, typer.Option(min=1, help="candidate images per keyword")] = None,
    workers: Annotated[int | None, typer.Option(min=1, max=64, help="parallel browser workers")] = None,
    engine: Annotated[str | None, typer.Option(
        help="search engine: demo, google, bing, duckduckgo; or several in order of preference, comma-separated "
        "(duckduckgo,bing: the next is asked for a keyword the one before blocks or runs short on)")] = None,
    base_url: Annotated[str | None, typer.Option(help="engine base URL (the demo web's URL for 'demo')")] = None,
    run_id: Annotated[
        str | None, typer.Option(help="RAW run id (default: scrape-<engine>-<UTC date>); rerun to resume")
    ] = None,
) -> None:
    """Search the engine for each identity, download what it finds, and store a RAW run."""
    from collections import Counter
    from datetime import UTC, datetime

    from facescale.scraper.keywords import KeywordList, parse_keywords, read_keywords
    from facescale.scraper.scrape import KeywordOutcome

    state = state_of(ctx)
    settings = state.settings.scraper
    wanted = read_keywords(keywords) if keywords is not None else KeywordList()
    if identity:
        extra = parse_keywords(identity)
        wanted.rejected += extra.rejected
        known = {n.casefold() for n in wanted.names}
        wanted.names += [n for n in extra.names if n.casefold() not in known]
    for line, reason in wanted.rejected:
        err.print(f"skipped keyword on line {line}: {reason}", markup=False, highlight=False)
    if not wanted.names:
        raise FacescaleError("no keywords: pass --keywords FILE or --identity NAME")
    engine_name = engine or settings.engine
    run_id = run_id or f"scrape-{engine_name.replace(',', '-')}-{datetime.now(UTC):%Y%m%d}"
    rejected: Counter[str] = Counter()
    with Progress(console=err, transient=True, disable=not err.is_terminal) as progress:
        task = progress.add_task(f"scraping {len(wanted.names)} keywords", total=len(wanted.names))

        def advance(outcome: KeywordOutcome) -> None:
            rejected.update(outcome.rejected)
            progress.advance(task)

        summary = state.services.scrape(
            wanted.names, run_id=run_id, engine=engine_name, base_url=base_url, per_keyword=per_keyword,
            workers=workers, on_keyword=advance,
        )
    reasons = ", ".join(f"{k} {v}" for k, v in summary.rejected.most_common()) or "none"
    out.print(
        f"run {summary.run_id}: {summary.keywords} keywords ({summary.skipped} already done, "
        f"{len(summary.failed)} failed), {summary.accepted} images accepted, rejected: {reasons}",
        markup=False,
        highlight=False,
    )
    for name, why in summary.failed.items():
        err.print(f"search failed for {name!r}: {why} (rerun the same --run-id to retry)", markup=False)
    if not summary.finished:
        raise typer.Exit(1)


class _Bars:
    """`facescale.pipeline.curate.Progress` shown as rich progress bars (only on a terminal)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: TaskID | None = None

    def start(self, step: str, total: int) -> None:
        if self.task is not None:
            self.progress.update(self.task, visible=False)
        self.task = self.progress.add_task(step, total=total)

    def advance(self, n: int = 1) -> None:
        if self.task is not None:
            self.progress.advance(self.task, n)


@app.command()
def curate(
    ctx: typer.Context,
    version_id: Annotated[
        str | None, typer.Option("--version-id", help="id of the new version (default: UTC time + random suffix)")
    ] = None,
    validate: Annotated[bool, typer.Option(help="run the Great Expectations gate and publish on success")] = True,
    ray_address: Annotated[
        str | None, typer.Option(help="existing Ray cluster (default: curation.ray_address, $RAY_ADDRESS, local)")
    ] = None,
) -> None:
    """Crop, dedup, clean, balance, split and augment every RAW run into a new dataset version."""
    state = state_of(ctx)
    with Progress(console=err, transient=True, disable=not err.is_terminal) as progress:
        summary = state.services.curate(
            version_id=version_id, validate=validate, ray_address=ray_address, progress=_Bars(progress)
        )
    rejected = ", ".join(f"{k} {v}" for k, v in summary.rejected.most_common()) or "none"
    out.print(
        f"prepared {summary.prepared_rows} photos from {summary.new_raw_shards} new RAW shards; "
        f"identities: {summary.identities_kept} kept ({summary.identities_changed} changed), "
        f"{summary.identities_waiting} waiting for more photos; removed: {rejected}",
        markup=False,
        highlight=False,
    )
    if summary.sheets:
        out.print(f"contact sheets: {summary.sheets}", markup=False, highlight=False)
    if summary.version_id is None:
        out.print(summary.message, markup=False, highlight=False)
        return
    what = "new version" if summary.created else f"version ({summary.message})"
    out.print(f"{what} {summary.version_id}: {summary.rows} samples", markup=False, highlight=False)
    datasets = state.services.datasets()
    print_validation(summary.validation, datasets.location.display(datasets.version_dir(summary.version_id)))
    if summary.validation is not None and not summary.validation.success:
        raise typer.Exit(1)


@app.command("validate")
def validate_cmd(
    ctx: typer.Context,
    version_id: Annotated[str, typer.Argument(help="dataset version id ('latest' for the newest)")],
    publish: Annotated[bool, typer.Option(help="record the outcome in the manifest (publishes on success)")] = True,
) -> None:
    """Run the Great Expectations suite over a dataset version (publishing it if it passes)."""
    state = state_of(ctx)
    store = state.services.datasets()
    version_id = state.services.resolve_version(version_id, published_only=False)
    summary = state.services.validate(version_id, publish=publish)
    out.print(f"version {version_id}", markup=False, highlight=False)
    print_validation(summary, store.location.display(store.version_dir(version_id)))
    if not summary.success:
        raise typer.Exit(1)


