"""The house rules of the package's layout, checked on the source: layers import only downward,
no import cycles (function-local imports included), pure ``torch.nn`` below the tasks."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "moext"

#: Layer of each top-level part; a module may import its own part and lower layers only.
LAYERS = {
    "moext": 0,
    "moext.io": 0,
    "moext.nn": 1,
    "moext.losses": 1,
    "moext.data": 2,
    "moext.tasks": 2,
    "moext.experiment": 3,
    "moext.cli": 4,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


#: Modules that stand for another part: ``moext.models`` is the old import path of
#: ``moext.nn.moext``, kept so that pickled checkpoints load.
ALIASES = {"moext.models": "moext.nn"}


#: The package's front: ``moext.load_bundle`` is exported lazily from the root (imported on first
#: use, so ``import moext`` stays light); nothing it imports imports the root, so it makes no cycle.
FRONT_EXPORTS = {"moext": {"moext.experiment", "moext.experiment.bundle"}}


def part(module: str) -> str:
    """The top-level part of a module: ``moext.data.pairs.cache`` -> ``moext.data``."""
    top = ".".join(module.split(".")[:2])
    return ALIASES.get(top, top)


def imports(path: Path) -> set[str]:
    """Every ``moext`` module a file imports, anywhere in it (module level or in a function)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n for n in names if n in MODULES}
    return found


GRAPH = {m: imports(p) - {m} for m, p in MODULES.items()}


def test_every_module_has_a_layer():
    assert all(part(m) in LAYERS for m in MODULES), sorted(
        m for m in MODULES if part(m) not in LAYERS
    )


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_downward(module):
    upward = sorted(
        target
        for target in GRAPH[module] - FRONT_EXPORTS.get(module, set())
        if LAYERS[part(target)] > LAYERS[part(module)]
        or (LAYERS[part(target)] == LAYERS[part(module)] and part(target) != part(module))
    )
    assert not upward, f"{module} imports a layer above it or beside it: {upward}"


def test_no_import_cycles():
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(GRAPH[m]):
            if state.get(t) == 1:
                cycle = stack[stack.index(t) :] + [t]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)


def test_nothing_imports_the_command():
    assert not [m for m, targets in GRAPH.items() if "moext.cli" in targets]


@pytest.mark.parametrize("layer", ["moext/nn", "moext/losses"])
def test_networks_and_losses_are_pure_torch(layer):
    for path in (PACKAGE.parent / layer).rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                )
                assert not any(
                    n.split(".")[0] in ("lightning", "pytorch_lightning") for n in names
                ), path


def test_the_checker_sees_function_local_imports(tmp_path):
    """The graph includes imports inside functions (a cycle hidden in a function is a cycle)."""
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from moext.experiment import loso\n")
    assert imports(src) == {"moext.experiment", "moext.experiment.loso"}


#: Inside ``moext/data/``: the inputs a method consumes stand on each other, never the other
#: way round. ``flow/`` and ``clips/`` stand on ``pairs/`` (their entries derive from the pair
#: entries), which stands on the shared modules (readers, records, protocols, faces, images,
#: synth, summary); ``flow/`` and ``clips/`` never import each other. The package's
#: ``__init__`` (lazy exports of the DataModules) is the front of the layer and is left out.
DATA_LEVELS = {
    "moext.data.pairs": 1,
    "moext.data.flow": 2,
    "moext.data.clips": 2,
    "moext.data.footage": 3,  # a recording made into any method's inputs: stands on all of them
}


def data_part(module: str) -> str:
    """``moext.data.flow.cache`` -> ``moext.data.flow``; shared modules are their own part."""
    return ".".join(module.split(".")[:3])


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("moext.data.")))
def test_data_inputs_stand_on_pairs(module):
    own = data_part(module)
    level = DATA_LEVELS.get(own, 0)
    wrong = sorted(
        t
        for t in GRAPH[module]
        if t.startswith("moext.data.")
        and data_part(t) != own
        and DATA_LEVELS.get(data_part(t), 0) >= max(level, 1)
    )
    assert not wrong, f"{module} imports an input package above or beside it: {wrong}"
