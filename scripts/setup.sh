#!/usr/bin/env bash
# Idempotent set-up of a fresh clone: .venv, torch 2.13.0 first (the local CPU wheel; any other
# torch pulls GBs of CUDA), then genexport with its pinned dependencies and the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.genexport-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev,serve]" 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[deploy]" 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import torch, transformers, optimum.exporters.onnx, onnxruntime, gen_export" \
    || { echo "setup failed: see pip output above" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
