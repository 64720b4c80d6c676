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


# ---------------------------------------------------------------- inside engine/

RECIPES = "engine.recipes"
# the recipes' stages in import order: a stage may import an earlier one, never a later one
RECIPE_STAGES = ("engine.recipes.data", "engine.recipes.training", "engine.recipes.evaluation")


def module_files(root: Path, package: str = "engine") -> dict[str, Path]:
    """Dotted module name -> file, for every module of ``package`` under ``root`` (a package is
    named by its ``__init__.py``)."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def import_graph(root: Path, package: str = "engine") -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports anywhere (lazy imports inside functions
    too). ``from pkg import name`` counts as importing ``pkg.name`` when that is a module."""
    modules = module_files(root, package)

    def known(name: str) -> str | None:   # the longest prefix of ``name`` that is a module
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            if ".".join(parts[:i]) in modules:
                return ".".join(parts[:i])
        return None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        targets: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets.update(known(alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:   # relative: from the module's package, up level - 1 packages
                    anchor = name.split(".")[: len(name.split(".")) - node.level + is_package]
                    base = ".".join(anchor + ([base] if base else []))
                targets.update(known(f"{base}.{alias.name}") or known(base) for alias in node.names)
        graph[name] = {t for t in targets if t is not None and t != name}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every group of modules that import each other, directly or round a circle (Tarjan's
    strongly connected components with more than one module, or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def runtime_to_recipe_imports(graph: dict[str, set[str]]) -> dict[str, list[str]]:
    """Runtime modules (engine/ outside engine/recipes/) that import a recipe module."""
    bad = {m: sorted(t for t in targets if _in(t, RECIPES))
           for m, targets in graph.items() if not _in(m, RECIPES)}
    return {m: t for m, t in bad.items() if t}


def recipe_imports_against_the_stages(graph: dict[str, set[str]]) -> dict[str, list[str]]:
    """Recipe modules that import a later stage (data -> training -> evaluation)."""
    def stage(module: str) -> int | None:
        return next((i for i, s in enumerate(RECIPE_STAGES) if _in(module, s)), None)

    bad = {}
    for m, targets in graph.items():
        here = stage(m)
        if here is None:
            continue
        later = sorted(t for t in targets if (s := stage(t)) is not None and s > here)
        if later:
            bad[m] = later
    return bad


# runtime room -> the rooms above it that it must never import: a loader hands over parts and
# never builds a model class; a model never loads (engine/pretrained.py assembles, api.py exposes)
# (the backends and loaders run and fill the networks of models/encodec.py and models/lm.py;
# the model classes musicgen.py and magnet.py are above them)
MODEL_CLASSES = ("engine.models.musicgen", "engine.models.magnet")
ROOMS_ABOVE = {
    "engine.loaders": (*MODEL_CLASSES, "engine.pretrained", "engine.api"),
    "engine.models": ("engine.loaders", "engine.pretrained", "engine.api"),
    "engine.decoding": (*MODEL_CLASSES, "engine.loaders", "engine.pretrained", "engine.api"),
    "engine.backends": (*MODEL_CLASSES, "engine.loaders", "engine.pretrained", "engine.api"),
}


def upward_imports(graph: dict[str, set[str]]) -> dict[str, list[str]]:
    """Modules of a room in ``ROOMS_ABOVE`` that import a room above it."""
    bad = {}
    for m, targets in graph.items():
        for room, above in ROOMS_ABOVE.items():
            if _in(m, room):
                up = sorted(t for t in targets if any(_in(t, a) for a in above))
                if up:
                    bad[m] = up
    return bad


def test_runtime_rooms_import_downward() -> None:
    bad = upward_imports(import_graph(ROOT))
    assert not bad, f"runtime modules importing a room above theirs: {bad}"


def test_no_import_cycles_inside_engine() -> None:
    cycles = import_cycles(import_graph(ROOT))
    assert not cycles, f"modules of engine/ that import each other (lazy imports count): {cycles}"


def test_the_runtime_never_imports_the_recipes() -> None:
    bad = runtime_to_recipe_imports(import_graph(ROOT))
    assert not bad, f"runtime modules importing engine/recipes/: {bad}"


def test_the_recipes_import_one_way() -> None:
    graph = import_graph(ROOT)
    assert any(_in(m, RECIPE_STAGES[-1]) for m in graph), "no evaluation recipes found"
    bad = recipe_imports_against_the_stages(graph)
    assert not bad, f"recipes importing a later stage (data -> training -> evaluation): {bad}"


def _tree(root: Path, files: dict[str, str]) -> Path:
    """``files`` (path -> source) under ``root``, each folder a package (an empty __init__.py)."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        for folder in path.relative_to(root).parents[:-1]:
            (root / folder / "__init__.py").touch()
    return root


def test_cycle_check_sees_a_lazy_circle(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "engine/models/a.py": "from engine.loaders import b\n",
        "engine/loaders/b.py": "def f():\n    from engine.models.a import x\n    return x\n",
        "engine/loaders/c.py": "from . import b\n",
    })
    graph = import_graph(root)
    assert graph["engine.loaders.c"] == {"engine.loaders.b"}
    assert import_cycles(graph) == [["engine.loaders.b", "engine.models.a"]]


def test_recipe_checks_see_their_violations(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "engine/commands.py": "from engine.recipes.training import command\n",
        "engine/recipes/data/synth.py": "def f():\n    import engine.recipes.evaluation.metrics\n",
        "engine/recipes/training/command.py": "from engine.recipes.data import synth\n",
        "engine/recipes/evaluation/metrics.py": "from engine.recipes.training import command\n",
    })
    graph = import_graph(root)
    assert runtime_to_recipe_imports(graph) == {"engine.commands": ["engine.recipes.training.command"]}
    assert recipe_imports_against_the_stages(graph) == {
        "engine.recipes.data.synth": ["engine.recipes.evaluation.metrics"]}


def test_room_check_sees_a_model_that_loads(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "engine/pretrained.py": "",
        "engine/models/musicgen.py": "def load():\n    from engine.pretrained import x\n",
    })
    assert upward_imports(import_graph(root)) == {"engine.models.musicgen": ["engine.pretrained"]}
