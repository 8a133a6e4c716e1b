"""Evaluation: COCO metrics, per-class / PR / error analysis, pictures, and restoring a
run from its workdir for evaluation and prediction."""
