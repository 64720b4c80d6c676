"""Layers import downward only (docs/ARCHITECTURE.md): checked on the source, not by convention."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> top-level packages of ours it must never import
FORBIDDEN = {
    "engine": {"bridge", "export", "plugin_host"},
    "plugin_host": {"engine", "bridge", "export"},
    "export": {"bridge", "plugin_host"},
    "bridge": {"export"},
}


def imported_top_levels(path: Path) -> set[str]:
    """Top-level module names imported anywhere in a file (lazy imports inside functions too)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_lower_layers(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no Python files under {package}/"
    offenders = {
        str(f.relative_to(ROOT)): sorted(imported_top_levels(f) & FORBIDDEN[package]) for f in files
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"{package}/ imports layers above it: {offenders}"


def test_checker_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from bridge.server import Bridge\n    return Bridge\n")
    assert "bridge" in imported_top_levels(bad)
