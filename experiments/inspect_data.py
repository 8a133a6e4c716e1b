"""Inspect a config's dataset: statistics, plots, augmented samples and input throughput.

    python -m experiments.inspect_data --config=experiments/configs/default.py --out=/tmp/inspect
    python -m experiments.inspect_data --config=... --out=DIR --config.data.format=coco_json ...

Writes OUT/report.txt (images, boxes per image, class histogram, box sizes, the load
report, data.max_boxes as training decides it, the fit report: which boxes the config's
detector can reach on its canvas and what to change when too few, input images/s with
the config's augmentation), OUT/{train,val}_*.png plots and
OUT/train_sample_NN.png / val_sample_NN.png images with their ground-truth boxes.
"""

import os

from absl import flags
from ml_collections import config_flags

from experiments import cli
from jaxdet import config_fields, configs, detectors
from jaxdet.data import fit, inspect, pipeline, sources
from jaxdet.detectors import reach

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file (get_config).")
_OUT = flags.DEFINE_string("out", None, "Output directory.")
_SAMPLES = flags.DEFINE_integer("samples", 8, "Sample images per split.")
_BATCHES = flags.DEFINE_integer("throughput_batches", 20, "Batches timed for input throughput (0 = skip).")
flags.mark_flags_as_required(["config", "out"])


def main(argv):
    cli.start(argv, quiet=False)
    cfg, out = _CONFIG.value, _OUT.value
    os.makedirs(out, exist_ok=True)
    lines: list[str] = []
    with cli.user_errors():
        sources.validate(cfg.data)
        train_src = sources.load(cfg.data, "train", log=lines.append)
        val_src = sources.load(cfg.data, "eval", log=lines.append)
    names = train_src.class_names
    for split, src in (("train", train_src), ("val", val_src)):
        stats = inspect.statistics(src.annotations())
        lines += inspect.report_lines(stats, names, split)
        inspect.plot_statistics(stats, names, out, split)
    cfg = configs.resolve(cfg)
    with cli.user_errors():
        cfg.data.max_boxes = fit.resolve_max_boxes(cfg.data, train_src.annotations().box_counts(), log=lines.append)
        detector = detectors.build_detector(cfg, len(names), None)
    lines += reach.report_lines(detector, train_src.annotations(), cfg)
    d = cfg.data
    augment = dict(crop_prob=d.crop_prob, crop_min=d.crop_min, color_jitter=tuple(d.color_jitter))
    train = pipeline.Pipeline(train_src, d.image_size, d.max_boxes, d.workers, d.skip_bad)

    def stream():
        return train.train(
            cfg.train.batch_size,
            config_fields.seed_of(cfg, "data"),
            0,
            d.hflip,
            (d.scale_min, d.scale_max),
            d.mosaic_prob,
            **augment,
        )

    inspect.draw_samples(next(stream()), names, out, "train_sample", _SAMPLES.value)
    val = pipeline.Pipeline(val_src, d.image_size, d.max_boxes, 0, d.skip_bad)
    inspect.draw_samples(next(val.eval(max(_SAMPLES.value, 1))), names, out, "val_sample", _SAMPLES.value)
    if _BATCHES.value:
        ips = inspect.throughput(stream(), _BATCHES.value)
        lines.append(
            f"input pipeline: {ips:.0f} images/s (batch {cfg.train.batch_size}, {d.image_size} px, hflip {d.hflip}, "
            f"scale {d.scale_min}-{d.scale_max}, crop {d.crop_prob}, color_jitter {tuple(d.color_jitter)}, "
            f"mosaic {d.mosaic_prob}; {train.workers} input workers, {os.cpu_count()} CPUs)"
        )
    with open(os.path.join(out, "report.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out}/report.txt, plots and sample images")


if __name__ == "__main__":
    cli.run(main)
