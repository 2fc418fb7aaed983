#!/usr/bin/env bash
# Issue 14's engine figures on a lent GPU (carry .gpu/static_engine, made by
# scripts/static_engine.sh): correctness checks, the attention kernel, and the
# paged vs static vs transformers rollout on the 8B shape.
#   SECTION=all|check|attention|rollout (default all); EXTRA: more bench_engine.py flags
set -uo pipefail
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
export PYTHONPATH=$PWD/.gpu:$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
timeout ${LIMIT:-560} python3 benchmarks/bench_engine.py ${SECTION:-all} --out ${OUT:-/tmp/bench} ${EXTRA:-} 2>&1 \
  | tee ${OUT:-/tmp/bench}/bench_engine.log | grep -v '^{'
