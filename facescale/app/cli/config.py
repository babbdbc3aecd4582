"""`facescale config`: the effective configuration."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
import yaml

from facescale.config import config_path

from .app import state_of
from .render import out

config_app = typer.Typer(help="Show the effective configuration.", no_args_is_help=True)


@config_app.command("show")
def config_show(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of YAML")] = False,
) -> None:
    """Print the effective configuration (defaults < YAML file < FACESCALE_* environment)."""
    state = state_of(ctx)
    data = state.settings.dump()
    source = config_path(state.config_file)
    if as_json:
        out.print_json(json.dumps(data))
        return
    sys.stdout.write(f"# config file: {source or 'none (defaults + environment)'}\n")
    sys.stdout.write(yaml.safe_dump(data, sort_keys=False))
