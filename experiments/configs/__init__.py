"""Experiment configs: recipes (`get_config(arg)`, one module each), ablations/ below.

A detector's recipe is found, not listed: `<detector>.py` if there is one, else
`default.py` when the default experiment trains that detector (RetinaNet). A new
detector's recipe is its file here.
"""

import importlib
import os


def recipe_module(detector: str):
    """The recipe module for `detector` (ValueError naming the file to add if none)."""
    here = os.path.dirname(__file__)
    for name in (detector, "default"):
        if os.path.isfile(os.path.join(here, f"{name}.py")):
            module = importlib.import_module(f"experiments.configs.{name}")
            if module.get_config().model.name == detector:
                return module
    raise ValueError(f"no recipe for detector {detector!r}: add experiments/configs/{detector}.py with get_config(arg)")


def recipe(detector: str, arg: str | None = None):
    """`detector`'s recipe's get_config(arg)."""
    return recipe_module(detector).get_config(arg)
