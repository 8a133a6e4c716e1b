"""Auditing a dataset with a trained detector (issue: backprop finds annotation errors):
per-example loss terms and gradient norms in one compiled program (per_example.py)."""

from jaxdet.audit.per_example import head_names, per_example_fn

__all__ = ["head_names", "per_example_fn"]
