"""Imports run one way: a module imports only from its own layer or the
layers below it (docs/design.md), function-level imports included."""
from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "solver"
# bottom to top; a name is a top-level module or package of solver
LAYERS = [
    {"config"},
    {"parallel"},
    {"backends", "kernels", "io", "triggers", "integrators"},
    {"models"},
    {"driver", "restart"},
    {"api"},                                    # Simulation: config -> parallel context -> model -> driver
    {"cli", "bench", "plot", "__main__", "__init__"},   # the faces: the command line, and `import solver`
]


def _layer(name):
    return next(k for k, names in enumerate(LAYERS) if name in names)


def _top(module_parts):
    return module_parts[0] if module_parts else "__init__"


def _imports(path):
    """(top-level solver name imported, line) for every import in ``path``."""
    rel = path.relative_to(ROOT).with_suffix("").parts
    package = rel[:-1] if rel[-1] != "__init__" else rel[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[:len(package) - (node.level - 1)]) if node.level > 1 else list(package)
                if node.level - 1 > len(package):
                    continue
                parts = base + (node.module.split(".") if node.module else [])
                if not parts:                       # "from .. import x": the names are modules of solver
                    for alias in node.names:
                        yield alias.name, node.lineno
                    continue
                yield _top(parts), node.lineno
            elif node.module and node.module.split(".")[0] == "solver":
                yield _top(node.module.split(".")[1:]), node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "solver":
                    yield _top(alias.name.split(".")[1:]), node.lineno


MODULES = sorted(p for p in ROOT.rglob("*.py"))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_a_layer_above_its_own(path):
    own = _top(path.relative_to(ROOT).with_suffix("").parts)
    for name, line in _imports(path):
        if name == "__version__":
            continue
        assert _layer(name) <= _layer(own), \
            f"{path.relative_to(ROOT)}:{line} imports solver.{name}, a layer above solver.{own}"


def test_the_layer_check_sees_an_upward_import(tmp_path):
    """The check itself can fail: a lower module importing a higher one is found."""
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        (tmp_path / "io").mkdir()
        bad = tmp_path / "io" / "x.py"
        bad.write_text("def f():\n    from ..models import get\n")
        with pytest.raises(AssertionError, match="imports solver.models"):
            test_no_module_imports_a_layer_above_its_own(bad)
    finally:
        ROOT = saved
