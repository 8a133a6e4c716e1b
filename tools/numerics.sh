#!/usr/bin/env bash
# The numerics tests (`pytest -m numerics`: box ops, losses, assigners, NMS, RoIAlign, the
# kernel forms, torchvision parity) on whatever accelerator JAX finds, e.g. one GPU:
#
#     tools/numerics.sh [WHEEL_DIR]
#
# WHEEL_DIR holds wheels of what that machine lacks (ml-collections, hypothesis, chex, ...);
# they are installed into /tmp/site, without network. Prints the backend first, so a
# figure can be named with its device.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${1:-}" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$1"/*.whl
    export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
python3 -c "import jax; print('jax', jax.__version__, 'backend:', jax.default_backend(), jax.devices())"
# (-o addopts=: one process, not pyproject's two xdist workers, which would share the device.)
exec python3 -m pytest -q -p no:cacheprovider -o addopts= -m numerics "${@:2}"
