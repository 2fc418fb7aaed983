#!/usr/bin/env bash
# The GPU figures of issues 14 and 15 in three consecutive calls on one warm H200
# (an upload is capped at 64 MiB, so the SmolLM2 GGUF travels in two halves).
# Inputs in .gpu/ (git-ignored; see docs/perf-notes.md "Device setup"): static_engine/
# (scripts/static_engine.sh), gguf_a/ gguf_b/ gguf.sha256 (the GGUF split), data/ (GSM8K),
# whl/ (trl, datasets 5.2 + deps, the looper wheel), whl_alt/ (datasets 4.7 for pyarrow < 24).
#   call a (carry .gpu/static_engine .gpu/gguf_a .gpu/gguf.sha256 .gpu/data .gpu/whl .gpu/whl_alt):
#          bash scripts/gpu_session.sh a   -> engine checks, 8B-shape rollout: paged vs static vs HF
#   call b (carry .gpu/static_engine .gpu/gguf_b): bash scripts/gpu_session.sh b
#          -> SmolLM2 on GSM8K: paged vs static vs HF; PPO steps (smol): engine vs TRL's sampling
#   call c: bash scripts/gpu_session.sh c   -> PPO steps on the 8B shape: engine vs TRL's sampling
set -uo pipefail
phase=$1
source scripts/gpu_common.sh  # G, M, device_setup, join_gguf
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH=/tmp/site:$PWD/.gpu:$PWD
mkdir -p $G ${OUT:=/tmp/out}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if [ "$phase" = a ]; then
  device_setup || exit 1
  python3 -c 'import pyarrow, torch, transformers, trl, datasets, regime_w_core; print("pyarrow", pyarrow.__version__, "torch", torch.__version__, "transformers", transformers.__version__, "trl", trl.__version__, "datasets", datasets.__version__)'
  timeout 520 python3 benchmarks/bench_engine.py check,rollout --prompts ${PROMPTS:-512} --max-seqs 256,512 \
      --out $OUT/a 2>&1 | grep -v '^{' | tee $OUT/a.log
fi
if [ "$phase" = b ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/whl_b/*.whl
  join_gguf || exit 1
  timeout 200 python3 benchmarks/bench_engine.py real --model $M --data $G/data/gsm8k/train.jsonl --questions 1000 \
      --real-cap 512 --max-seqs 512,1024 --static-batch 512 --out $OUT/b 2>&1 | grep -v '^{' | tee $OUT/b-engine.log
  timeout 330 python3 benchmarks/gpu_ppo.py --cases smol --model $M --data $G/data/gsm8k --budget 300 \
      --out $OUT/b 2>&1 | tee $OUT/b-ppo.log
fi
if [ "$phase" = c ]; then
  timeout 560 python3 benchmarks/gpu_ppo.py --cases 8b --model $M --data $G/data/gsm8k --budget 520 \
      --child-timeout 300 --out $OUT/c 2>&1 | tee $OUT/c-ppo.log
fi
