#!/usr/bin/env bash
# Every GPU measurement the open issues ask for, in one call of a lent GPU machine
# (the device tool's `run`, 10 minutes at most). Prepare here, once:
#
#     tools/gpu_session.sh --wheels     # .whl/: ml-collections, which the GPU image lacks
#
# then run there with `carry: [".whl"]` and the command `bash tools/gpu_session.sh`.
# Stages run by priority and each is skipped when its estimate no longer fits the budget
# (BUDGET_S, default 540 s), so a slow one costs the later ones, not the whole call.
# Back in $OUT (at most 8 files): session.log (everything printed), results.jsonl (one
# bench JSON result per line), profile_<stage>.txt (where the step's time goes).
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--wheels" ]; then
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info && echo /.whl/ >>.git/info/exclude; }
    exec python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux2014_x86_64 --platform any -d .whl ml-collections==1.1.0
fi

OUT="${OUT:-/tmp/gpu_session}"
mkdir -p "$OUT"
exec > >(tee "$OUT/session.log") 2>&1
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
BUDGET_S="${BUDGET_S:-540}"
START=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import jax, torch, torchvision; print('jax', jax.__version__, jax.devices(), '| torch', torch.__version__, torchvision.__version__)"

# stage NAME ESTIMATE_S COMMAND...: runs COMMAND if ESTIMATE_S still fits the budget.
stage() {
    local name=$1 estimate=$2 elapsed
    shift 2
    elapsed=$(($(date +%s) - START))
    if [ $((elapsed + estimate)) -gt "$BUDGET_S" ]; then
        echo "=== $name: skipped (${elapsed} s spent, ~${estimate} s needed, budget ${BUDGET_S} s)"
        return
    fi
    echo "=== $name (at ${elapsed} s)"
    timeout $((BUDGET_S - elapsed)) "$@"
    echo "=== $name: exit $? after $(($(date +%s) - START - elapsed)) s"
}
# bench NAME ESTIMATE_S FLAGS...: one experiments.bench run, its results appended to results.jsonl.
bench() {
    local name=$1 estimate=$2
    shift 2
    stage "$name" "$estimate" python3 -m experiments.bench --json_out="/tmp/$name.json" "$@"
    [ -f "/tmp/$name.json" ] && python3 -c "import json, sys; [print(json.dumps({'stage': sys.argv[1], **r})) for r in json.load(open(sys.argv[2]))]" \
        "$name" "/tmp/$name.json" >>"$OUT/results.jsonl"
}

R50_FRCNN="--config.model.backbone=resnet50 --config.model.neck_channels=256 --config.model.faster_rcnn.fc_dim=1024
 --config.model.faster_rcnn.rpn_pre_nms_topk=1000 --config.model.faster_rcnn.rpn_post_nms_topk=1000
 --config.model.faster_rcnn.roi_per_image=512"
T="--steps=10 --warmup=3 --image_size=640 --config.train.compute_dtype=bfloat16"
I="--mode=inference --steps=10 --warmup=3 --image_size=640 --batch=16 --config.train.compute_dtype=bfloat16"

# Issue 21: the two-stage step against torchvision, and where its time goes.
stage nms_forms 40 python3 -m benchmarks.nms --batch=8 --levels=5 --per_level=1000
# shellcheck disable=SC2086
bench frcnn_train 170 --config=experiments/configs/faster_rcnn.py $T --batch=8 $R50_FRCNN --compare=torchvision \
    --profile_dir=/tmp/prof_frcnn
cp /tmp/prof_frcnn/summary.txt "$OUT/profile_frcnn_train.txt" 2>/dev/null
# shellcheck disable=SC2086
bench retinanet_train 170 --config=experiments/configs/retinanet_r50.py $T --batch=16 --compare=torchvision \
    --profile_dir=/tmp/prof_retina
cp /tmp/prof_retina/summary.txt "$OUT/profile_retinanet_train.txt" 2>/dev/null
# Inference against torchvision's eval mode, then the detectors without a torchvision twin.
# shellcheck disable=SC2086
bench frcnn_inference 100 --config=experiments/configs/faster_rcnn.py:torchvision $I --compare=torchvision
# shellcheck disable=SC2086
bench retinanet_inference 100 --config=experiments/configs/retinanet_r50.py:torchvision $I --compare=torchvision
# Issue 20: DETR beside RetinaNet at the CPU table's size (128 px, batch 32, float32).
bench default_train_128 40 --config=experiments/configs/default.py --steps=10 --warmup=3 --batch=32
bench detr_train_128 45 --config=experiments/configs/detr.py --steps=10 --warmup=3 --batch=32 \
    --config.train.cpu_devices=0
# shellcheck disable=SC2086
bench fcos_inference 100 --config=experiments/configs/fcos.py:torchvision $I --compare=torchvision
# shellcheck disable=SC2086
bench yolov8_inference 60 --config=experiments/configs/yolov8.py:s $I
# shellcheck disable=SC2086
bench detr_inference 50 --config=experiments/configs/detr.py $I
# The numerics tests on this backend (TF32 on float32 matrix products), in what time is left.
stage numerics 90 bash tools/numerics.sh "" -rf
echo "=== done at $(($(date +%s) - START)) s"
