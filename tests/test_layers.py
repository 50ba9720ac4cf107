"""The layer rule of docs/architecture.md, checked on the source: a module imports from its own package and from
packages of lower layers only (every ``from ..x import`` / ``from .x import`` / ``import controlsamp.x``, also inside
functions)."""
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "controlsamp"
LAYER = {"_validate": 0, "_linalg": 0, "_threads": 0,  # layer 0: the helpers first, then what uses them
         "parallel": 0.4, "weights": 0.5, "training": 0.5,
         "targets": 1, "processes": 1, "metrics": 1, "manifolds": 1,
         "exact": 2, "sde": 2, "langevin": 2,
         "control": 3,
         "generative": 4,
         "samplers": 5, "bridges": 5,
         "train": 6, "train_generative": 6.5, "cli": 6.9,  # layer 6: cli on top of both jobs
         "__main__": 7}  # python -m controlsamp: the command line
FILES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


def _unit(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path):
    src = path.read_text()
    depth = len(path.relative_to(PACKAGE).parts) - 1  # 0 for top-level modules, 1 in a subpackage, ...
    for dots, name in re.findall(r"^\s*from (\.+)(\w*)", src, re.M):
        up = len(dots) - 1
        if up < depth:  # inside the same top-level package
            continue
        if name:
            yield name
    for name in re.findall(r"^\s*(?:from|import) controlsamp\.(\w+)", src, re.M):
        yield name


def test_every_unit_has_a_layer():
    assert {_unit(p) for p in FILES} <= set(LAYER), {_unit(p) for p in FILES} - set(LAYER)


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(PACKAGE)) for p in FILES])
def test_imports_point_down(path):
    own = _unit(path)
    for name in _imports(path):
        assert name in LAYER, f"{path}: imports an unknown unit {name!r}"
        assert name == own or LAYER[name] < LAYER[own], \
            f"{path.relative_to(PACKAGE)} (layer {LAYER[own]}, {own}) imports {name} (layer {LAYER[name]})"
