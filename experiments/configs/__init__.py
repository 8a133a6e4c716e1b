"""Experiment configs: one recipe per detector (`get_config(arg)`), ablations/ below."""

import importlib

# Each detector's own recipe module (experiments/configs/<recipe>.py).
RECIPES = {
    "retinanet": "default",
    "yolo": "yolo",
    "yolov8": "yolov8",
    "fcos": "fcos",
    "ssd": "ssd",
    "faster_rcnn": "faster_rcnn",
    "detr": "detr",
}


def recipe(detector: str, arg: str | None = None):
    """`experiments/configs/<RECIPES[detector]>.py`'s get_config(arg)."""
    return importlib.import_module(f"experiments.configs.{RECIPES[detector]}").get_config(arg)
