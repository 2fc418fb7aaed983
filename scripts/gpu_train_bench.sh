#!/usr/bin/env bash
# Issue 7's training figures on one GPU (an H100 for the goal): LoRA SFT and DPO of the
# 8B shape, 2048-token rows, each variant in its own process (a compile memory budget is
# read once per process), the plain HF baseline first. Carry .whl (liger-kernel).
#   [TRAIN_PROFILE=1] bash scripts/gpu_train_bench.sh [VARIANT...]   (profile: GPU time per kernel family)
set -uo pipefail
export PYTHONUNBUFFERED=1
R=/tmp/train-bench
mkdir -p $R
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/liger_kernel-*.whl || exit
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
[ $# -gt 0 ] || set -- hf+ckpt-amp flce+compile-mem0.8-amp dpo:hf+ckpt-amp dpo:flce+compile-mem0.8-amp
for v in "$@"; do
  python3 benchmarks/bench_gpu.py train --train-variants "$v" ${TRAIN_PROFILE:+--train-profile} \
      --out "$R/$v" > "$R/$v.log" 2>&1
  echo "== $v (exit $?)"; grep -hE "^(train|profile) " "$R/$v.log" || tail -n 5 "$R/$v.log"
  if [ -n "${OUT:-}" ]; then tar czf $OUT/train-bench.tgz -C $R .; fi  # each time: a cut-off call keeps what ran
done
