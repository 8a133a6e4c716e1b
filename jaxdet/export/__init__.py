"""Exporting a trained run as one artifact that runs without jaxdet's detector code:
StableHLO through `jax.export` (stablehlo.py writes it, load.py runs it)."""
