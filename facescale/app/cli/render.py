"""What the commands print with: the two consoles and the formatting shared by several command groups."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.text import Text

from facescale.storage import ValidationSummary

out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)


def fmt(value: object, digits: int = 4) -> str:
    """A table cell: ``-`` for None, floats to ``digits`` places."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def status(manifest: object) -> str:
    """A version's publication state in words."""
    validation = getattr(manifest, "validation", None)
    if getattr(manifest, "published", False):
        return "published"
    if validation is not None and not validation.success:
        return "validation failed"
    return "not validated"


def print_validation(summary: ValidationSummary | None, version_dir: str) -> None:
    """The Great Expectations gate's outcome, its failures and where its Data Docs are."""
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


def backend_line(calibration: dict[str, Any]) -> Text:
    """The calibration's default backend and what each backend measured on the validation photos."""
    identify = calibration["report"].get("identify", {})
    scores = ", ".join(f"{name} {entry.get('answered_right', 0):.3f}" for name, entry in identify.items())
    return Text(f"{calibration.get('default_backend', 'model')} (validation photos identified right: {scores})")
