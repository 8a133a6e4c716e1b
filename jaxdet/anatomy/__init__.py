"""The gradient anatomy of a trained run: where each loss term's gradient comes from
(location groups of the detector's own assignment, pyramid levels, the positives' IoU;
groups.py, layout.py) and where it goes (modules.py), one compiled program per batch
(step.py), summed over images (summary.py), written as anatomy.json and PNGs (tool.py,
figures.py). `python -m experiments.anatomy`."""
