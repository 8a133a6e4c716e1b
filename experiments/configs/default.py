"""Default experiment: a small RetinaNet on the embedded `jaxdet_shapes` dataset, for 2 CPU cores.

    python -m experiments.train --config=experiments/configs/default.py --workdir=runs/default

Any field can be overridden, e.g. `--config.loss.localization=smooth_l1`. `get_config("tiny")`
(`--config=experiments/configs/default.py:tiny`) is a seconds-long variant for tests.
"""

import ml_collections

from jaxdet.detectors.config import model_config, use_loss_terms


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    # The seed's parts, each settable on its own for a variance study (experiments.sweep
    # --variance); -1 takes config.seed: init (the parameters' initialisation), data (order,
    # augmentation and multi-scale draws), step (the train step's own draws: DETR's noise).
    config.seeds = ml_collections.ConfigDict({"init": -1, "data": -1, "step": -1})

    config.data = ml_collections.ConfigDict()
    config.data.format = "tfds"  # "tfds" (data.name), "coco_json", "voc_xml" or "yolo_txt" (paths below)
    config.data.name = "jaxdet_shapes"
    config.data.data_dir = ""  # "" = TFDS's default data dir.
    config.data.train_split = "train"
    config.data.eval_split = "validation"
    # data.format="coco_json": a COCO detection JSON and an image folder per split.
    config.data.train_annotations = ""
    config.data.train_images = ""
    config.data.val_annotations = ""
    config.data.val_images = ""
    config.data.root = ""  # data.format="voc_xml" or "yolo_txt": the dataset folder
    config.data.voc_zero_based = False  # voc_xml: True for tools that write 0-based corners (VOC's are 1-based)
    config.data.skip_bad = False  # True: unreadable images are replaced (training) or left out (eval), counted
    # A split left with no boxes (all dropped, or none annotated) stops the run at start-up: no
    # metric could come out of it. True allows it (e.g. training on negatives on purpose).
    config.data.allow_no_boxes = False
    # Input worker processes (decode + augment); -1 = automatic (half the cores, at most 16), 0 = in process.
    config.data.workers = -1
    config.data.image_size = 128  # The canvas side at evaluation (and in training without train_sizes).
    # Multi-scale training: each step's canvas side drawn from these (multiples of the largest
    # stride, 2^model.max_level), a pure function of (seed, step); one compiled step per size.
    config.data.train_sizes = ()
    # Boxes per training example, padded: 0 = automatic, the training split's most in one image (x4 with
    # mosaic, x2 with mixup) rounded up to a multiple of 8, decided and logged at start-up (jaxdet/data/fit.py).
    config.data.max_boxes = 0
    # At start-up, log which boxes the detector's priors can reach on the canvas (jaxdet/detectors/reach.py).
    config.data.fit_report = True
    config.data.hflip = True
    config.data.scale_min = 0.8  # Scale jitter: longer side = image_size * U(scale_min, scale_max).
    config.data.scale_max = 1.2
    config.data.crop_prob = 0.0  # Probability of a random crop (sides U(crop_min, 1)) before resizing.
    config.data.crop_min = 0.5
    config.data.color_jitter = (0.0, 0.0, 0.0, 0.0)  # (brightness, contrast, saturation, hue), torchvision's
    config.data.mosaic_prob = 0.0  # Probability of a 2x2 mosaic (YOLOv4) per training example.
    config.data.close_mosaic_steps = 0  # No mosaic in the last N steps (ultralytics' close_mosaic).
    config.data.mixup_prob = 0.0  # Probability of mixing an example with a second one (YOLOv4 mixup).
    # ultralytics' random affine after the mosaic (0 = off): rotation in degrees, translation and
    # scale as fractions, shear in degrees; boxes cut below ultralytics' limits are dropped, counted.
    config.data.affine_degrees = 0.0
    config.data.affine_translate = 0.0
    config.data.affine_scale = 0.0
    config.data.affine_shear = 0.0
    config.data.eval_max_images = 0  # 0 = the whole eval split.

    # Shared fields (backbone, neck, classes, post-processing; jaxdet/detectors/config.py) and
    # the detector's own section, config.model.retinanet (jaxdet/detectors/retinanet.py: section()).
    config.model = model_config("retinanet")

    config.loss = ml_collections.ConfigDict()
    config.loss.classification = "sigmoid_focal"
    config.loss.localization = "giou"
    config.loss.confidence = "none"
    config.loss.classification_weight = 1.0
    config.loss.localization_weight = 2.0
    config.loss.confidence_weight = 1.0
    # Hyper-parameters, read by the losses that use them (see jaxdet.losses).
    config.loss.focal_alpha = 0.25
    config.loss.focal_gamma = 2.0
    config.loss.varifocal_alpha = 0.75
    config.loss.smooth_l1_beta = 1 / 9  # detectron2's value for encoded deltas
    config.loss.label_smoothing = 0.0
    config.loss.no_object_weight = 1.0  # softmax CE's background rows (DETR's eos_coef: 0.1)
    # The detector's named terms: loss.terms.<term> ("" = its family's loss above) and, for terms
    # not named after a family (Faster R-CNN's rpn_box, roi_box, ...), loss.<term>_weight
    # (None = its family's weight). See jaxdet/losses/terms.py.
    use_loss_terms(config.loss, "retinanet")

    config.optim = ml_collections.ConfigDict()
    config.optim.name = "adamw"
    config.optim.learning_rate = 2e-3
    config.optim.momentum = 0.9
    config.optim.weight_decay = 1e-4
    config.optim.schedule = "cosine"  # "cosine", "step" or "constant"
    config.optim.warmup_steps = 100
    config.optim.decay_steps_fractions = (0.67, 0.89)  # For "step": decay by 10x at these fractions.
    config.optim.grad_clip_norm = 10.0
    config.optim.accumulate_steps = 1  # K > 1: average K steps' gradients per update (optax.MultiSteps).
    # Exponential moving average of the weights, evaluated and checkpointed in their place
    # (jaxdet/training/ema.py): decay (0 = off; YOLOv8 0.9999) and its ramp in updates (YOLOv8 2000).
    config.optim.ema_decay = 0.0
    config.optim.ema_warmup = 0
    # Parameter groups (jaxdet/training/param_groups.py): (regex over parameter paths, lr
    # multiplier, weight-decay multiplier, frozen), first match wins, e.g. (("^ResNet_0/", 0.1, 1.0, False),).
    config.optim.param_groups = ()

    config.eval = ml_collections.ConfigDict()
    # Test-time augmentation at evaluation: "" (off) or "hflip" (the mirrored images' detections
    # mapped back), and more canvas sides (multiples of the largest stride; the images resized
    # on the device, detections scaled back); views merged at model.nms_iou_threshold by
    # class-aware "nms" or weighted box fusion "wbf" (jaxdet/postprocess.py: merge).
    config.eval.tta = ""
    config.eval.tta_sizes = ()
    config.eval.tta_merge = "nms"
    # What experiments.eval reads: "model" (the checkpoints' model item: the EMA with
    # optim.ema_decay) or "trained" (an EMA run's trained weights: the EMA on/off pair of one run).
    config.eval.weights = "model"

    config.train = ml_collections.ConfigDict()
    config.train.steps = 1000
    config.train.batch_size = 32  # Global, over all devices of all processes.
    config.train.eval_batch_size = 64  # Global; divisible by 1, 2, 4, 8, ... devices (the last batch is padded).
    config.train.eval_every = 500
    config.train.checkpoint_every = 500
    config.train.keep_checkpoints = 3
    config.train.log_every = 50
    # The checkpoint with the best value of this eval metric is kept in checkpoints_best/
    # (AP, AP50, ..., or a validation loss such as loss_localization, lower = better).
    config.train.best_metric = "AP"
    config.train.early_stop_patience = 0  # > 0: stop after this many evaluations without a new best
    # Steps with NaN/Inf loss or gradients are skipped and logged; this many in a row stop the run (0 = never).
    config.train.max_nonfinite_steps = 10
    # Resuming with a changed model or data section is refused (with a diff) unless this is True;
    # other sections (train.steps, optim, loss) may change, and the changes are logged.
    config.train.allow_config_change = False
    config.train.compute_dtype = "float32"
    # > 0: this many JAX devices on the CPU (data parallel over its cores; GPU/TPU runs ignore it).
    config.train.cpu_devices = 0
    # Persistent XLA compilation cache: a re-launch loads the compiled step ("" = off).
    config.train.compilation_cache_dir = "~/.cache/jaxdet/xla"
    config.train.num_prediction_images = 8
    # Every N steps, log each loss term's gradient norm and their cosine similarities (0 = off).
    config.train.term_grad_norms_every = 0

    if arg == "tiny":
        config.data.image_size = 64
        config.data.eval_max_images = 16
        config.data.fit_report = (
            False  # (~1 s of each seconds-long test run; tests/test_fit.py and test_init_from check it)
        )
        config.model.backbone = "resnet_tiny"
        config.model.neck_channels = 16
        config.model.retinanet.head_convs = 1
        config.model.pre_nms_topk = 100
        config.model.max_detections = 20
        config.train.steps = 6
        config.train.batch_size = 8
        config.train.eval_batch_size = 8
        config.train.eval_every = 6
        config.train.checkpoint_every = 3
        config.train.log_every = 2
        config.train.num_prediction_images = 2
        config.optim.warmup_steps = 2
    elif arg:
        raise ValueError(f"unknown config variant {arg!r}; valid: 'tiny' or none")
    return config
