"""The dependency direction of docs/ARCHITECTURE.md, enforced on the source tree.

storage imports nothing of ours (but facescale.errors); stages import storage and config;
serving may also load models from training and use the pipeline's face detector and
pretrained embedder (faces are found and cropped as the dataset's were); training may use
curation's near-duplicate rule; the CLI wires everything; dags import
everything and nothing imports dags.
"""

from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# directory -> the import name it installs as
PACKAGES = {
    "facescale": "facescale",
    "storage": "facescale.storage",
    "scraper": "facescale.scraper",
    "pipeline": "facescale.pipeline",
    "training": "facescale.training",
    "serving": "facescale.serving",
    "demoweb": "facescale.demoweb",
}
BASE = {"facescale.errors"}
STAGE = BASE | {"facescale.storage", "facescale.config"}
# importer (longest prefix wins) -> our modules it may import (prefixes)
ALLOWED: dict[str, set[str]] = {
    "facescale.errors": set(),
    "facescale.config": BASE,
    "facescale": set(),  # facescale/__init__.py imports nothing of ours
    "facescale.storage": BASE,
    "facescale.scraper": STAGE,
    "facescale.pipeline": STAGE,
    # curation's near-duplicate rule, to keep copies of held-out photos out of the teacher's extra crops
    "facescale.training": STAGE | {"facescale.pipeline.dedup", "facescale.pipeline.reasons"},
    # the detector and crop the dataset was made with, and the pretrained embedder (a backend)
    "facescale.serving": STAGE | {"facescale.training", "facescale.pipeline.faces", "facescale.pipeline.embeddings"},
    # a tool for demos, tests and benchmarks: the site and its image synthesiser, nothing of the stages
    "facescale.demoweb": BASE,
    # the top floor: the composition root (services), the DAGs' work (orchestration), the CLI; never dags
    "facescale.app": {"facescale"},
    "dags": {"facescale"},
}
HEAVY = ("tensorflow", "ray", "selenium", "cv2", "keras")


def _modules() -> list[tuple[str, Path]]:
    found = []
    for directory, name in PACKAGES.items():
        for path in sorted((REPO / directory).rglob("*.py")):
            rel = path.relative_to(REPO / directory).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            found.append((".".join([name, *parts]), path))
    for path in sorted((REPO / "dags").rglob("*.py")):
        found.append(("dags." + path.stem, path))
    return found


def _imports(module: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)
    return names


def _ours(name: str) -> bool:
    return name == "facescale" or name.startswith(("facescale.", "dags"))


def _rule(module: str) -> set[str]:
    keys = [k for k in ALLOWED if module == k or module.startswith(k + ".")]
    return ALLOWED[max(keys, key=len)]


def _allowed(importer: str, imported: str, rule: set[str]) -> bool:
    """Whether ``importer`` may import ``imported``: inside its own package, or by rule."""
    parts = importer.split(".")
    if parts[0] == "facescale" and len(parts) >= 2:  # e.g. facescale.storage.shards
        own = ".".join(parts[:2])
        if imported == own or imported.startswith(own + "."):
            return True
    return any(imported == r or imported.startswith(r + ".") for r in rule)


MODULES = _modules()


def test_every_package_has_modules() -> None:
    names = {m for m, _ in MODULES}
    for package in PACKAGES.values():
        assert package in names, f"{package} is missing its __init__.py"


@pytest.mark.parametrize(("module", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_import_direction(module: str, path: Path) -> None:
    rule = _rule(module)
    bad = sorted(
        name
        for name in _imports(module, path)
        if _ours(name)
        and not (name.startswith("dags") and module.startswith("dags"))
        and not _allowed(module, name, rule)
    )
    if not module.startswith("dags"):
        bad += sorted(n for n in _imports(module, path) if n == "dags" or n.startswith("dags."))
    assert not bad, f"{module} may not import {bad}"


def _cycle(package: str, modules: list[tuple[str, Path]]) -> list[str] | None:
    """An import circle among ``package``'s own modules (lazy imports count: they are arrows too), or None."""
    own = {m: path for m, path in modules if m.startswith(package + ".")}
    graph = {}
    for module, path in own.items():
        targets = set()
        for name in _imports(module, path):
            found = [m for m in own if name == m or name.startswith(m + ".")]
            if found:
                targets.add(max(found, key=len))
        graph[module] = targets - {module}
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        return list(exc.args[1])
    return None


@pytest.mark.parametrize("package", [p for p in PACKAGES.values() if p != "facescale"])
def test_no_import_circle_inside_a_stage(package: str) -> None:
    """Each stage's modules import each other one way: a lowest module, then the ones above it."""
    assert _cycle(package, MODULES) is None


def test_the_circle_checker_finds_a_lazy_circle(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("from .b import X\n")
    (tmp_path / "b.py").write_text("def f():\n    from .a import Y  # lazy, still an arrow\n")
    (tmp_path / "c.py").write_text("from .a import Z\n")
    modules = [(f"facescale.toy.{n}", tmp_path / f"{n}.py") for n in "abc"]
    assert set(_cycle("facescale.toy", modules) or []) == {"facescale.toy.a", "facescale.toy.b"}
    (tmp_path / "b.py").write_text("X = 1\n")
    assert _cycle("facescale.toy", modules) is None


def test_rule_checker_catches_violations(tmp_path: Path) -> None:
    """The checker itself must fail on a storage module importing a stage, or on dags."""
    bad = tmp_path / "bad.py"
    bad.write_text("from facescale.training import model\nimport dags.nightly\n")
    names = _imports("facescale.storage.bad", bad)
    rule = _rule("facescale.storage.bad")
    assert not _allowed("facescale.storage.bad", "facescale.training.model", rule)
    assert "dags.nightly" in names
    assert _allowed("facescale.storage.bad", "facescale.storage.fs", rule)
    assert not _allowed("facescale.serving.api", "facescale.pipeline.dedup", _rule("facescale.serving.api"))
    assert _allowed("facescale.serving.api", "facescale.training.artifacts", _rule("facescale.serving.api"))
    assert _allowed("facescale.serving.api", "facescale.pipeline.faces", _rule("facescale.serving.api"))


def test_storage_and_cli_import_no_heavy_libraries() -> None:
    """The storage layer and the CLI start without tensorflow, ray, selenium or cv2."""
    code = (
        "import sys, facescale.storage, facescale.app.cli, facescale.config\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
