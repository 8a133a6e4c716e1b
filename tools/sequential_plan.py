"""Operating characteristics of an --until_decided design, by simulation (no training):
the chance of each verdict and the seeds spent per true effect, beside a fixed design.

    python tools/sequential_plan.py --max_seeds=10 --seed_round=2 [--margin_sd=0.5] [--spending=pocock]

Effects and the margin are in standard deviations of one seed's paired difference (the
sd column of a sweep's results.md over seeds gives it for a recipe).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxdet.sweep import planning, sequential  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max_seeds", type=int, default=10)
    p.add_argument("--seed_round", type=int, default=2)
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--margin_sd", type=float, default=0.0)
    p.add_argument("--spending", default="obf", choices=sequential.SPENDING)
    p.add_argument("--sims", type=int, default=2000)
    p.add_argument("--effects", default="0,0.5,1,2")
    a = p.parse_args()
    design = sequential.Design(a.alpha, a.margin_sd * 0.02, a.seed_round, a.max_seeds, a.spending)  # (sd = 0.02)
    design.check()
    effects = tuple(float(e) for e in a.effects.split(","))
    print("\n".join(planning.table(design, effects, a.sims)))


if __name__ == "__main__":
    main()
