"""The project builds as a wheel without setuptools warnings, with its package data inside."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# setuptools' own warning classes (pip shows a backend's output only with -v)
SETUPTOOLS_WARNING = re.compile(r"(BuildBackendWarning|SetuptoolsDeprecationWarning|SetuptoolsWarning)")


def test_wheel_builds_without_setuptools_warnings_and_ships_the_web_page(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(tmp_path), str(REPO)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    warnings = [line for line in (proc.stdout + proc.stderr).splitlines() if SETUPTOOLS_WARNING.search(line)]
    assert warnings == []
    (wheel,) = tmp_path.glob("facescale-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "facescale/serving/static/index.html" in names
    assert "facescale/app/review/templates/queue.html" in names  # the review view's pages
    assert {"facescale/app/cli/__init__.py", "facescale/storage/fs.py", "facescale/training/train.py"} <= names
