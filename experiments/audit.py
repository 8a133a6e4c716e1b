"""Audit a dataset with a trained run: which annotations does the model disagree with most?

    python -m experiments.audit --workdir=runs/default [--split=train] [--out=DIR]
    python -m experiments.audit --workdir=runs/default --checkpoints=500,1000   # TracIn-style sum

For every image of the split (streamed through the evaluation pipeline, no augmentation):
its loss terms and the norm of its own gradient with respect to the head's parameters
(every image's gradient from one jitted vmap, no loop over images); for every annotated
box how the model sees it (wrong class, poor box, spurious box), and the confident
detections no annotation explains (missing boxes). Streams every record to images.jsonl,
boxes.jsonl and missing.jsonl, writes audit.json (the top --keep of each ranking) and a
gallery of the top suspects (PNG: annotations white, detections by class, the suspect red) to --out,
by default workdir/audit/<split>-step<N>. With --changes (experiments.inject_noise), also
score.json and the table: per noise type, precision and recall at k = the corrupted
count, for the audit's ranking, ranking by loss alone, and a random order.
"""

from absl import flags

from experiments import cli
from jaxdet.audit import tool

_WORKDIR = flags.DEFINE_string("workdir", None, "The trained run's directory.")
_SPLIT = flags.DEFINE_enum("split", "train", ["train", "eval"], "The run's data.train_split or data.eval_split.")
_CHECKPOINTS = flags.DEFINE_list("checkpoints", ["latest"], "latest, best or steps; several: TracIn-style sum.")
_OUT = flags.DEFINE_string("out", None, "Output directory (default: workdir/audit/<split>-step<N>).")
_BATCH = flags.DEFINE_integer("batch_size", 0, "Images per compiled step (0: the run's train.eval_batch_size).")
_TOP_K = flags.DEFINE_integer("top_k", 24, "Suspects drawn in the gallery.")
_KEEP = flags.DEFINE_integer(
    "keep", 1000, "Top items of each ranking kept in audit.json (every record is in the .jsonl files)."
)
_PARAMS = flags.DEFINE_string("params", None, "Regex over top-level parameter modules (default: the head).")
_MATCH_IOU = flags.DEFINE_float("match_iou", 0.5, "IoU at which a detection finds an annotated box.")
_NEAR_IOU = flags.DEFINE_float(
    "near_iou", 0.1, "IoU under which nothing is near (spurious / missing boxes); from it up to --match_iou: poor box."
)
_MISSING_SCORE = flags.DEFINE_float("missing_score", 0.3, "Score from which an unexplained detection is a missing box.")
_CHANGES = flags.DEFINE_string(
    "changes", None, "experiments.inject_noise's changes.json: score the audit against the injected noise."
)
flags.mark_flags_as_required(["workdir"])


def main(argv):
    cli.start(argv)
    with cli.user_errors():
        out = tool.audit(
            _WORKDIR.value, _SPLIT.value, _CHECKPOINTS.value, _OUT.value, _BATCH.value, _TOP_K.value,
            _PARAMS.value, _MATCH_IOU.value, _NEAR_IOU.value, _MISSING_SCORE.value, _KEEP.value,
        )  # fmt: skip
        if _CHANGES.value:
            print("\n".join(tool.score_against(out, _CHANGES.value)))


if __name__ == "__main__":
    cli.run(main)
