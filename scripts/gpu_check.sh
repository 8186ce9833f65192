#!/usr/bin/env bash
# The one-call GPU check (docs/performance.md, "The GPU check"): on one CUDA GPU, in about 5-8 minutes, the smoke pipeline on
# the device (random-weight metrics, labelled), `bench train` at 256 px batch 8 in fp32/tf32, bf16,
# bf16+channels_last and +compile, 1,000 generated images and FID feature throughput; prints one table and
# writes OUT_DIR/gpu_check.md and gpu_check.jsonl.
#
#   bash scripts/gpu_check.sh [OUT_DIR]            with the project's .venv, or any python3 with torch >= 2.6
#   WHEELS=.whl bash scripts/gpu_check.sh OUT_DIR  on a machine without network: first install the wheels of
#                                                  the pure-Python packages it lacks (scripts/gpu_wheels.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-results/gpu_check}
py=${PYTHON:-python3}
[ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ] && py=.venv/bin/python
if [ -n "${WHEELS:-}" ]; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/medsg-site \
    "$WHEELS"/*.whl
  export PYTHONPATH=/tmp/medsg-site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 MPLBACKEND=Agg
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
exec timeout 540 "$py" -m medsg_lib bench gpu-check --out "$out" "${@:2}"
