"""Every third-party module the project imports is declared in pyproject.toml.

A package installed by hand on a developer's (or CI's) machine makes tests pass there and fail on
a fresh one. Runtime code (the packages, minus the training recipes) may use only
``[project.dependencies]``; the recipes may also use the ``recipes`` extra; tests and benches
also the ``test`` extra. Imports are read with ast, at module level and inside functions alike,
and mapped to the distributions that provide them in this environment.
"""
from __future__ import annotations

import ast
import functools
import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
OWN = ({p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()} | {"bench", "tests"}
       | {p.stem for d in ("tests", "bench") for p in (ROOT / d).glob("*.py")})
RECIPES = ("engine/recipes",)
# the parts that run against a Triton server, which need the ``triton`` extra
TRITON = ("bridge/triton_engine.py",)
# modules the host process provides, not a distribution: Triton's Python backend gives its
# models triton_python_backend_utils
HOST_PROVIDED = {"triton_python_backend_utils"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(req: str) -> tuple[str, list[str]]:
    """``"barforge[recipes]>=1; marker"`` -> ("barforge", ["recipes"])."""
    m = re.match(r"\s*([A-Za-z0-9_.-]+)\s*(?:\[([^\]]*)\])?", req)
    assert m, f"unreadable requirement {req!r}"
    return _norm(m.group(1)), [e.strip() for e in (m.group(2) or "").split(",") if e.strip()]


def declared(pyproject: dict, extras: tuple[str, ...]) -> set[str]:
    """Distributions named by the dependencies plus the given extras (self-references expanded)."""
    project = pyproject["project"]
    own = _norm(project["name"])
    names: set[str] = set()
    todo = list(project.get("dependencies", []))
    for extra in extras:
        todo += project.get("optional-dependencies", {}).get(extra, [])
    seen_extras = set(extras)
    while todo:
        name, sub = _requirement_name(todo.pop())
        if name == own:
            for extra in set(sub) - seen_extras:
                seen_extras.add(extra)
                todo += project["optional-dependencies"][extra]
        else:
            names.add(name)
    return names


def imported_modules(paths: list[Path]) -> dict[str, set[str]]:
    """Top-level third-party modules imported by the .py files under ``paths`` -> files."""
    found: dict[str, set[str]] = {}
    for root in paths:
        for path in sorted(root.rglob("*.py")) if root.is_dir() else [root]:
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [n.name for n in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in OWN | HOST_PROVIDED \
                            and top != "__future__":
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


@functools.cache
def _providers() -> dict[str, list[str]]:
    return md.packages_distributions()


def undeclared(pyproject: dict, paths: list[Path], extras: tuple[str, ...]) -> list[str]:
    """One line per imported module whose distribution is not declared (or not installed)."""
    allowed = declared(pyproject, extras)
    providers = _providers()
    bad = []
    for module, files in sorted(imported_modules(paths).items()):
        dists = {_norm(d) for d in providers.get(module, [])}
        if not dists & allowed:
            where = ", ".join(sorted(files)[:3])
            bad.append(f"{module} (from {sorted(dists) or 'no installed distribution'}) "
                       f"imported in {where}")
    return bad


def _runtime_files() -> list[Path]:
    files = []
    for package in ("engine", "bridge", "export", "plugin_host"):
        files += [p for p in (ROOT / package).rglob("*.py")
                  if not str(p.relative_to(ROOT)).startswith(RECIPES + TRITON)]
    return files


SCOPES = {
    "runtime": (_runtime_files, ()),
    "recipes": (lambda: [ROOT / r for r in RECIPES], ("recipes",)),
    "triton": (lambda: [ROOT / t for t in TRITON], ("triton",)),
    "tests and benches": (lambda: [ROOT / "tests", ROOT / "bench"], ("test",)),
}


@pytest.mark.parametrize("scope", SCOPES)
def test_every_import_is_declared(scope: str) -> None:
    files, extras = SCOPES[scope]
    assert undeclared(PYPROJECT, files(), extras) == []


def test_removing_a_dependency_line_is_caught() -> None:
    """The check is live: drop each runtime dependency in turn that runtime code imports."""
    deps = PYPROJECT["project"]["dependencies"]
    imported = imported_modules(_runtime_files())
    providers = _providers()
    used = {_norm(d) for m in imported for d in providers.get(m, [])}
    checked = 0
    for i, req in enumerate(deps):
        name, _ = _requirement_name(req)
        if name not in used or any(_requirement_name(r)[0] == name for r in deps[:i] + deps[i + 1:]):
            continue
        project = dict(PYPROJECT["project"], dependencies=deps[:i] + deps[i + 1:])
        assert undeclared({"project": project}, _runtime_files(), ()), f"removing {req!r} went unnoticed"
        checked += 1
    assert checked >= 8    # torch, numpy, onnx, soundfile, transformers, tokenizers, MiniLM, ...
