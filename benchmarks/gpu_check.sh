#!/usr/bin/env bash
# The prepared GPU check (benchmarks/gpu_check.py: CUDA tests, the time/memory figure against K,
# 3 min of Omniglot-shaped meta-training), under 8 minutes on one GPU; figures into OUT.
#   benchmarks/gpu_check.sh [OUT]         default OUT: results/gpu
#   benchmarks/gpu_check.sh --dry [OUT]   the CPU rehearsal: tiny sizes, the same code
set -euo pipefail
cd "$(dirname "$0")/.."
python=python3
[ -x .venv/bin/python ] && python=.venv/bin/python
exec "$python" benchmarks/gpu_check.py "$@"
