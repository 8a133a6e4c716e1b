"""Default experiment: a small RetinaNet on the embedded `jaxdet_shapes` dataset, for 2 CPU cores.

    python -m experiments.train --config=experiments/configs/default.py --workdir=runs/default

Any field can be overridden, e.g. `--config.loss.localization=smooth_l1`. `get_config("tiny")`
(`--config=experiments/configs/default.py:tiny`) is a seconds-long variant for tests.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

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
    config.data.skip_bad = False  # True: unreadable images are replaced (training) or left out (eval), counted
    # Input worker processes (decode + augment); -1 = automatic (half the cores, at most 16), 0 = in process.
    config.data.workers = -1
    config.data.image_size = 128
    config.data.max_boxes = 16
    config.data.hflip = True
    config.data.scale_min = 0.8  # Scale jitter: longer side = image_size * U(scale_min, scale_max).
    config.data.scale_max = 1.2
    config.data.crop_prob = 0.0  # Probability of a random crop (sides U(crop_min, 1)) before resizing.
    config.data.crop_min = 0.5
    config.data.color_jitter = (0.0, 0.0, 0.0, 0.0)  # (brightness, contrast, saturation, hue), torchvision's
    config.data.mosaic_prob = 0.0  # Probability of a 2x2 mosaic (YOLOv4) per training example.
    config.data.eval_max_images = 0  # 0 = the whole eval split.

    config.model = ml_collections.ConfigDict()
    config.model.name = "retinanet"
    config.model.num_classes = 0  # 0 = as many as the data has; more keeps room for classes to come
    config.model.backbone = "resnet_small"
    config.model.backbone_norm = "batch"
    config.model.head_norm = "group"
    config.model.sync_batch_norm = False
    config.model.fpn_channels = 64
    # Levels above the backbone's top: "conv" (stride-2 3x3 convs, RetinaNet's P6/P7) or "pool"
    # (every other pixel of the level below, torchvision Faster R-CNN's P6).
    config.model.fpn_extra = "conv"
    # A torchvision ResNet state_dict (.pth) loaded into the backbone at initialisation ("" = none);
    # see jaxdet/models/convert.py. With backbone_norm="frozen_batch" its norms stay fixed.
    config.model.backbone_weights = ""
    # A whole torchvision detector state_dict (retinanet_resnet50_fpn, fasterrcnn_resnet50_fpn), "" = none.
    config.model.detector_weights = ""
    config.model.head_convs = 2
    config.model.min_level = 3
    config.model.max_level = 5
    config.model.anchor_size = 2.0  # Anchor side = anchor_size * stride (RetinaNet: 4; small objects here).
    config.model.num_scales = 3
    config.model.aspect_ratios = (1.0,)
    config.model.anchor_offset = 0.5
    config.model.fg_iou = 0.5
    config.model.bg_iou = 0.4
    config.model.box_weights = (1.0, 1.0, 1.0, 1.0)
    config.model.pre_nms_topk = 1000
    config.model.score_threshold = 0.05
    config.model.nms_iou_threshold = 0.5
    config.model.max_detections = 100
    # YOLO (SimOTA): candidate radius in strides, and the largest dynamic k.
    config.model.center_radius = 2.5
    config.model.simota_k = 10
    # SSD default boxes: scales (fractions of the image) from the finest to the coarsest
    # level, aspect ratios (width / height) per level (one list = the same on every level).
    config.model.ssd_min_scale = 0.07
    config.model.ssd_max_scale = 0.6
    config.model.ssd_aspect_ratios = ((1.0, 2.0, 0.5),)
    config.model.neg_pos_ratio = 3
    # Faster R-CNN: RPN targets and sampling, proposals, RoI sampling, box head.
    config.model.rpn_fg_iou = 0.7
    config.model.rpn_bg_iou = 0.3
    config.model.rpn_per_image = 256
    config.model.rpn_positive_fraction = 0.5
    config.model.rpn_pre_nms_topk = 1000  # per level
    config.model.rpn_post_nms_topk = 1000
    config.model.rpn_nms_iou = 0.7
    config.model.roi_per_image = 512
    config.model.roi_positive_fraction = 0.25
    config.model.fc_dim = 1024
    config.model.roi_aligned = True  # RoIAlign with the half-pixel shift (False: torchvision's pooler)

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
    # Persistent XLA compilation cache: a re-launch loads the compiled step ("" = off).
    config.train.compilation_cache_dir = "~/.cache/jaxdet/xla"
    config.train.num_prediction_images = 8
    # Every N steps, log each loss term's gradient norm and their cosine similarities (0 = off).
    config.train.term_grad_norms_every = 0

    if arg == "tiny":
        config.data.image_size = 64
        config.data.eval_max_images = 16
        config.model.backbone = "resnet_tiny"
        config.model.fpn_channels = 16
        config.model.head_convs = 1
        config.model.pre_nms_topk = 100
        config.model.max_detections = 20
        config.model.rpn_pre_nms_topk = 50
        config.model.rpn_post_nms_topk = 20
        config.model.roi_per_image = 16
        config.model.fc_dim = 32
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
