"""Write a copy of a COCO detection JSON with label noise, and what changed (to measure
experiments.audit on any dataset; training reads the copy like any other data):

    python -m experiments.inject_noise --annotations=train.json --out=noisy/train.json \
        --flip=0.05 --shift=0.05 --delete=0.05 --seed=0

Writes the noisy JSON to --out and the changes beside it (<out>.changes.json): each
flipped, shifted or deleted annotation's id, image id, original and noisy values. Then
`python -m experiments.audit --workdir=RUN --changes=noisy/train.json.changes.json`
scores the audit against them.
"""

import json
import os

from absl import flags

from experiments import cli
from jaxdet import files
from jaxdet.audit import noise
from jaxdet.errors import ConfigError

_ANNOTATIONS = flags.DEFINE_string("annotations", None, "A COCO detection JSON.")
_OUT = flags.DEFINE_string("out", None, "Where the noisy copy goes (must not exist: inputs are never overwritten).")
_FLIP = flags.DEFINE_float("flip", 0.0, "Fraction of annotations given another category.")
_SHIFT = flags.DEFINE_float("shift", 0.0, "Fraction of boxes moved by half their size.")
_DELETE = flags.DEFINE_float("delete", 0.0, "Fraction of annotations removed.")
_SEED = flags.DEFINE_integer("seed", 0, "Which annotations, and how.")
flags.mark_flags_as_required(["annotations", "out"])


def main(argv):
    cli.start(argv)
    with cli.user_errors():
        if os.path.exists(_OUT.value):
            raise ConfigError(f"--out={_OUT.value} exists: choose a new path (nothing is overwritten)")
        with open(_ANNOTATIONS.value) as f:
            coco = json.load(f)
        noisy, changes = noise.inject(coco, _FLIP.value, _SHIFT.value, _DELETE.value, _SEED.value)
        os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
        files.write_atomic(_OUT.value, json.dumps(noisy))
        files.write_atomic(_OUT.value + ".changes.json", json.dumps(changes))
    counts = ", ".join(f"{len(v)} {k}" for k, v in changes.items())
    print(f"wrote {_OUT.value} ({counts} of {len(coco['annotations'])} annotations) and {_OUT.value}.changes.json")


if __name__ == "__main__":
    cli.run(main)
