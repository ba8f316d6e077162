#!/usr/bin/env bash
# Download, here (with the package registry), the wheels scripts/device_check.sh needs on an accelerator machine
# whose image has JAX, flax, optax, chex, orbax, matplotlib, pytest, ... but not these, and no network: evosax and
# what it and the ES, the metrics writer and the sharding tests import beyond the image. Pure-Python wheels at the
# tested versions (constraints.txt), saved to .whl/ (git-ignored), which the device call carries:
#
#   scripts/device_wheels.sh
#   (device) carry [".whl"], command: scripts/device_check.sh "$OUT"
set -euo pipefail
cd "$(dirname "$0")/.."
pin() { grep -i "^$1==" constraints.txt; }
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation py \
  --platform any -d .whl "$(pin evosax)" "$(pin dotmap)" "$(pin tensorboardX)" "$(pin gymnasium)" \
  "$(pin Farama-Notifications)"
ls -l .whl
