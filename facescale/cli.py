"""The `facescale` command line: one subcommand group per stage.

Expected failures (bad input, bad config, missing or malformed data) are printed as one
``error: ...`` line on stderr with exit status 2; nothing is left half-written.
"""

from __future__ import annotations

import json
import logging
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
import yaml
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import Progress, TaskID, track
from rich.table import Table
from rich.text import Text

from facescale import __version__
from facescale.config import Settings, config_path, load_settings
from facescale.errors import FacescaleError
from facescale.extras import missing_extra
from facescale.services import Services
from facescale.storage import DatasetStore, ValidationSummary

if TYPE_CHECKING:
    import numpy as np

    from facescale.serving.recognizer import Backend, Recognizer

log = logging.getLogger("facescale")
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)

app = typer.Typer(
    help="facescale: grow, curate, train on and serve a labelled face dataset.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
config_app = typer.Typer(help="Show the effective configuration.", no_args_is_help=True)
datasets_app = typer.Typer(help="CURATED dataset versions.", no_args_is_help=True)
identities_app = typer.Typer(
    help="The identity registry (names, slugs, stable labels).", no_args_is_help=True
)
runs_app = typer.Typer(help="RAW runs (scraped or ingested images).", no_args_is_help=True)
exclusions_app = typer.Typer(
    help="The curation exclusion list: photos later versions leave out, or keep after review.",
    no_args_is_help=True,
)
app.add_typer(config_app, name="config")
app.add_typer(datasets_app, name="datasets")
app.add_typer(identities_app, name="identities")
app.add_typer(runs_app, name="runs")
models_app = typer.Typer(help="Trained models in the registry.", no_args_is_help=True)
benchmark_app = typer.Typer(help="Standard benchmarks of the model and the dlib backend.", no_args_is_help=True)
app.add_typer(benchmark_app, name="benchmark")
app.add_typer(exclusions_app, name="exclusions")
app.add_typer(models_app, name="models")


class State:
    """What the root options decide, shared with every subcommand."""

    def __init__(self, config_file: Path | None, verbose: int = 0) -> None:
        self.config_file = config_file
        self.verbose = verbose
        self._settings: Settings | None = None

    def tensorflow(self) -> None:
        """Import TensorFlow (before the modules that need it), its C++ start-up lines only with -vv."""
        from facescale.tflog import import_tensorflow

        import_tensorflow(show_logs=self.verbose >= 2)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_file)
        return self._settings

    @property
    def services(self) -> Services:
        """The stores and stage calls of these settings (facescale.services, shared with the DAGs)."""
        return Services(self.settings)


def _state(ctx: typer.Context) -> State:
    return ctx.ensure_object(State)


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="YAML config file (default: $FACESCALE_CONFIG or ./facescale.yaml)"
        ),
    ] = None,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="-v info, -vv debug")
    ] = 0,
) -> None:
    level = logging.WARNING - 10 * min(verbose, 2)
    handler = RichHandler(console=err, show_path=False)
    logging.basicConfig(level=level, format="%(message)s", handlers=[handler])
    ctx.obj = State(config, verbose)


@app.command()
def version() -> None:
    """Print the installed facescale version."""
    out.print(__version__)


# -- config ----------------------------------------------------------------------------------
@config_app.command("show")
def config_show(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of YAML")] = False,
) -> None:
    """Print the effective configuration (defaults < YAML file < FACESCALE_* environment)."""
    state = _state(ctx)
    data = state.settings.dump()
    source = config_path(state.config_file)
    if as_json:
        out.print_json(json.dumps(data))
        return
    sys.stdout.write(f"# config file: {source or 'none (defaults + environment)'}\n")
    sys.stdout.write(yaml.safe_dump(data, sort_keys=False))


# -- datasets --------------------------------------------------------------------------------
@datasets_app.command("list")
def datasets_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List committed dataset versions, oldest first."""
    manifests = _state(ctx).services.datasets().list()
    if as_json:
        rows = [m.model_dump(mode="json", exclude={"shards", "config"}) for m in manifests]
        out.print_json(json.dumps(rows))
        return
    if not manifests:
        out.print("no dataset versions yet")
        return
    table = Table("version", "created (UTC)", "parent", "identities", "rows", "shards", "status")
    for m in manifests:
        table.add_row(
            m.version_id,
            m.created_at.strftime("%Y-%m-%d %H:%M"),
            Text(m.parent or "-"),
            str(len(m.identities)),
            str(m.rows),
            str(len(m.shards)),
            _status(m),
        )
    out.print(table)


@datasets_app.command("show")
def datasets_show(
    ctx: typer.Context,
    version_id: Annotated[str, typer.Argument(metavar="VERSION", help="a version id, or 'latest'")],
    verify: Annotated[
        bool, typer.Option("--verify", help="check every shard's checksum and row count")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show one dataset version: identities, split counts, shards, validation."""
    store = _state(ctx).services.datasets()
    manifest = store.get(_version_id(store, version_id))
    if verify:
        from facescale.storage.shards import verify_shard

        # Progress only on a terminal: elsewhere rich leaves a blank line on stderr when it stops.
        shards = track(
            manifest.shards, description="verifying shards", console=err, transient=True, disable=not err.is_terminal
        )
        for shard in shards:
            verify_shard(store.location, store.version_dir(version_id), shard)
    if as_json:
        out.print_json(manifest.model_dump_json())
        return
    out.print(f"[bold]{manifest.version_id}[/]  {_status(manifest)}")
    created = f"{manifest.created_at:%Y-%m-%d %H:%M:%S}"
    out.print(Text(f"created {created} UTC, parent {manifest.parent or '-'}"))
    counts = ", ".join(f"{k} {v}" for k, v in manifest.split_counts().items())
    out.print(f"{manifest.rows} rows in {len(manifest.shards)} shards; {counts}")
    if verify:
        out.print("[green]all shards verified[/]")
    if manifest.validation is not None:
        v = manifest.validation
        outcome = "passed" if v.success else "FAILED"
        out.print(Text(f"validation ({v.suite}): {outcome} at {v.validated_at:%Y-%m-%d %H:%M}"))
        for failure in v.failures:
            out.print(Text(f"  - {failure}"))
    table = Table("label", "identity", "slug", "train", "val", "test")
    for ident in sorted(manifest.identities, key=lambda i: i.label):
        counts_by_split = (str(ident.counts.get(s, 0)) for s in ("train", "val", "test"))
        table.add_row(str(ident.label), Text(ident.name), ident.slug, *counts_by_split)
    out.print(table)


def _version_id(store: DatasetStore, version_id: str, published_only: bool = False) -> str:
    """``version_id``, with ``latest`` resolved to the newest (published) version."""
    if version_id != "latest":
        return version_id
    newest = store.latest(published_only=published_only)
    if newest is None:
        raise FacescaleError(f"no {'published ' if published_only else ''}dataset versions yet")
    return newest.version_id


VersionArg = Annotated[str, typer.Argument(metavar="VERSION", help="a version id, or 'latest'")]


@datasets_app.command("card")
def datasets_card(ctx: typer.Context, version_id: VersionArg) -> None:
    """Write (again) a version's dataset card, README.md in its directory, from its records."""
    store = _state(ctx).services.datasets()
    path = store.write_card(store.get(_version_id(store, version_id)))
    out.print(Text(store.location.display(path)))


@datasets_app.command("export")
def datasets_export(
    ctx: typer.Context,
    version_id: VersionArg,
    dest: Annotated[str, typer.Argument(metavar="DEST", help="a new or empty directory: a path or URI (s3://...)")],
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="imagefolder (torchvision), webdataset (tar shards) or parquet (HF)")
    ] = "parquet",
    split: Annotated[
        list[str] | None, typer.Option("--split", help="only this split (repeat for several; default: all)")
    ] = None,
    originals_only: Annotated[
        bool, typer.Option("--originals-only", help="only original crops (aug_index 0), no augmented copies")
    ] = False,
) -> None:
    """Export a version for other trainers, with its card and labels.json (rerun the same command to resume)."""
    from facescale.storage import Location
    from facescale.storage.export import export_version

    state = _state(ctx)
    store = state.services.datasets()
    version_id = _version_id(store, version_id, published_only=True)
    target = Location.from_uri(dest, state.settings.storage.storage_options)
    shards = len(store.get(version_id).shards)
    with Progress(console=err, transient=True, disable=not err.is_terminal) as progress:
        task = progress.add_task(f"exporting {version_id}", total=shards)
        try:
            summary = export_version(
                store, version_id, target, cast(Any, fmt), splits=cast(Any, split), originals_only=originals_only,
                on_shard=lambda _name, _n: progress.advance(task),
            )
        except ValueError as exc:  # an unknown format or split: checked before anything is read or written
            raise FacescaleError(str(exc)) from exc
    resumed = f" ({summary.skipped} of {summary.shards} shards were already done)" if summary.skipped else ""
    out.print(Text(f"exported {version_id} as {fmt} to {summary.destination}: {summary.samples} samples, "
                   f"{summary.files} files written{resumed}"))


@datasets_app.command("diff")
def datasets_diff(
    ctx: typer.Context,
    before: Annotated[str, typer.Argument(metavar="A", help="the older version (or 'latest')")],
    after: Annotated[str, typer.Argument(metavar="B", help="the newer version (or 'latest')")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """What changed from version A to B: identities, photos per identity (with reasons), labels."""
    from facescale.storage.diff import diff_versions

    services = _state(ctx).services
    store = services.datasets()
    diff = diff_versions(store, _version_id(store, before), _version_id(store, after), services.exclusions())
    if as_json:
        out.print_json(diff.model_dump_json())
        return
    out.print(Text(f"{diff.before} -> {diff.after}: samples {diff.samples_before} -> {diff.samples_after}; "
                   f"identities +{len(diff.identities_added)} -{len(diff.identities_removed)} "
                   f"changed {len(diff.identities_changed)}, unchanged {diff.identities_unchanged}; "
                   f"label changes {len(diff.label_changes)}"))
    table = Table("change", "identity", "samples", "photos +", "photos -", "why removed")
    for slug, n in diff.identities_added.items():
        table.add_row("added", slug, str(n), "", "", "")
    for slug, n in diff.identities_removed.items():
        table.add_row("removed", slug, str(n), "", "", "")
    for change in diff.identities_changed:
        samples = f"{sum(change.counts_before.values())} -> {sum(change.counts_after.values())}"
        why = ", ".join(f"{r} {n}" for r, n in change.removed_reasons.most_common())
        table.add_row("changed", change.slug, samples, str(len(change.photos_added)),
                      str(len(change.photos_removed)), why)
    for label in diff.label_changes:
        table.add_row("LABEL", label.slug, f"{label.before} -> {label.after}", "", "", "labels must be stable")
    if table.row_count:
        out.print(table)


@datasets_app.command("growth")
def datasets_growth(ctx: typer.Context) -> None:
    """Draw the growth view (identities and samples per published version) and print its page."""
    from facescale.pipeline.growth import write_growth

    out.print(Text(write_growth(_state(ctx).services.datasets())))


def _status(manifest: object) -> str:
    validation = getattr(manifest, "validation", None)
    if getattr(manifest, "published", False):
        return "published"
    if validation is not None and not validation.success:
        return "validation failed"
    return "not validated"


# -- identities ------------------------------------------------------------------------------
@identities_app.command("add")
def identities_add(
    ctx: typer.Context,
    names: Annotated[
        list[str] | None, typer.Argument(help="display names, e.g. 'Ada Lovelace'")
    ] = None,
    from_file: Annotated[
        Path | None, typer.Option("--from-file", "-f", help="one name per line ('#' comments)")
    ] = None,
) -> None:
    """Register identities; each gets a slug and a label that never changes."""
    wanted = list(names or [])
    if from_file is not None:
        try:
            lines = from_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise FacescaleError(f"cannot read {from_file}: {exc}") from exc
        wanted += [ln for ln in (line.strip() for line in lines) if ln and not ln.startswith("#")]
    if not wanted:
        raise FacescaleError("no names given: pass NAME... or --from-file FILE")
    for identity, changed in _state(ctx).services.registry().add(wanted):
        verb = "added" if changed else "exists"
        out.print(Text(f"{verb:7} {identity.label:>5}  {identity.slug}  {identity.name}"))


@identities_app.command("list")
def identities_list(
    ctx: typer.Context,
    include_removed: Annotated[
        bool, typer.Option("--all", help="include removed identities")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List registered identities in label order."""
    identities = _state(ctx).services.registry().list(include_removed=include_removed)
    if as_json:
        out.print_json(json.dumps([i.model_dump(mode="json") for i in identities]))
        return
    if not identities:
        out.print("no identities registered")
        return
    table = Table("label", "slug", "name", "status", "added (UTC)")
    for i in identities:
        added = i.added_at.strftime("%Y-%m-%d %H:%M")
        table.add_row(str(i.label), i.slug, Text(i.name), i.status, added)
    out.print(table)


@identities_app.command("remove")
def identities_remove(
    ctx: typer.Context,
    names: Annotated[list[str], typer.Argument(help="names or slugs")],
) -> None:
    """Retire identities: they leave future datasets; their labels stay reserved."""
    for identity in _state(ctx).services.registry().remove(names):
        out.print(Text(f"removed {identity.label:>5}  {identity.slug}  {identity.name}"))


# -- exclusions ------------------------------------------------------------------------------
IdentityArg = Annotated[str, typer.Argument(help="identity name or slug")]
ImageIdsArg = Annotated[list[str], typer.Argument(help="source image ids (shown on the contact sheets)")]


@exclusions_app.command("list")
def exclusions_list(
    ctx: typer.Context,
    identity: Annotated[str | None, typer.Argument(help="only this identity (name or slug)")] = None,
) -> None:
    """Show the exclusion list (automatic wrong-person removals and manual decisions)."""
    state = _state(ctx)
    slug = state.services.registry().get(identity).slug if identity else None
    entries = [e for e in state.services.exclusions().load() if slug is None or e.identity_slug == slug]
    if not entries:
        out.print("no exclusions")
        return
    table = Table("identity", "source image id", "reason", "source", "added (UTC)")
    for e in entries:
        table.add_row(e.identity_slug, e.source_image_id, e.reason, e.source, e.added_at.strftime("%Y-%m-%d %H:%M"))
    out.print(table)


@exclusions_app.command("add")
def exclusions_add(
    ctx: typer.Context,
    identity: IdentityArg,
    image_ids: ImageIdsArg,
    reason: Annotated[str, typer.Option(help="why (shown to reviewers)")] = "manual",
) -> None:
    """Leave photos out of this identity in every later version."""
    from facescale.storage import Exclusion

    state = _state(ctx)
    slug = state.services.registry().get(identity).slug
    if reason == "reviewed_keep":
        raise FacescaleError("use `facescale exclusions keep` to keep a photo")
    entries = [Exclusion(identity_slug=slug, source_image_id=i, reason=reason, source="manual") for i in image_ids]
    changed = state.services.exclusions().add(entries)
    out.print(f"{len(changed)} of {len(entries)} photos newly excluded from {slug}; run `facescale curate` to apply")


@exclusions_app.command("keep")
def exclusions_keep(ctx: typer.Context, identity: IdentityArg, image_ids: ImageIdsArg) -> None:
    """Mark photos as reviewed and kept: the automatic cleaner will not remove them again."""
    state = _state(ctx)
    slug = state.services.registry().get(identity).slug
    changed = state.services.exclusions().keep(slug, image_ids)
    out.print(f"{len(changed)} of {len(image_ids)} photos marked reviewed-and-kept for {slug}")


@exclusions_app.command("remove")
def exclusions_remove(ctx: typer.Context, identity: IdentityArg, image_ids: ImageIdsArg) -> None:
    """Forget the entries of these photos (the cleaner decides about them again)."""
    state = _state(ctx)
    slug = state.services.registry().get(identity).slug
    removed = state.services.exclusions().remove(slug, image_ids)
    out.print(f"{len(removed)} entries removed for {slug}")


# -- runs ------------------------------------------------------------------------------------
@runs_app.command("list")
def runs_list(
    ctx: typer.Context,
    as_json: Annotated[
        bool, typer.Option("--json", help="the run records (meta included: engine, search notes)")
    ] = False,
) -> None:
    """List RAW runs with their committed rows."""
    records = _state(ctx).services.raw().list()
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

    state = _state(ctx)
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
    engine: Annotated[str | None, typer.Option(help="search engine adapter: demo, bing")] = None,
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

    state = _state(ctx)
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
    run_id = run_id or f"scrape-{engine_name}-{datetime.now(UTC):%Y%m%d}"
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
    state = _state(ctx)
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
    _print_validation(summary.validation, datasets.location.display(datasets.version_dir(summary.version_id)))
    if summary.validation is not None and not summary.validation.success:
        raise typer.Exit(1)


@app.command("validate")
def validate_cmd(
    ctx: typer.Context,
    version_id: Annotated[str, typer.Argument(help="dataset version id ('latest' for the newest)")],
    publish: Annotated[bool, typer.Option(help="record the outcome in the manifest (publishes on success)")] = True,
) -> None:
    """Run the Great Expectations suite over a dataset version (publishing it if it passes)."""
    state = _state(ctx)
    store = state.services.datasets()
    if version_id == "latest":
        newest = store.latest(published_only=False)
        if newest is None:
            raise FacescaleError("no dataset versions yet: run `facescale curate`")
        version_id = newest.version_id
    summary = state.services.validate(version_id, publish=publish)
    out.print(f"version {version_id}", markup=False, highlight=False)
    _print_validation(summary, store.location.display(store.version_dir(version_id)))
    if not summary.success:
        raise typer.Exit(1)


def _print_validation(summary: ValidationSummary | None, version_dir: str) -> None:
    if summary is None:
        out.print("validation: skipped (not published)")
        return
    stats = summary.statistics
    ok, total = stats.get("successful_expectations"), stats.get("evaluated_expectations")
    counted = f" ({ok}/{total} expectations)" if ok is not None and total is not None else ""
    verdict = "passed, published" if summary.success else "FAILED, not published"
    out.print(f"validation: {verdict}{counted}", markup=False, highlight=False)
    for line in summary.failures:
        out.print(f"  - {line}", markup=False, highlight=False)
    if summary.data_docs:
        docs = f"{version_dir.rstrip('/')}/{summary.data_docs}"
        out.print(f"data docs: {docs}", markup=False, highlight=False)


# -- training, evaluation, models --------------------------------------------------------------


def _fmt(value: object, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


@app.command("train")
def train_cmd(
    ctx: typer.Context,
    version: Annotated[
        str, typer.Option("--version", help="dataset version id, or 'latest' (newest published)")
    ] = "latest",
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="local training directory (default: facescale-runs/<version>); rerun to resume"),
    ] = None,
    max_epochs: Annotated[int | None, typer.Option(min=1, help="override training.max_epochs")] = None,
    max_steps: Annotated[int | None, typer.Option(min=1, help="cap batches per epoch (bounded runs)")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="override training.batch_size (per replica)")] = None,
    image_size: Annotated[int | None, typer.Option(min=16, help="override training.image_size")] = None,
    backbone: Annotated[
        str | None, typer.Option(help="override training.backbone: inception_v3, or tiny (mechanics and smoke runs)")
    ] = None,
    warm_start: Annotated[
        str | None, typer.Option("--warm-start", help="registered model (id or 'latest') to start from")
    ] = None,
    register: Annotated[bool, typer.Option(help="register the trained model")] = True,
) -> None:
    """Train the Inception V3 identity model on a dataset version and register it."""
    state = _state(ctx)
    state.tensorflow()
    overrides = {"max_epochs": max_epochs, "batch_size": batch_size, "image_size": image_size, "backbone": backbone}
    trained = state.services.train_model(
        version, run_dir=out_dir, settings=state.services.training_settings(overrides), warm_start=warm_start,
        max_steps_per_epoch=max_steps, register=register, verbose=1 if sys.stdout.isatty() else 2,
        progress=lambda line: err.print(Text(line)),
    )
    result, record, parent = trained.result, trained.record, trained.parent
    table = Table("", "", title="training summary", show_header=False)
    table.add_row("dataset version", Text(result.version_id))
    table.add_row("classes", str(result.num_classes))
    table.add_row("epochs", f"{result.epochs} (stopped by {result.stopped_by})")
    table.add_row(f"best {result.monitor}", f"{_fmt(result.best_value)} at epoch {_fmt(result.best_epoch)}")
    for key in ("accuracy", "val_accuracy", "val_top5_accuracy"):
        if result.history.get(key):
            table.add_row(f"final {key}", _fmt(result.history[key][-1]))
    table.add_row("replicas x batch", f"{result.replicas} x {result.global_batch_size // max(1, result.replicas)}")
    if result.warm_start:
        w = result.warm_start
        verdict = {True: "at least as good", False: "WORSE", None: "no test samples"}[w["at_least_as_good"]]
        table.add_row(
            "warm start",
            Text(
                f"from {parent.model_id if parent else '?'}: "
                f"{w['copied_classes']} classes kept, {w['new_classes']} new; "
                f"on the old identities' {w['test_samples']} test samples {_fmt(w['previous_accuracy'])} -> "
                f"{_fmt(w['new_accuracy'])} ({verdict})"
            ),
        )
    table.add_row("seconds", _fmt(result.seconds, 1))
    table.add_row("output", Text(str(result.out_dir)))
    if record is not None:
        table.add_row("registered as", Text(record.model_id))
        calibration = record.metrics.get("calibration")
        if calibration:
            table.add_row("serving backend", _backend_line(calibration))
    out.print(table)


@app.command("evaluate")
def evaluate_cmd(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(metavar="MODEL", help="registered model id, or 'latest'")],
    leaky_baseline: Annotated[
        bool,
        typer.Option(
            "--leaky-baseline",
            help="also train the same config on the seed's leaky split (samples split after augmentation) "
            "and report both accuracies",
        ),
    ] = False,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="local working directory (default: facescale-runs/eval-<model>)")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="samples per prediction batch")] = 64,
) -> None:
    """Evaluate a registered model on its dataset version's test split (metrics + PNG plots)."""
    state = _state(ctx)
    state.tensorflow()
    evaluated = state.services.evaluate_model(
        model, work_dir=out_dir, leaky_baseline=leaky_baseline, batch_size=batch_size,
        verbose=1 if sys.stdout.isatty() else 2,
    )
    result, updated, registry = evaluated.evaluation, evaluated.record, state.services.models()
    console = out
    console.print(
        Text(
            f"model {updated.model_id} on {result.version_id} ({result.split}, {result.examples} samples): "
            f"top-1 {result.top1:.4f}, top-5 {result.top5:.4f}"
        )
    )
    if result.leaky is not None:
        side = Table("split", "test samples", "top-1", "top-5", "test photos also in train", title="honest vs leaky")
        side.add_row("by source photo (ours)", str(result.examples), _fmt(result.top1), _fmt(result.top5), "0%")
        side.add_row(
            "by sample after augmentation (seed)", str(result.leaky["examples"]), _fmt(result.leaky["top1"]),
            _fmt(result.leaky["top5"]), f"{100 * result.leaky['leak_rate']:.0f}%",
        )
        console.print(side)
        gap = result.leaky["gap"]
        console.print(Text(f"top-1 gap, leaky - honest: {gap:+.4f}" + (" (the leak inflates it)" if gap > 0 else "")))
    worst = Table("identity", "label", "test samples", "top-1", title="worst identities")
    for row in result.per_identity[:5]:
        worst.add_row(Text(row["name"]), str(row["label"]), str(row["examples"]), _fmt(row["accuracy"]))
    console.print(worst)
    if result.confused_pairs:
        pairs = Table("true", "predicted as", "count", "share", title="most-confused pairs")
        for pair in result.confused_pairs:
            pairs.add_row(
                Text(pair["true"]["name"]), Text(pair["predicted"]["name"]), str(pair["count"]), _fmt(pair["share"], 2)
            )
        console.print(pairs)
    files = registry.location.display(registry.files_dir(updated.model_id))
    console.print(Text(f"metrics and plots: {evaluated.eval_dir.resolve()}"))
    for name in result.plots.values():
        console.print(Text(f"  {files}/eval/{name}"))


@models_app.command("list")
def models_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List registered models, oldest first."""
    records = _state(ctx).services.models().list()
    if as_json:
        out.print_json(json.dumps([r.model_dump(mode="json", exclude={"files", "config"}) for r in records]))
        return
    if not records:
        out.print("no models registered yet")
        return
    table = Table("model", "created (UTC)", "dataset version", "classes", "parent", "epochs", "test top-1")
    for r in records:
        training = r.metrics.get("training", {})
        evaluation = r.metrics.get("evaluation", {})
        table.add_row(
            r.model_id,
            r.created_at.strftime("%Y-%m-%d %H:%M"),
            Text(r.version_id),
            str(r.num_classes),
            Text(r.parent or "-"),
            _fmt(training.get("epochs")),
            _fmt(evaluation.get("top1")),
        )
    out.print(table)


@models_app.command("show")
def models_show(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(metavar="MODEL", help="a model id, or 'latest'")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show one registered model: data, configuration, metrics, files."""
    registry = _state(ctx).services.models()
    record = registry.resolve(model)
    if as_json:
        out.print_json(record.model_dump_json())
        return
    out.print(f"[bold]{record.model_id}[/]")
    out.print(Text(f"created {record.created_at:%Y-%m-%d %H:%M:%S} UTC, dataset version {record.version_id}, "
                   f"{record.num_classes} classes, parent {record.parent or '-'}"))
    training = record.metrics.get("training", {})
    if training:
        out.print(Text(
            f"training: {training.get('epochs')} epochs (stopped by {training.get('stopped_by')}), best "
            f"{training.get('monitor')} {_fmt(training.get('best_value'))} at epoch {training.get('best_epoch')}"
        ))
    warm = record.metrics.get("warm_start")
    if warm:
        out.print(Text(
            f"warm start: old identities' test accuracy {_fmt(warm.get('previous_accuracy'))} -> "
            f"{_fmt(warm.get('new_accuracy'))} (at least as good: {warm.get('at_least_as_good')})"
        ))
    calibration = record.metrics.get("calibration")
    out.print(Text("serving: ") + (_backend_line(calibration) if calibration else Text("not calibrated")))
    served = record.metrics.get("serving_test")
    if served:
        out.print(Text(
            f"served on the {served['split']} photos ({served['photos']}): the {served['backend']} backend answers "
            f"{_fmt(served['answered_right'])} right, {_fmt(served['unknown'])} unknown (top-1 {_fmt(served['top1'])})"
        ))
    evaluation = record.metrics.get("evaluation")
    if evaluation:
        line = f"evaluation ({evaluation['split']}, {evaluation['examples']} samples): "
        line += f"top-1 {_fmt(evaluation['top1'])}, top-5 {_fmt(evaluation['top5'])}"
        if evaluation.get("leaky"):
            line += f"; leaky split top-1 {_fmt(evaluation['leaky']['top1'])}"
        out.print(Text(line))
    table = Table("file", "bytes", "sha256")
    for f in record.files:
        table.add_row(Text(f.path), str(f.bytes), f.sha256[:16])
    out.print(table)
    out.print(Text(f"files: {registry.location.display(registry.files_dir(record.model_id))}"))


@models_app.command("latest")
def models_latest(ctx: typer.Context) -> None:
    """Print the id of the newest registered model."""
    out.print(Text(_state(ctx).services.models().resolve("latest").model_id))


# -- serving ---------------------------------------------------------------------------------------
ModelOption = Annotated[
    str | None, typer.Option("--model", "-m", help="registered model id, or 'latest' (default: serving.model)")
]
BackendOption = Annotated[
    str | None,
    typer.Option(
        "--backend", "-b",
        help="'model' (our Inception V3) or 'dlib' (pretrained embedder, enrolled gallery); "
        "default: the one the model's calibration chose",
    ),
]


def _backend_line(calibration: dict[str, Any]) -> Text:
    """The calibration's default backend and what each backend measured on the validation photos."""
    identify = calibration["report"].get("identify", {})
    scores = ", ".join(f"{name} {entry.get('answered_right', 0):.3f}" for name, entry in identify.items())
    return Text(f"{calibration.get('default_backend', 'model')} (validation photos identified right: {scores})")


def _recognizer(state: State, model: str | None) -> Recognizer:
    return state.services.recognizer(model, before_load=state.tensorflow)


def _photo(path: Path, state: State) -> np.ndarray:
    from facescale.serving.images import load_image
    from facescale.serving.loading import image_limits

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FacescaleError(f"cannot read {path}: {exc.strerror or exc}") from None
    return load_image(data, image_limits(state.settings.serving), str(path))


def _backend(value: str) -> Backend:
    if value not in ("model", "dlib"):
        raise FacescaleError(f"unknown backend {value!r}: use 'model' or 'dlib'")
    return cast("Backend", value)


def _maybe_backend(value: str | None) -> Backend | None:
    return None if value is None else _backend(value)


@app.command("identify")
def identify_cmd(
    ctx: typer.Context,
    images: Annotated[list[Path], typer.Argument(help="photos to look at")],
    model: ModelOption = None,
    top_k: Annotated[int | None, typer.Option("--top-k", "-k", min=1, max=50, help="identities per face")] = None,
    annotate: Annotated[
        Path | None, typer.Option("--annotate", help="write each photo with boxes and names here (a folder)")
    ] = None,
    backend: BackendOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Find every face in each photo and say who it is (top-k identities, 'unknown' below the threshold)."""
    from facescale.serving.images import annotate as draw
    from facescale.serving.images import encode_jpeg
    from facescale.storage.fs import local_atomic_path

    state = _state(ctx)
    asked = _maybe_backend(backend)
    photos = [_photo(path, state) for path in images]  # bad input fails before any model work
    recognizer = _recognizer(state, model)
    chosen = recognizer.backend(asked)
    k = top_k or state.settings.serving.top_k
    results: list[dict[str, Any]] = []
    for path, pixels in zip(images, photos, strict=True):
        matches = recognizer.identify(pixels, k, chosen)
        results.append({"image": str(path), "faces": [m.to_json() for m in matches]})
        if annotate is not None:
            annotate.mkdir(parents=True, exist_ok=True)
            labels = [
                (m.box, f"{m.identity or 'unknown'} {100 * m.confidence:.0f}%", m.identity is not None) for m in matches
            ]
            target = annotate / f"{path.stem}.jpg"
            with local_atomic_path(target) as tmp:
                Path(tmp).write_bytes(encode_jpeg(draw(pixels, labels)))
            results[-1]["annotated"] = str(target)
    if as_json:
        out.print_json(json.dumps({"model_id": recognizer.model_id, "backend": chosen, "results": results}))
        return
    threshold = recognizer.unknown_threshold(chosen)
    score = "confidence" if chosen == "model" else "similarity"
    table = Table("image", "face (x, y, w, h)", "identity", score, "other candidates",
                  title=f"model {recognizer.model_id}, {chosen} backend; unknown below {threshold:.3f}")
    for result in results:
        if not result["faces"]:
            table.add_row(Text(result["image"]), "-", "no face found", "", "")
        for face in result["faces"]:
            b = face["box"]
            others = ", ".join(f"{c['identity']} {c['confidence']:.3f}" for c in face["candidates"][1:])
            table.add_row(
                Text(result["image"]), f"{b['x']}, {b['y']}, {b['width']}, {b['height']}",
                Text(face["identity"] or "unknown"), f"{face['confidence']:.3f}", Text(others),
            )
    out.print(table)
    for result in results:
        if "annotated" in result:
            out.print(Text(f"annotated: {result['annotated']}"))


@app.command("verify")
def verify_cmd(
    ctx: typer.Context,
    images: Annotated[list[Path], typer.Argument(help="two photos (same person?), or one with --identity")],
    identity: Annotated[
        str | None, typer.Option("--identity", "-i", help="check one photo against this enrolled identity")
    ] = None,
    backend: BackendOption = None,
    model: ModelOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Are two photos the same person, or is a photo the enrolled identity? (similarity, decision, threshold)"""
    state = _state(ctx)
    asked = _maybe_backend(backend)
    if identity is None and len(images) != 2:
        raise FacescaleError("give two photos to compare, or one photo and --identity NAME")
    if identity is not None and len(images) != 1:
        raise FacescaleError("with --identity, give exactly one photo")
    photos = [_photo(p, state) for p in images]  # bad input fails before any model work
    recognizer = _recognizer(state, model)
    if identity is None:
        result = recognizer.verify_pair(photos[0], photos[1], asked)
        what = f"{images[0]} vs {images[1]}"
    else:
        result = recognizer.verify_identity(photos[0], identity, asked)
        what = f"{images[0]} vs {result['identity']} ({result['enrolled_photos']} enrolled photos)"
    result["model_id"] = recognizer.model_id
    if as_json:
        out.print_json(json.dumps(result))
        return
    verdict = "same person" if result["same"] else "different people"
    out.print(
        Text(
            f"{what}: {verdict} (similarity {result['similarity']:.4f}, threshold {result['threshold']:.4f}, "
            f"{result['backend']} backend, model {result['model_id']})"
        )
    )


@app.command("calibrate")
def calibrate_cmd(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(metavar="MODEL", help="registered model id, or 'latest'")] = "latest",
    unseen: Annotated[
        Path | None,
        typer.Option(help="a folder of people the model never saw (one sub-folder each, e.g. lfw-dev): "
                     "pairs accuracy on them, and strangers for the unknown threshold"),
    ] = None,
    gallery: Annotated[
        int | None,
        typer.Option(min=1, help="enrolled training photos per identity (default: serving.gallery_per_identity)"),
    ] = None,
    max_pairs: Annotated[
        int | None, typer.Option(min=10, help="validation pairs per backend (default: serving.calibration_pairs)")
    ] = None,
    unseen_identities: Annotated[int, typer.Option(min=2, help="at most this many unseen people")] = 200,
    backends: Annotated[str, typer.Option(help="comma-separated backends to calibrate")] = "model,dlib",
) -> None:
    """Calibrate a model again: thresholds, enrolment, the default backend, and the report (stored with it).

    A model is calibrated when it is registered; this measures it again (other settings, or
    a folder of strangers for the unknown thresholds and the unseen-pairs report).
    """
    state = _state(ctx)
    chosen = [_backend(b.strip()) for b in backends.split(",") if b.strip()]
    state.tensorflow()
    calibration = state.services.calibrate_model(
        model, backends=chosen, gallery_per_identity=gallery, max_pairs=max_pairs, unseen=unseen,
        unseen_identities=unseen_identities, progress=lambda line: err.print(Text(line)),
    )
    report = calibration.report
    table = Table("backend", "check", "pairs", "threshold", "accuracy", "precision", "recall", "ROC AUC",
                  title=f"model {calibration.model_id}: verification")
    for backend, entry in report["backends"].items():
        for check in ("pairs", "identity", "unseen_pairs"):
            if check in entry:
                m = entry[check]
                table.add_row(backend, {"pairs": "val pairs", "identity": "val vs templates",
                                        "unseen_pairs": "unseen people"}[check],
                              str(m["pairs"]), _fmt(m["threshold"]), _fmt(m["accuracy"]), _fmt(m["precision"]),
                              _fmt(m["recall"]), _fmt(m["roc_auc"]))
    out.print(table)
    ident = Table("backend", "val top-1", "right at threshold", "unknown below", "strangers refused", "strangers",
                  title=f"model {calibration.model_id}: identification (validation photos)")
    for backend, entry in report["identify"].items():
        ident.add_row(
            backend + (" (default)" if backend == calibration.default_backend else ""), _fmt(entry.get("val_top1")),
            _fmt(entry.get("answered_right")), _fmt(calibration.unknown_thresholds[backend]),
            _fmt(entry.get("strangers_refused")), str(entry.get("strangers", 0)),
        )
    out.print(ident)


@benchmark_app.command("lfw")
def benchmark_lfw(
    ctx: typer.Context,
    pairs_file: Annotated[Path, typer.Argument(metavar="PAIRS_FILE", help="pairs in LFW's pairs.txt format")],
    images_dir: Annotated[Path, typer.Argument(metavar="IMAGES_DIR", help="IMAGES_DIR/Name/Name_NNNN.jpg")],
    model: ModelOption = None,
    backend: Annotated[str, typer.Option("--backend", "-b", help="model, dlib or all")] = "all",
    face: Annotated[
        str, typer.Option(help="centre: the face nearest the image centre (LFW-style photos); single: the API's rule")
    ] = "centre",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """LFW verification (View 2): per fold a threshold from the other folds; accuracy, ROC AUC, coverage."""
    from facescale.pipeline.faces import CropParams
    from facescale.serving.benchmark import Embed, FaceChoice, read_pairs, run_benchmark
    from facescale.serving.loading import crop_params, image_limits
    from facescale.serving.recognizer import DlibEmbedder, FaceFinder

    state = _state(ctx)
    if backend not in ("model", "dlib", "all"):
        raise FacescaleError(f"unknown backend {backend!r}: use model, dlib or all")
    if face not in ("centre", "single"):
        raise FacescaleError(f"unknown face choice {face!r}: use centre or single")
    pairs = read_pairs(pairs_file)  # a bad file fails before any model work
    if not images_dir.is_dir():
        raise FacescaleError(f"images folder not found: {images_dir}")
    embedders: dict[Backend, Embed] = {}
    model_id = None
    params: CropParams
    if backend in ("model", "all"):
        recognizer = _recognizer(state, model)
        model_id, params = recognizer.model_id, recognizer.crop_params
        embedders["model"] = lambda crops: recognizer.embed(crops, "model")
    elif model is not None:  # dlib on the crops of that model's dataset version
        record = state.services.models().resolve(model)
        model_id, params = record.model_id, crop_params(state.services.datasets(), record.version_id)
    else:
        from facescale.pipeline.curate import crop_params as curation_crop

        params = curation_crop(state.settings.curation)
    if backend in ("dlib", "all"):
        embedders["dlib"] = DlibEmbedder(params).embed
    photos = len(pairs.photos())
    with Progress(console=err, transient=True, disable=not err.is_terminal) as progress:
        task = progress.add_task(f"photos of {len(pairs.pairs)} pairs", total=photos)
        result = run_benchmark(
            pairs, images_dir, FaceFinder(params), embedders, face=cast("FaceChoice", face),
            limits=image_limits(state.settings.serving), model_id=model_id, pairs_name=str(pairs_file),
            progress=lambda done: progress.update(task, completed=done),
        )
    if as_json:
        out.print_json(json.dumps(result.to_json()))
        return
    table = Table("backend", "accuracy (mean +- std)", "std. error", "on scored pairs", "ROC AUC", "coverage",
                  title=f"LFW View 2: {pairs.folds} folds x {2 * pairs.per_fold} pairs, {photos} photos, "
                        f"face: {face}" + (f", model {model_id}" if model_id else ""))
    for name, r in result.backends.items():
        table.add_row(name, f"{r.accuracy_mean:.4f} +- {r.accuracy_std:.4f}", f"{r.accuracy_sem:.4f}",
                      f"{r.scored_accuracy:.4f}", _fmt(r.roc_auc), f"{r.coverage:.4f}")
    out.print(table)
    reasons = Counter(result.no_face.values())
    for name, r in result.backends.items():
        if r.failed:
            reasons[f"{name}: no embedding"] = len(r.failed)
    if reasons:
        listed = ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items()))
        out.print(Text(f"photos that count as errors in their pairs: {listed} (--json lists them)"))


@benchmark_app.command("lfw-pairs")
def benchmark_lfw_pairs(
    ctx: typer.Context,
    images_dir: Annotated[Path, typer.Argument(metavar="IMAGES_DIR", help="IMAGES_DIR/Name/Name_NNNN.jpg")],
    out_file: Annotated[Path, typer.Argument(metavar="OUT", help="the pairs file to write")],
    folds: Annotated[int, typer.Option(min=2, help="folds (LFW: 10), disjoint in people")] = 10,
    pairs: Annotated[int, typer.Option(min=1, help="matched and mismatched pairs per fold (LFW: 300)")] = 300,
    seed: Annotated[int, typer.Option(min=0)] = 0,
    unseen_by: Annotated[
        str | None, typer.Option(help="leave out every person of this model's dataset version (id or 'latest')")
    ] = None,
) -> None:
    """Write a View 2 style pairs file (LFW's pairs.txt format) from a folder of people."""
    from facescale.serving.benchmark import make_pairs
    from facescale.storage.fs import local_atomic_path

    state = _state(ctx)
    exclude: list[str] = []
    if unseen_by is not None:
        record = state.services.models().resolve(unseen_by)
        exclude = [i.name for i in state.services.datasets().get(record.version_id).identities]
    made = make_pairs(images_dir, folds, pairs, seed=seed, exclude=exclude)
    with local_atomic_path(out_file) as tmp:
        Path(tmp).write_text(made.text(), encoding="utf-8")
    people = len({p.name for p in made.photos()})
    left = f", {len(exclude)} people of model {unseen_by} left out" if unseen_by else ""
    out.print(Text(f"wrote {out_file}: {folds} folds x {2 * pairs} pairs, {people} people, "
                   f"{len(made.photos())} photos{left}"))


@app.command("serve")
def serve_cmd(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="interface (default: serving.host)")] = None,
    port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="port (default: serving.port; 0: any free)")
    ] = None,
    model: ModelOption = None,
) -> None:
    """Serve the identify / verify HTTP API and its web page (follows newly registered models)."""
    state = _state(ctx)
    state.tensorflow()
    from facescale.serving.server import run

    settings = state.settings.serving
    updates = {"host": host, "port": port, "model": model}
    settings = settings.model_copy(update={k: v for k, v in updates.items() if v is not None})
    run(state.services.models(), state.services.datasets(), settings)


@app.command("demo-web")
def demo_web(
    photos: Annotated[Path, typer.Argument(help="a folder with one sub-folder of photos per person (e.g. lfw-dev)")],
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="0 picks a free port")] = 8080,
    hostile: Annotated[bool, typer.Option(help="mix broken and malicious URLs into every result list")] = False,
    seed: Annotated[int, typer.Option(help="varies which trouble images each name gets")] = 0,
) -> None:
    """Serve the local demo image-search site (for the demo engine, tests and people)."""
    from facescale.demoweb import serve

    if not photos.is_dir():
        raise FacescaleError(f"not a directory: {photos}")
    serve(photos, host=host, port=port, hostile=hostile, seed=seed)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning expected errors into one line and exit status 2."""
    try:
        # Typer (>= 0.23) runs on its own copy of click: its usage errors, Abort and Exit
        # are typer's classes, not the `click` package's.
        status = app(args=argv, standalone_mode=False)
    except FacescaleError as exc:
        # One line, and the message is text, not rich markup (names may hold "[...]").
        message = " ".join(str(exc).split("\n")) or type(exc).__name__
        err.print(Text.assemble(("error:", "red"), " ", message), highlight=False, soft_wrap=True)
        return exc.exit_code
    except ModuleNotFoundError as exc:
        extra = missing_extra(sys.argv[1:] if argv is None else argv, exc.name)
        if extra is None:
            raise
        message = (
            f"this command needs the '{extra}' extra (no module named {exc.name!r}): "
            f"pip install 'facescale[{extra}]'"
        )
        err.print(Text.assemble(("error:", "red"), " ", message), highlight=False, soft_wrap=True)
        return 2
    except typer.Abort:
        err.print("aborted")
        return 130
    except typer.Exit as exc:
        return exc.exit_code
    except typer.TyperException as exc:  # usage errors: usage line, hint and message
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            err.print(Text(f"error: {exc.format_message()}"), highlight=False, soft_wrap=True)
        return exc.exit_code
    # Without standalone mode an Exit raised inside (e.g. by --help) comes back as its code.
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
