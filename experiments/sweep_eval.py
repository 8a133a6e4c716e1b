"""Evaluation arms over a finished sweep: its checkpoints re-evaluated under `eval.*`
settings (test-time augmentation on or off, its sizes and merge), no training, with the
sweep's paired tables (each setting against the first, seed by seed, within each arm):

    python -m experiments.sweep_eval --workdir=runs/ablations/multiscale \
        --sweep='eval.tta,eval.tta_sizes,eval.tta_merge=("",(),"nms"),("hflip",(96,160),"wbf")'

Results: <workdir>/evaluations/results.md, .json, .png (--out for another folder). Each
(run, setting) evaluation is kept under <run>/eval/ and read back when the command runs
again, so adding a setting evaluates only the new one.
"""

import os

from absl import flags

from experiments import cli
from jaxdet import experiment, sweep
from jaxdet.sweep import evaluations

_WORKDIR = flags.DEFINE_string("workdir", None, "A finished sweep's directory (with results.json).")
_SWEEP = flags.DEFINE_multi_string("sweep", [], "eval.KEY=V1,V2,... (repeatable: a grid; linked keys as in sweep).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "latest", "latest, best or a step number, of every run.")
_BASELINE = flags.DEFINE_string("baseline", None, "The first axis' baseline value (default: its first).")
_OUT = flags.DEFINE_string("out", None, "Where results.md/.json/.png go (default: <workdir>/evaluations).")
flags.mark_flags_as_required(["workdir", "sweep"])


def main(argv):
    cli.start(argv)
    with cli.user_errors():
        records = evaluations.evaluate_arms(
            _WORKDIR.value, _SWEEP.value, _CHECKPOINT.value, experiment.evaluate_checkpoint
        )
        out = _OUT.value or os.path.join(_WORKDIR.value, "evaluations")
        md, png = sweep.write_results(records, out, _BASELINE.value, seconds_label="eval time (s)")
    print(open(md).read())
    print(f"wrote {md} and {png}")


if __name__ == "__main__":
    cli.run(main)
