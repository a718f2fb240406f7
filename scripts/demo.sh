#!/usr/bin/env bash
# The main job on the built-in default: set up, then export the demo BioGPT checkpoint as one
# beam-search ONNX graph and print its parity table against model.generate.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
exec .venv/bin/genexport beam --output out/demo --force "$@"
