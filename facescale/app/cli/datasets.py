"""`facescale datasets`: CURATED versions, their cards, exports, differences and growth."""

from __future__ import annotations

import json
from typing import Annotated, Any, cast

import typer
from rich.progress import Progress, track
from rich.table import Table
from rich.text import Text

from facescale.errors import FacescaleError

from .app import VersionArg, state_of
from .render import err, out, status

datasets_app = typer.Typer(help="CURATED dataset versions.", no_args_is_help=True)


@datasets_app.command("list")
def datasets_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List committed dataset versions, oldest first."""
    manifests = state_of(ctx).services.datasets().list()
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
            status(m),
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
    services = state_of(ctx).services
    store = services.datasets()
    manifest = store.get(services.resolve_version(version_id, published_only=False))
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
    out.print(f"[bold]{manifest.version_id}[/]  {status(manifest)}")
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


@datasets_app.command("card")
def datasets_card(ctx: typer.Context, version_id: VersionArg) -> None:
    """Write (again) a version's dataset card, README.md in its directory, from its records."""
    services = state_of(ctx).services
    store = services.datasets()
    path = store.write_card(store.get(services.resolve_version(version_id, published_only=False)))
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

    state = state_of(ctx)
    store = state.services.datasets()
    version_id = state.services.resolve_version(version_id)
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

    services = state_of(ctx).services
    store = services.datasets()
    before, after = (services.resolve_version(v, published_only=False) for v in (before, after))
    diff = diff_versions(store, before, after, services.exclusions())
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

    out.print(Text(write_growth(state_of(ctx).services.datasets())))


