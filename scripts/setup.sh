#!/usr/bin/env bash
# Idempotent set-up of a fresh clone, one virtual environment per tested transformers line:
#   .venv       transformers 5.24 + sentence-transformers 6.2 (the default, newest line)
#   .venv-tf4   transformers 4.57.6 + sentence-transformers 5.7 (+ optimum-onnx for the optimum-loop benchmark)
# Which lines: the first argument or GENEXPORT_TRANSFORMERS (5, 4 or all; default 5). In each: torch 2.13.0
# first (the local CPU wheel; any other torch pulls GBs of CUDA), then genexport with the line's pins from
# constraints/transformers-<line>.txt and the test tools. No --no-deps step anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
lines=${1:-${GENEXPORT_TRANSFORMERS:-5}}
[ "$lines" = all ] && lines="5 4"

venv_for() { if [ "$1" = 5 ]; then echo .venv; else echo ".venv-tf$1"; fi; }

for line in $lines; do
  case "$line" in
    5) extras="dev,serve,deploy" ;;
    4) extras="dev,serve,deploy,optimum-loop" ;;
    *) echo "unknown transformers line '$line': use 5, 4 or all" >&2; exit 2 ;;
  esac
  venv=$(venv_for "$line")
  constraints=constraints/transformers-$line.txt
  if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/pyvenv.cfg" ]; then
    "$PYTHON" -m venv --clear "$venv"
  fi
  # Never pip-install into a base interpreter: a half-made venv's python would be the system's.
  "$venv/bin/python" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)' \
    || { echo "$venv/bin/python is not a virtual environment; remove $venv and run again" >&2; exit 1; }
  stamp=$venv/.genexport-setup
  want=$(cat pyproject.toml scripts/setup.sh "$constraints" | sha256sum | cut -c1-16)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setting up $venv (transformers line $line)" >&2
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "torch==2.13.0" 2>&1 \
      | grep -v "^WARNING: Location" || true
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -c "$constraints" -e ".[$extras]" 2>&1 \
      | grep -v "^WARNING: Location" || true
    "$venv/bin/python" - "$constraints" <<'EOF' || { echo "setup of $venv failed: see pip output above" >&2; exit 1; }
import sys
from importlib import metadata

import gen_export  # noqa: F401
import onnxruntime  # noqa: F401
import torch  # noqa: F401
from optimum.exporters.base import ExporterConfig  # noqa: F401

pins = [line.split("==") for line in open(sys.argv[1]) if "==" in line and not line.startswith("#")]
wrong = [f"{name} {metadata.version(name)} (want {want.strip()})" for name, want in pins
         if metadata.version(name) != want.strip()]
if wrong:
    sys.exit("pins not met: " + ", ".join(wrong))
EOF
    echo "$want" > "$stamp"
  fi
done
