"""Run a trained detector on image files.

    python -m experiments.predict --workdir=runs/default --images='photos/*.jpg' --out=/tmp/pred \
        [--score_threshold=0.3] [--checkpoint=latest|best|STEP]

Writes OUT/<path>.png for each input (its path under the inputs' common folder, so no two
collide; boxes, class names and scores drawn on the original image) and OUT/detections.json
(COCO results format in each file's own pixels, the dataset's category ids, with
`file_name`). Never writes over an input: such an --out is refused before anything is written.
JPEG and PNG of any size: resized and padded as in evaluation, boxes mapped back.
"""

import glob

from absl import flags

from experiments import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run's workdir.")
_IMAGES = flags.DEFINE_string("images", None, "Image files: a glob pattern, or comma-separated paths.")
_OUT = flags.DEFINE_string("out", None, "Output directory.")
_THRESHOLD = flags.DEFINE_float("score_threshold", 0.3, "Keep detections with at least this score.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "latest", "latest, best or a step number.")
flags.mark_flags_as_required(["workdir", "images", "out"])


def main(argv):
    cli.start(argv, quiet=False)
    from jaxdet.evaluation import predict

    paths = sorted(p for pattern in _IMAGES.value.split(",") for p in glob.glob(pattern))
    if not paths:
        raise SystemExit(f"error: --images={_IMAGES.value!r} matches no files")
    with cli.user_errors():
        predict.check_outputs(paths, _OUT.value)  # before the restore: a bad --out fails at once
        predictor = predict.Predictor(_WORKDIR.value, _CHECKPOINT.value)
        results = predict.predict_files(predictor, paths, _OUT.value, _THRESHOLD.value)
    print(f"{len(results)} detections (score >= {_THRESHOLD.value}) on {len(paths)} images, "
          f"checkpoint step {predictor.step}: {_OUT.value}/detections.json and one picture per image")  # fmt: skip


if __name__ == "__main__":
    cli.run(main)
