"""Packages per role: each role's imports are installed by its extra, and a missing extra is named.

pyproject.toml's base holds what every role needs; ``scrape``, ``curate``, ``train``,
``serve``, ``airflow`` and ``demo`` add a role's libraries. A role package may import
(anywhere, lazily too) only libraries its extra installs, directly or through their own
requirements, as this environment's metadata resolves them; the core modules
(facescale/*.py, and the top floor facescale/app/) import only the base at module level. A command run without its extra
fails with one line naming the extra to install.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import importlib.util
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
# role folder -> the extra that installs what it imports ("" = the base)
ROLES = {
    "storage": "",
    "scraper": "scrape",
    "pipeline": "curate",
    "training": "train",
    "serving": "serve",
    "demoweb": "demo",
}
# core modules whose module-level imports go beyond the base, and the extra they belong to
# modules of the core that only a role's process loads: the review view only runs inside Airflow's api-server
CORE_EXTRAS = {"app/tflog.py": "train", "app/review/plugin.py": "airflow", "app/review/web.py": "airflow"}


@cache
def _closure(extra: str) -> frozenset[str]:
    """Distributions the base plus ``extra`` install, with everything they require (this environment's metadata)."""
    project = PYPROJECT["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    pending = [extra] if extra else []
    seen_extras: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen_extras:
            continue
        seen_extras.add(name)
        for text in project["optional-dependencies"][name]:
            req = Requirement(text)
            if canonicalize_name(req.name) == "facescale":
                pending += sorted(req.extras)
            else:
                wanted.append(req)
    found: set[str] = set()
    stack = [
        (canonicalize_name(r.name), frozenset(r.extras)) for r in wanted if r.marker is None or r.marker.evaluate()
    ]
    while stack:
        name, extras = stack.pop()
        if name in found:
            continue
        found.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for text in requires:
            req = Requirement(text)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in (extras or {""})):
                stack.append((canonicalize_name(req.name), frozenset(req.extras)))
    return frozenset(found)


@cache
def _distributions(name: str) -> tuple[str, ...]:
    """The distributions that install import name ``name`` (from their file lists when top_level.txt misses it)."""
    known = md.packages_distributions().get(name)
    if known:
        return tuple(canonicalize_name(d) for d in known)
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        return ()
    origin = Path(spec.origin).resolve()
    return tuple(
        canonicalize_name(d.metadata["Name"])
        for d in md.distributions()
        if any(Path(d.locate_file(f)).resolve() == origin for f in d.files or ())
    )


def _third_party(path: Path, module_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("facescale", "__future__")}


def _missing(imports: set[str], extra: str) -> list[str]:
    installed = _closure(extra)
    return sorted(
        f"{name} ({', '.join(_distributions(name)) or 'not installed'})"
        for name in imports
        if not set(_distributions(name)) & installed
    )


@pytest.mark.parametrize("folder", sorted(ROLES))
def test_a_role_imports_only_what_its_extra_installs(folder: str) -> None:
    extra = ROLES[folder]
    bad = {
        str(path.relative_to(REPO)): missing
        for path in sorted((REPO / folder).rglob("*.py"))
        if (missing := _missing(_third_party(path, module_level_only=False), extra))
    }
    assert not bad, f"{folder}/ imports what facescale[{extra}] does not install: {bad}"


def test_the_core_imports_only_the_base_at_module_level() -> None:
    core = REPO / "facescale"
    names = sorted(str(p.relative_to(core)) for p in [*core.glob("*.py"), *(core / "app").rglob("*.py")])
    bad = {
        name: missing
        for name in names
        if (missing := _missing(_third_party(core / name, module_level_only=True), CORE_EXTRAS.get(name, "")))
    }
    assert not bad, f"facescale/*.py and facescale/app/ import beyond the base at module level: {bad}"


def test_every_role_extra_is_in_all() -> None:
    (all_req,) = (Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"]["all"])
    assert set(all_req.extras) == {"scrape", "curate", "train", "serve", "airflow", "demo"}


@pytest.mark.parametrize(
    ("blocked", "args", "extra"),
    [
        ("cv2", ["curate"], "curate"),
        ("tensorflow", ["train"], "train"),
        ("selenium", ["scrape", "--identity", "Ada Lovelace"], "scrape"),
        ("fastapi", ["serve"], "serve"),
        ("aiohttp", ["demo-web", "."], "demo"),
    ],
)
def test_a_command_without_its_extra_names_the_extra(tmp_path: Path, blocked: str, args: list[str], extra: str) -> None:
    """The library is made unimportable (``sys.modules[name] = None``), as if its extra were not installed."""
    code = (
        f"import sys; sys.modules[{blocked!r}] = None\n"
        "from facescale.app.cli import main\n"
        f"sys.exit(main({args!r}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "FACESCALE_STORAGE__ROOT": str(tmp_path / "data"), "NO_COLOR": "1"},
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith("error: ") and f"facescale[{extra}]" in line and blocked in line
