#!/usr/bin/env bash
# Saves into .whl/ the wheels of the dependencies bench/gpu.sh needs and a GPU machine's
# stock PyTorch image may lack (lmdb, pycocotools), for a machine without network access:
# copy .whl/ with the repository and bench/gpu.sh installs them beside its run.
#
#   bash bench/gpu_wheels.sh [PYTHON_VERSION]    (default 3.12, the GPU image's python)
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${1:-3.12}
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$VERSION" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl 'lmdb>=1.4' 'pycocotools>=2.0.7'
ls -l .whl
