"""`facescale config`: the effective configuration."""

from __future__ import annotations

import json
import re
import sys
from typing import Annotated, Any

import typer
import yaml

from facescale.config import config_path

from .app import state_of
from .render import out

#: Keys whose values `config show` never prints (e.g. storage_options' S3 key and secret).
SECRET_KEYS = frozenset({"key", "secret", "password", "token", "aws_access_key_id", "aws_secret_access_key",
                         "session_token", "aws_session_token"})
_USERINFO = re.compile(r"(?<=://)([^:/@]+):[^@/]+@")


def redacted(data: Any) -> Any:
    """The settings as `config show` prints them: secret values and the passwords in URLs masked."""
    if isinstance(data, dict):
        return {k: "**********" if k in SECRET_KEYS and v else redacted(v) for k, v in data.items()}
    if isinstance(data, list):
        return [redacted(v) for v in data]
    if isinstance(data, str):
        return _USERINFO.sub(r"\1:**********@", data)
    return data


config_app = typer.Typer(help="Show the effective configuration.", no_args_is_help=True)


@config_app.command("show")
def config_show(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of YAML")] = False,
) -> None:
    """Print the effective configuration (defaults < YAML file < FACESCALE_* environment)."""
    state = state_of(ctx)
    data = redacted(state.settings.dump())
    source = config_path(state.config_file)
    if as_json:
        out.print_json(json.dumps(data))
        return
    sys.stdout.write(f"# config file: {source or 'none (defaults + environment)'}\n")
    sys.stdout.write(yaml.safe_dump(data, sort_keys=False))
