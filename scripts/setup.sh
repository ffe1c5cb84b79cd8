#!/usr/bin/env bash
# One-step set-up on a fresh Debian machine: the FashionMNIST package, a virtualenv in .venv with
# PyTorch and mixprune (editable, with test extras). Safe to run again: finished steps are skipped.
#
#   bash scripts/setup.sh                 # then: .venv/bin/mixprune reproduce
#   MIXPRUNE_TORCH="torch torchvision" bash scripts/setup.sh   # choose another PyTorch build
set -euo pipefail
cd "$(dirname "$0")/.."

DATA_DIR=/usr/share/datasets/fashion-mnist
# The PyTorch build to install; on the project's machines these wheels are on disk (no download).
TORCH_SPEC=${MIXPRUNE_TORCH:-"torch==2.14.1 torchvision==0.29.1"}

have_data() { [ -f "$DATA_DIR/train-images-idx3-ubyte.gz" ] && [ -f "$DATA_DIR/t10k-labels-idx1-ubyte.gz" ]; }

if ! have_data && command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "setup: installing dataset-fashion-mnist (Debian package)"
  { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null; } ||
    echo "setup: apt-get could not install dataset-fashion-mnist; will try a download instead" >&2
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
echo "setup: installing $TORCH_SPEC and mixprune into .venv"
# shellcheck disable=SC2086  # TORCH_SPEC is a list of requirements
.venv/bin/python -m pip install -q $TORCH_SPEC
.venv/bin/python -m pip install -q -e ".[test]"

if ! .venv/bin/mixprune data check >/dev/null 2>&1; then
  echo "setup: FashionMNIST not found locally; downloading through torchvision"
  .venv/bin/mixprune data download
fi
echo "setup: done ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
