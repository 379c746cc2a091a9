"""The package's dependencies point one way: an allowed-edges table checked with ``ast``.

Every import of ``split_infer`` anywhere in a module counts, including imports inside
functions (a lazy import is still a dependency). Core modules never import the pipeline,
adaptation, training, ROS nodes or tools; nothing that runs on a robot imports the tools or
the CLI; and no two modules import each other, directly or around a cycle.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "split_infer"

CORE = {"errors", "config_key", "data", "defaults", "models", "codecs", "wire", "frame_auth",
        "bundle", "planning"}
#: unit → the units it may import (besides itself and the package's ``__init__``).
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "config_key": set(),
    "data": {"errors"},
    "defaults": {"errors", "models"},  # a model's published weights are a default
    "models": {"errors", "data"},  # a backbone's weights carry their preprocessing recipe
    "codecs": {"errors", "models"},
    "wire": {"errors", "codecs", "config_key"},
    "frame_auth": {"errors", "wire"},
    "bundle": {"errors", "codecs", "config_key", "data"},
    "planning": set(),
    "pipeline": CORE,
    "adaptation": CORE,
    "training": CORE | {"pipeline"},
    "ros": CORE | {"pipeline", "adaptation"},
    "tools": CORE | {"pipeline", "adaptation", "training", "ros"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Module → every ``split_infer`` module it imports (resolved to existing modules)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            for target in targets:
                while target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in modules and target != name and target != "split_infer":
                    edges[name].add(target)
    return edges


def _unit(module: str) -> str:
    return module.split(".")[1]


def test_every_unit_is_in_the_table():
    units = {_unit(_module_name(p)) for p in PACKAGE.rglob("*.py")
             if _module_name(p) != "split_infer"}
    assert units <= ALLOWED.keys(), f"new top-level units need a row: {units - ALLOWED.keys()}"


def test_imports_follow_the_allowed_edges():
    wrong = sorted(f"{source} imports {target}" for source, targets in _imports().items()
                   for target in targets
                   if _unit(target) != _unit(source)
                   and _unit(target) not in ALLOWED[_unit(source)])
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles_between_modules():
    edges = _imports()
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(module: str, stack: list[str]) -> list[str] | None:
        state[module] = 1
        for target in sorted(edges.get(module, ())):
            if state.get(target) == 1:
                return [*stack[stack.index(target):], target] if target in stack else [target]
            if target not in state:
                found = visit(target, [*stack, target])
                if found:
                    return found
        state[module] = 2
        return None

    for module in sorted(edges):
        if module not in state:
            cycle = visit(module, [module])
            assert cycle is None, " -> ".join(cycle)


@pytest.mark.parametrize("limit, where",
                         [(800, "split_infer"), (300, "split_infer/ros/edge_node")])
def test_modules_stay_small(limit, where):
    root = PACKAGE.parent
    paths = [p for p in PACKAGE.rglob("*.py") if str(p.relative_to(root)).startswith(where)]
    long = {str(p.relative_to(root)): n for p in paths
            if (n := len(p.read_text().splitlines())) > limit}
    assert not long, f"over {limit} lines: {long}"


def test_the_checks_see_a_back_import(tmp_path, monkeypatch):
    """The table check is not vacuous: a core module importing a tool is reported."""
    fake = tmp_path / "split_infer"
    for path in PACKAGE.rglob("*.py"):
        target = fake / path.relative_to(PACKAGE)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    (fake / "wire.py").write_text((fake / "wire.py").read_text()
                                  + "\n\ndef _late():\n    import split_infer.tools.cli\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    with pytest.raises(AssertionError, match=r"split_infer\.wire imports split_infer\.tools\.cli"):
        test_imports_follow_the_allowed_edges()
