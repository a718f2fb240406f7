#!/usr/bin/env bash
# The whole test suite (what CI runs, via .ci/run): set up, lint, then pytest once per tested transformers
# line (.venv = 5.24, .venv-tf4 = 4.57.6; GENEXPORT_TRANSFORMERS=5 or 4 runs one line only). Both lines run
# even if the first fails; the exit status is non-zero if either did. Slow real-size runs are marked `slow`
# and only run with GENEXPORT_SLOW=1. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
lines=${GENEXPORT_TRANSFORMERS:-all}
bash scripts/setup.sh "$lines"
[ "$lines" = all ] && lines="5 4"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
venv_of() { if [ "$1" = 5 ]; then echo .venv; else echo ".venv-tf$1"; fi; }
"$(venv_of "${lines%% *}")/bin/ruff" check .
status=0
summary=()
for line in $lines; do
  venv=$(venv_of "$line")
  version=$("$venv/bin/python" -c "import transformers; print(transformers.__version__)")
  echo "=== transformers $version ($venv) ==="
  start=$SECONDS
  if "$venv/bin/python" -m pytest -q -ra "$@"; then result=passed; else result=FAILED; status=1; fi
  summary+=("transformers $version: $result in $((SECONDS - start)) s")
done
printf '%s\n' "${summary[@]}"
exit $status
