"""Where each loss term's gradient comes from and where it goes, measured on a trained run.

    python -m experiments.anatomy --workdir=runs/default [--checkpoints=500,1000] [--images=64]

For each checkpoint, on the first --images images of the split (the evaluation pipeline's
canvases, the train step's forward pass), in one compiled program per batch: each weighted
term's gradient with respect to the head outputs split by the location's role in the
detector's own target assignment (positive, ignored, negatives by predicted score) and by
pyramid level; its magnitude at the positives against their boxes' IoU; and the term's
parameter gradient per module (backbone stages, neck, head branches, RPN / RoI head) with
the cosines between terms. Writes anatomy.json and PNGs (spatial maps of the first --maps
images) to --out, by default workdir/anatomy; `experiments.report` shows them. --loss
changes a config.loss field first (the anatomy of another loss on the same weights).
"""

from absl import flags

from experiments import cli
from jaxdet.anatomy import tool
from jaxdet.errors import ConfigError

_WORKDIR = flags.DEFINE_string("workdir", None, "The trained run's directory.")
_CHECKPOINTS = flags.DEFINE_list("checkpoints", ["latest"], "latest, best or steps, e.g. 100,200,300.")
_IMAGES = flags.DEFINE_integer("images", 64, "Images of the split measured at each checkpoint (the first ones).")
_BATCH = flags.DEFINE_integer("batch_size", 0, "Images per compiled step (0: the run's train.batch_size, at most 16).")
_SPLIT = flags.DEFINE_enum("split", "train", ["train", "eval"], "The run's data.train_split or data.eval_split.")
_MAPS = flags.DEFINE_integer("maps", 4, "Images whose spatial gradient maps are drawn (last checkpoint).")
_EDGES = flags.DEFINE_list("score_edges", ["0.05", "0.2", "0.5"], "Negatives' predicted-score bins (easy to hard).")
_OUT = flags.DEFINE_string("out", None, "Output directory (default: workdir/anatomy).")
_LOSS = flags.DEFINE_multi_string(
    "loss",
    [],
    "A config.loss field to change first, KEY=VALUE (e.g. loss.focal_gamma=0.0): another loss, same weights.",
)
flags.mark_flags_as_required(["workdir"])


def main(argv):
    cli.start(argv)
    with cli.user_errors():
        try:
            edges = [float(e) for e in _EDGES.value]
        except ValueError:
            raise ConfigError(f"--score_edges={','.join(_EDGES.value)}: numbers, e.g. 0.05,0.2,0.5") from None
        changes = {}
        for item in _LOSS.value:
            key, eq, value = item.partition("=")
            if not eq:
                raise ConfigError(f"--loss={item}: KEY=VALUE, e.g. --loss=loss.focal_gamma=0.0")
            changes[key] = value
        tool.anatomy(_WORKDIR.value, _CHECKPOINTS.value, _IMAGES.value, _BATCH.value, _SPLIT.value, _MAPS.value,
                     edges, _OUT.value, loss=changes)  # fmt: skip


if __name__ == "__main__":
    cli.run(main)
