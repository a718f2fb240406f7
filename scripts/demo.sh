#!/usr/bin/env bash
# The main job on the built-in default: set up, then export the demo BioGPT checkpoint as one
# beam-search ONNX graph and print its parity table against model.generate.
# GENEXPORT_TRANSFORMERS=5 (default, transformers 5.24, .venv) or 4 (transformers 4.57.6, .venv-tf4) picks
# the line; the demo checkpoint is the same on both, so the table is too.
set -euo pipefail
cd "$(dirname "$0")/.."
line=${GENEXPORT_TRANSFORMERS:-5}
case "$line" in
  5) venv=.venv ;;
  4) venv=.venv-tf4 ;;
  *) echo "GENEXPORT_TRANSFORMERS must be 5 or 4, not '$line'" >&2; exit 2 ;;
esac
bash scripts/setup.sh "$line"
export HF_HUB_OFFLINE=1
exec "$venv/bin/genexport" beam --output out/demo --force "$@"
