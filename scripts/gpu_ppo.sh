#!/usr/bin/env bash
# Issue 15's figures on one GPU (an H200 for the goal): PPO steps with `looper ppo --engine fast`
# beside TRL's own transformers sampling, in the same run (benchmarks/gpu_ppo.py: the SmolLM2
# GGUF case and the random 8B-shape case, a few minutes; a table last, gpu_ppo.json in $OUT).
# Its inputs travel in .gpu/ and are prepared as for scripts/gpu_smollm2.sh:
#   call 1, carrying .gpu (whl/, data/, gguf_a/, gguf.sha256): SKIP_ENGINE_CHECK=1 bash scripts/gpu_smollm2.sh upload
#   call 2, carrying .gpu (gguf_b/):                          bash scripts/gpu_ppo.sh [gpu_ppo.py options]
# MODEL=... and DATA=... point elsewhere; `--cases 8b --tokenizer DIR` needs no GGUF.
set -euo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
G=/tmp/gg
MODEL=${MODEL:-$G/SmolLM2-135M-Instruct.Q4_1.gguf}
DATA=${DATA:-$G/data/gsm8k}
if [ ! -f "$MODEL" ] && [ -f .gpu/gguf_b/smol.part01 ]; then bash scripts/gpu_smollm2.sh join; fi
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 benchmarks/gpu_ppo.py --model "$MODEL" --data "$DATA" ${OUT:+--out "$OUT"} "$@" 2>&1 | tee /tmp/gpu_ppo.log
