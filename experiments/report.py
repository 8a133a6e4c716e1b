"""A run's (or a sweep's) evidence in one page to look at in a browser.

    python -m experiments.report --workdir=runs/default [--out=DIR]

Writes one self-contained static HTML file (images inline; no server, no network, no
JavaScript library) to --out/index.html, by default workdir/report/index.html: the run's
config against its recipe, loss-term and AP curves (per-term gradient norms and cosines
when logged), per-class AP, the error breakdown, PR curves, prediction pictures, and the
gradient anatomy (experiments.anatomy) and audit (experiments.audit) when they were run.
For a sweep's workdir: the paired table, the arms' plots and their anatomies.
"""

from absl import flags

from experiments import cli
from jaxdet.report import build

_WORKDIR = flags.DEFINE_string("workdir", None, "A run's or a sweep's directory.")
_OUT = flags.DEFINE_string("out", None, "Output directory (default: workdir/report).")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    cli.start(argv)
    with cli.user_errors():
        build.report(_WORKDIR.value, _OUT.value)


if __name__ == "__main__":
    cli.run(main)
