"""The `facescale` command line: the app (`app.py`), its rendering (`render.py`), one module per command group.

Importing the package registers every module's commands on the one app and adds the groups
in the order `facescale --help` lists them; `main` runs it.
"""

from __future__ import annotations

from . import benchmark, config, datasets, erasures, growth, identities, models, serving  # noqa: F401  (serving: commands only)
from .app import app, main

for group, name in (
    (config.config_app, "config"),
    (datasets.datasets_app, "datasets"),
    (identities.identities_app, "identities"),
    (identities.exclusions_app, "exclusions"),
    (erasures.photos_app, "photos"),
    (erasures.erasures_app, "erasures"),
    (growth.runs_app, "runs"),
    (models.models_app, "models"),
    (benchmark.benchmark_app, "benchmark"),
):
    app.add_typer(group, name=name)

__all__ = ["app", "main"]
