"""The package's layers, read from the imports: data flows up the layers below, and no
module imports one of a higher layer, or a sibling folder of its own layer."""

import ast
import os

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "jaxdet")

# Lowest first. A module of jaxdet/ (a top-level file, or a folder) may import its own
# folder and the layers below its own.
LAYERS = [
    {"errors", "files", "parallel", "visualize", "console", "summary"},
    {"boxes", "kernels", "box_coder", "checkpoints", "config_fields"},
    {"ops", "anchors", "assigners"},
    {"postprocess", "losses"},
    {"data", "models"},
    {"detectors"},
    {"configs"},
    {"training", "evaluation"},
    {"experiment", "sweep", "audit", "export", "anatomy"},
    {"report"},
]
# Imports that still run the wrong way, each a known debt to remove (none today).
KNOWN: set[tuple[str, str]] = set()


def _unit(path: str) -> str:
    """jaxdet/<unit>.py or jaxdet/<unit>/...: the unit a file belongs to."""
    return os.path.relpath(path, ROOT).split(os.sep)[0].removesuffix(".py")


def _imported_units(path: str) -> set[str]:
    units = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jaxdet."):
            units.add(node.module.split(".")[1])
        elif isinstance(node, ast.ImportFrom) and node.module == "jaxdet":
            units.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            units.update(a.name.split(".")[1] for a in node.names if a.name.startswith("jaxdet."))
    return units


def _edges() -> set[tuple[str, str]]:
    edges = set()
    for folder, _, names in os.walk(ROOT):
        for name in names:
            if name.endswith(".py") and name != "__init__.py" or folder != ROOT and name == "__init__.py":
                path = os.path.join(folder, name)
                edges |= {(_unit(path), u) for u in _imported_units(path) if u != _unit(path)}
    return edges


def test_every_unit_has_a_layer():
    units = {_unit(os.path.join(ROOT, n)) for n in os.listdir(ROOT) if n.endswith(".py") or "." not in n}
    units -= {"__init__", "__pycache__"}
    assert units == set().union(*LAYERS)


def test_no_import_runs_up_the_layers_or_across_a_layer():
    layer = {unit: i for i, units in enumerate(LAYERS) for unit in units}
    wrong = {(a, b) for a, b in _edges() if layer[b] >= layer[a]}
    assert wrong - KNOWN == set(), f"imports that run up or across the layers: {sorted(wrong - KNOWN)}"
    assert KNOWN - wrong == set(), f"debts paid (remove them from KNOWN): {sorted(KNOWN - wrong)}"


def test_training_and_evaluation_stand_apart():
    """Evaluation and prediction restore and run a model without training's code, and the
    training loop evaluates through a hook (jaxdet/experiment.py joins the two)."""
    edges = _edges()
    assert ("evaluation", "training") not in edges and ("training", "evaluation") not in edges
