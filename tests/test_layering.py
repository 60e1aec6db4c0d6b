"""The installed package's import graph: no cycles, no import from a higher layer, no function-local import
of the project's own modules (a local import is kept only for an optional heavy dependency)."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import tomllib

import motion_adapters

ROOT = Path(__file__).resolve().parent.parent
#: lowest first; a module may import its own layer and those below, never above. Peers (training and
#: inference) may not import each other.
LAYERS = {"core": 0, "configs": 0, "clips": 1, "training": 2, "inference": 2, "shapes": 3, "app": 4, "cli": 5}
SUBPACKAGES = ("clips", "training", "inference", "shapes", "app", "configs")


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in SUBPACKAGES:
        return parts[1]
    if parts[1:2] in (["cli"], ["__main__"]):
        return "cli"
    return "core"


def module_files() -> dict[str, Path]:
    """Every module of the installed package, by dotted name (found through the import system, so an
    editable install and a wheel give the same answer)."""
    out = {"motion_adapters": Path(motion_adapters.__file__)}
    roots = [("motion_adapters", motion_adapters)] + [
        (f"motion_adapters.{name}", importlib.import_module(f"motion_adapters.{name}")) for name in SUBPACKAGES]
    for prefix, pkg in roots:
        out[prefix] = Path(pkg.__file__)
        for info in pkgutil.walk_packages(pkg.__path__, prefix + "."):
            name = info.name
            if name.split(".")[1:2] == ["tests"] or ".tests" in name:
                continue
            if prefix == "motion_adapters" and name.split(".")[1] in SUBPACKAGES:
                continue
            spec = importlib.util.find_spec(name)
            out[name] = Path(spec.origin)
    return out


def _target(module: str, is_pkg: bool, node: ast.ImportFrom | ast.Import, known: set[str]) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "motion_adapters"]
    base = node.module or ""
    if node.level:
        pkg = module.split(".") if is_pkg else module.split(".")[:-1]
        pkg = pkg[: len(pkg) - (node.level - 1)]
        base = ".".join(pkg + ([base] if base else []))
    if base.split(".")[0] != "motion_adapters":
        return []
    # `from motion_adapters import registry` names a submodule; `from x import Name` names the module x
    subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
    return subs or [base]


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    """(module -> own modules it imports, 'module:line' of every function-local own import)."""
    files = module_files()
    known = set(files)
    graph: dict[str, set[str]] = {m: set() for m in files}
    local: list[str] = []
    for module, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            targets = _target(module, path.name == "__init__.py", node, known)
            if not targets:
                continue
            graph[module].update(t for t in targets if t != module)
            if id(node) not in top:
                local.append(f"{module}:{node.lineno}")
    return graph, local


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_declared_package_is_walked():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert {p.split(".")[1] for p in declared if "." in p} - {"formats"} == set(SUBPACKAGES)
    assert "motion_adapters.training.trainer" in module_files()


def test_no_import_cycles():
    graph, _ = import_graph()
    assert cycles(graph) == []


def test_no_import_from_a_higher_layer():
    graph, _ = import_graph()
    bad = []
    for module, targets in graph.items():
        src = layer_of(module)
        for t in targets:
            dst = layer_of(t)
            if LAYERS[dst] > LAYERS[src] or (LAYERS[dst] == LAYERS[src] and dst != src and src != "core"):
                bad.append(f"{module} ({src}) imports {t} ({dst})")
    assert bad == []


def test_no_function_local_import_of_own_modules():
    _, local = import_graph()
    assert local == []

