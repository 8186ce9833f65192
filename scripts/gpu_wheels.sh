#!/usr/bin/env bash
# Wheels of the pure-Python packages that scripts/gpu_check.sh needs beyond a CUDA machine's torch, numpy,
# scipy, pandas, matplotlib, pillow, tqdm and safetensors, at the versions pinned in pyproject.toml, for
# Python 3.12 (our GPU machines' interpreter), into DIR (default .whl). Run where pip can reach PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-.whl}
pins=$(grep -oE '"(pytorch-fid|lpips|pytorch-msssim|prdc)==[^"]+"' pyproject.toml | tr -d '"')
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_17_x86_64 --platform any -d "$dir" $pins
ls "$dir"
