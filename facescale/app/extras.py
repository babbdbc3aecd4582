"""Which extra installs a role's libraries: a command run without its extra says what to install.

pyproject.toml groups the dependencies by role (``scrape``, ``curate``, ``train``, ``serve``,
``airflow``, ``demo``; ``all`` is every role). `facescale.app.cli.main` turns the
`ModuleNotFoundError` of a role library into one line naming the extra, from the command
that was run or, failing that, the library that is missing.
"""

from __future__ import annotations

from collections.abc import Sequence

COMMAND_EXTRAS = {
    "scrape": "scrape",
    "ingest": "scrape",
    "curate": "curate",
    "validate": "curate",
    "train": "train",
    "evaluate": "train",
    "identify": "serve",
    "verify": "serve",
    "calibrate": "serve",
    "serve": "serve",
    "demo-web": "demo",
}
LIBRARY_EXTRAS = {
    "selenium": "scrape",
    "tenacity": "scrape",
    "psutil": "scrape",
    "ray": "curate",
    "cv2": "curate",
    "dlib": "curate",
    "face_recognition_models": "curate",
    "imagehash": "curate",
    "scipy": "curate",
    "great_expectations": "curate",
    "tensorflow": "train",
    "keras": "train",
    "matplotlib": "train",
    "fastapi": "serve",
    "uvicorn": "serve",
    "sklearn": "serve",
    "multipart": "serve",
    "airflow": "airflow",
}


def missing_extra(args: Sequence[str], module: str | None) -> str | None:
    """The extra that installs ``module`` for the command in ``args``; None when ``module`` is not a role library."""
    top = (module or "").split(".")[0]
    library = LIBRARY_EXTRAS.get(top)
    command = next((COMMAND_EXTRAS[a] for a in args if a in COMMAND_EXTRAS), None)
    if library is None and (command is None or top not in ("PIL", "aiohttp", "uvloop")):
        return None  # not a role library: a real bug, shown as a traceback
    return command or library
