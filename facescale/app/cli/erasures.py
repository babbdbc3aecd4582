"""`facescale identities erase`, `facescale photos erase` and `facescale erasures`: erasing people and photos."""

from __future__ import annotations

import getpass
import json
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from facescale.errors import FacescaleError

from .app import IdentityArg, state_of
from .identities import identities_app
from .render import out

photos_app = typer.Typer(help="Single photos: erase them from every store.", no_args_is_help=True)
erasures_app = typer.Typer(help="Erasures on record: list them, verify that nothing is left.", no_args_is_help=True)

ByOption = Annotated[str | None, typer.Option("--by", help="who asked (default: the user running the command)")]
ReasonOption = Annotated[str, typer.Option("--reason", help="why, e.g. 'takedown request #123'")]


def _by(value: str | None) -> str:
    if value is not None and value.strip():
        return value.strip()
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _report(record: object) -> None:
    from facescale.storage.erasures import ErasureRecord

    assert isinstance(record, ErasureRecord)
    removed = ", ".join(f"{k} {v}" for k, v in record.removed.items()) or "nothing stored"
    out.print(Text(f"erased ({record.erasure_id}): {len(record.found.image_ids)} photos; removed: {removed}"))
    if record.found.models:
        out.print(Text(f"models to retrain (marked): {', '.join(record.found.models)}"))
    for export in record.found.exports:
        out.print(Text(f"an export outside the store holds them: {export.get('destination')} "
                       f"(version {export.get('version_id')}, {export.get('format')}): erase it there"))


@identities_app.command("erase")
def identities_erase(ctx: typer.Context, identity: IdentityArg, by: ByOption = None,
                     reason: ReasonOption = "erasure request") -> None:
    """Erase a person from every store: photos, crops, embeddings, every version, enrolled galleries."""
    state = state_of(ctx)
    record = state.services.erase_identity(identity, requested_by=_by(by), reason=reason,
                                           on_step=lambda step: out.print(f"erasing: {step}"))
    _report(record)


@photos_app.command("erase")
def photos_erase(
    ctx: typer.Context,
    refs: Annotated[list[str], typer.Argument(metavar="ID|URL...", help="image ids (sha256) or source URLs")],
    by: ByOption = None,
    reason: ReasonOption = "erasure request",
) -> None:
    """Erase single photos (by image id or source URL) from every store."""
    state = state_of(ctx)
    record = state.services.erase_photos(refs, requested_by=_by(by), reason=reason,
                                         on_step=lambda step: out.print(f"erasing: {step}"))
    _report(record)


@erasures_app.command("list")
def erasures_list(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every erasure on record: when, who asked, why, what it removed."""
    records = state_of(ctx).services.root().erasures.list()
    if as_json:
        out.print_json(json.dumps([r.model_dump(mode="json") for r in records]))
        return
    if not records:
        out.print("no erasures")
        return
    table = Table("erasure", "kind", "status", "requested by", "reason", "photos", "removed")
    for r in records:
        removed = ", ".join(f"{k} {v}" for k, v in r.removed.items())
        table.add_row(r.erasure_id, r.target.kind, r.status, Text(r.requested_by), Text(r.reason),
                      str(len(r.found.image_ids)), removed)
    out.print(table)


@erasures_app.command("verify")
def erasures_verify(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(metavar="NAME|ID|URL", help="a person's name, an image id, a URL or an "
                                       "erasure id")],
) -> None:
    """Scan every store for what an erasure removed (image sha256s, perceptual keys, embeddings, the name).

    Exits 1 when anything is found.
    """
    left = 0
    for record, hits in state_of(ctx).services.verify_erasure(ref):
        found = {k: v for k, v in hits.items() if v}
        left += sum(found.values())
        verdict = "nothing left" if not found else ", ".join(f"{k}: {v}" for k, v in found.items())
        out.print(Text(f"{record.erasure_id} ({record.status}, {len(hits)} places scanned): {verdict}"))
    if left:
        raise FacescaleError(f"{left} leftovers of an erasure found: run the erasure again") from None
