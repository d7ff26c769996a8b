#!/usr/bin/env bash
# The prepared GPU check (bench/gpu_check.py): greedy parity, bf16 tolerance, the KV pool sizing and
# continuous vs static vs HF generate throughput, on CUDA when present, else the CPU.
#   bash bench/gpu_check.sh [--quick] [--out DIR]     ($OUT, when set, is the default for --out)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-$(mktemp -d)}"
export HF_HUB_OFFLINE=1 BATCHSCOPE_MODEL_CACHE="$out/models" HF_HUB_DISABLE_PROGRESS_BARS=1 TRANSFORMERS_VERBOSITY=error
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && python=.venv/bin/python
exec "$python" bench/gpu_check.py --out "$out" "$@"
