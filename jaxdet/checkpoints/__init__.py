"""Checkpoint files: the store (orbax; the model's variables apart from training's state)
and what goes wrong with them (faults). Used by training, evaluation and prediction alike."""

from jaxdet.checkpoints.faults import CorruptCheckpoint, DiskFull
from jaxdet.checkpoints.store import ITEMS, Checkpoints, candidates, find

__all__ = ["ITEMS", "Checkpoints", "CorruptCheckpoint", "DiskFull", "candidates", "find"]
