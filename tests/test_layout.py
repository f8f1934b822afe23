"""The package layout shows the flow: no import cycles, no import from a later stage, small modules that
say what they own. Walks every module's imports with `ast` (imports inside functions count too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "launcher"
MAX_LINES = 400

# The flow, first to last. A module may import from its own stage or an earlier one, never a later one.
# Longest prefix wins; the shared leaves (stage 0) import nothing of the launcher's but other leaves.
STAGES = {
    "launcher": 0, "launcher.walltime": 0, "launcher.node": 0, "launcher.validate.problems": 0,
    "launcher.config": 1,
    "launcher.validate": 2,
    "launcher.plan": 3,
    "launcher.jobfolder": 4, "launcher.faulthandlers": 4,
    "launcher.slurm": 5,
    "launcher.supervisor": 6,
    "launcher.components": 7, "launcher.sync": 7,
    "launcher.train": 8,
    "launcher.show": 9,
    "launcher.backends": 10,
    "launcher.launch": 11,
    "launcher.sweep": 12,
    "launcher.cli": 13,
    "launcher.__main__": 14, "launcher.jobs": 14, "launcher.conf": 14,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "conf" not in p.relative_to(PACKAGE).parts}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The launcher modules that `name` imports (a package import counts as the package's __init__)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def stage(name: str) -> int:
    prefix = name
    while prefix not in STAGES:
        prefix = prefix.rpartition(".")[0]
        assert prefix, f"{name} is in no stage of tests/test_layout.py STAGES: add it where it belongs in the flow"
    return STAGES[prefix]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_imports_from_a_later_stage():
    backwards = [f"{name} (stage {stage(name)}) imports {target} (stage {stage(target)})"
                 for name, targets in graph().items() for target in sorted(targets) if stage(target) > stage(name)]
    assert backwards == []


@pytest.mark.parametrize("name", sorted(modules()))
def test_every_module_is_small_and_says_what_it_owns(name):
    path = modules()[name]
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_LINES, f"{path} has {len(text.splitlines())} lines (at most {MAX_LINES})"
    assert ast.get_docstring(ast.parse(text)), f"{path} does not open with a docstring saying what it owns"
