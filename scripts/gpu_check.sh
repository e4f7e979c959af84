#!/usr/bin/env bash
# The GPU check (issue 15): paper-scale throughput and memory, CPU/GPU parity, a short training run end to end.
# Runs on a GPU machine that has only Python, torch and lightning: what else bagof needs travels as wheels
# in .whl/ (made here by scripts/gpu_wheels.sh) and coco128 in .gpu/datasets/ (copied by the same script).
#   scripts/gpu_check.sh             on the GPU machine: writes reports/bench/gpu.json (or $OUT/gpu.json)
#   scripts/gpu_check.sh --dry-run   anywhere: every part on the CPU at smoke size (the test suite runs it)
# Extra arguments go to `python -m bagof.cli.gpu_check` (--parts, --epochs, --out).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ -d .whl ] && ! "$PY" -c "import hydra, omegaconf, albumentations, pycocotools" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/bagof-site .whl/*.whl
  export PYTHONPATH=/tmp/bagof-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
args=()
[ -d .gpu/datasets/coco128 ] && args+=(--datasets "$PWD/.gpu/datasets")
if [ -n "${OUT:-}" ] && [[ " $* " != *" --out "* ]] && [[ " $* " != *" --dry-run "* ]]; then
  args+=(--out "$OUT/gpu.json")  # the device tool brings back what is under $OUT
fi
exec "$PY" -m bagof.cli.gpu_check "${args[@]}" "$@"
