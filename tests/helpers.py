"""What several test packages share: running the CLI in this process and its failure contract.

Fixtures built on these live in tests/conftest.py (`cli`); import the helpers themselves
relatively (``from .helpers import Result``, ``from ..helpers import Result``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import astuple, dataclass
from typing import Any

import pytest

from facescale.cli import main


@dataclass
class Result:
    """One CLI run: exit code, standard output, standard error."""

    code: int
    out: str
    err: str

    def __iter__(self) -> Iterator[Any]:
        """``code, out, err = run_cli(...)``."""
        return iter(astuple(self))

    def single_error_line(self) -> str:
        """Assert the failure contract (non-zero, no traceback, one ``error: ...`` line) and return that line."""
        assert self.code != 0
        assert "Traceback" not in self.out + self.err
        lines = self.err.splitlines()
        assert len(lines) == 1, self.err
        assert lines[0].startswith("error: ")
        return lines[0]


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    """`facescale.cli.main` in this process (the console script's code path), its output captured."""
    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)
