#!/usr/bin/env bash
# The whole test suite (what CI runs): set up, lint, then pytest. Slow real-size runs are marked
# `slow` and only run with GENEXPORT_SLOW=1.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q -ra "$@"
