"""`facescale identities` and `facescale exclusions`: the identity registry and the curation exclusion list."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from facescale.errors import FacescaleError

from .app import IdentityArg, ImageIdsArg, state_of
from .render import out

identities_app = typer.Typer(help="The identity registry (names, slugs, stable labels).", no_args_is_help=True)
exclusions_app = typer.Typer(
    help="The curation exclusion list: photos later versions leave out, or keep after review.", no_args_is_help=True
)


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
    for identity, changed in state_of(ctx).services.registry().add(wanted):
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
    identities = state_of(ctx).services.registry().list(include_removed=include_removed)
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
    for identity in state_of(ctx).services.registry().remove(names):
        out.print(Text(f"removed {identity.label:>5}  {identity.slug}  {identity.name}"))


@exclusions_app.command("list")
def exclusions_list(
    ctx: typer.Context,
    identity: Annotated[str | None, typer.Argument(help="only this identity (name or slug)")] = None,
) -> None:
    """Show the exclusion list (automatic wrong-person removals and manual decisions)."""
    state = state_of(ctx)
    slug = state.services.registry().get(identity).slug if identity else None
    entries = [e for e in state.services.exclusions().load() if slug is None or e.identity_slug == slug]
    if not entries:
        out.print("no exclusions")
        return
    table = Table("identity", "source image id", "reason", "source", "by", "added (UTC)")
    for e in entries:
        table.add_row(e.identity_slug, e.source_image_id, e.reason, e.source, e.added_by or "-",
                      e.added_at.strftime("%Y-%m-%d %H:%M"))
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

    state = state_of(ctx)
    slug = state.services.registry().get(identity).slug
    if reason == "reviewed_keep":
        raise FacescaleError("use `facescale exclusions keep` to keep a photo")
    entries = [Exclusion(identity_slug=slug, source_image_id=i, reason=reason, source="manual", added_by=_user())
               for i in image_ids]
    changed = state.services.exclusions().add(entries)
    out.print(f"{len(changed)} of {len(entries)} photos newly excluded from {slug}; run `facescale curate` to apply")


@exclusions_app.command("keep")
def exclusions_keep(ctx: typer.Context, identity: IdentityArg, image_ids: ImageIdsArg) -> None:
    """Mark photos as reviewed and kept: the automatic cleaner will not remove them again."""
    state = state_of(ctx)
    slug = state.services.registry().get(identity).slug
    changed = state.services.exclusions().keep(slug, image_ids, by=_user())
    out.print(f"{len(changed)} of {len(image_ids)} photos marked reviewed-and-kept for {slug}")


@exclusions_app.command("undo")
def exclusions_undo(ctx: typer.Context, identity: IdentityArg, image_ids: ImageIdsArg) -> None:
    """Take back the manual decision (keep or exclude) on these photos: the entry it replaced comes back."""
    state = state_of(ctx)
    slug = state.services.registry().get(identity).slug
    for image_id in image_ids:
        now = state.services.exclusions().undo(slug, image_id)
        out.print(f"{image_id}: " + ("no entry left" if now is None else f"back to {now.reason} ({now.source})"))


def _user() -> str | None:
    """Who runs the command, for the entries they add (the OS user)."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid (a bare container)
        return None


@exclusions_app.command("remove")
def exclusions_remove(ctx: typer.Context, identity: IdentityArg, image_ids: ImageIdsArg) -> None:
    """Forget the entries of these photos (the cleaner decides about them again)."""
    state = state_of(ctx)
    slug = state.services.registry().get(identity).slug
    removed = state.services.exclusions().remove(slug, image_ids)
    out.print(f"{len(removed)} entries removed for {slug}")
