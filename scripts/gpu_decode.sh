#!/usr/bin/env bash
# Issue 15's decode-step work on one warm H200, in two consecutive calls (an upload is capped at
# 64 MiB, so the SmolLM2 GGUF travels in two halves). .gpu/old holds the engine before the change
# (`git archive <rev> looper_cli`), run with this tree's benchmark scripts, in the same call:
#   call a (carry .gpu/gguf_a .gpu/gguf.sha256 .gpu/data .gpu/whl .gpu/whl_alt .gpu/whl_b .gpu/old):
#          bash scripts/gpu_decode.sh a  -> GPU checks (greedy == transformers), prefill attention's
#          first call at new shapes, one decode step's replay, wall time and kernels at 64 rows,
#          SmolLM2 shape, LoRA r=128: before and after
#   call b (carry .gpu/gguf_b): bash scripts/gpu_decode.sh b  -> ppo steps on SmolLM2 (64 x 256):
#          the engine before, after, and TRL's own sampling
#   call c: bash scripts/gpu_decode.sh c  -> ppo steps on the 8B shape: the engine and TRL's sampling
#   --steps-per-generation (generation amortised over N optimizer steps), three calls on one warm machine:
#   call spg-a (carry as a, .gpu/tok but not .gpu/old): setup, then the 8B shape: fast and fast@4
#   call spg-b (carry .gpu/gguf_b): SmolLM2 64 x 256: fast, fast@2, fast@4, TRL's own sampling at 1 and 4
#   call spg-c: SmolLM2 with the training step compiled: fast-compile, @2 and @4 (run 21's call 4 ran @2 and @4)
#   call split-8b (carry as spg-a): where the 8B shape's training step goes (gpu_ppo.py --split), 8 steps,
#          with expandable segments (ppo's setting), with the allocator's default, and with the cache released
# STEP_TREES="" skips call a's before/after decode steps; STEP_VARIANTS (below) adds runs of this tree
# under other settings; STEP_ADAPTERS=true measures with the LoRA adapter only; SECTIONS=,attention adds
# the attention section; STEP_SAMPLES=8 times generations of 8 samples a prompt (shared prompt blocks, as in ppo).
set -uo pipefail
phase=$1
source scripts/gpu_common.sh  # G, M, device_setup, join_gguf
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH=/tmp/site:$PWD
OLD=/tmp/old
mkdir -p $G ${OUT:=/tmp/out}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if [ "$phase" = a ]; then
  device_setup || exit 1
  rm -rf $OLD && mkdir -p $OLD && cp -r .gpu/old/looper_cli benchmarks $OLD/
  python3 -c 'import torch, transformers, trl, peft; print("torch", torch.__version__, "transformers", transformers.__version__, "trl", trl.__version__, "peft", peft.__version__)'
  timeout 150 python3 benchmarks/bench_engine.py ${CHECKS:-check,sdpa}${SECTIONS:-} --attention-shape smol --attention-rows 64 \
      --contexts 256,512 --tiles 64,128,256 --out $OUT/check 2>&1 | grep -v '^{' | tee $OUT/check.log
  step() {  # $1: tree, $2: name, then VAR=value settings for the run
    (cd $1 && env "${@:3}" timeout 170 python3 benchmarks/bench_engine.py step --step-rows 64 --profile \
        --step-adapters ${STEP_ADAPTERS:-false,true} --step-samples ${STEP_SAMPLES:-1} --out $OUT/step-$2) 2>&1 | grep -v '^{' | tee $OUT/step-$2.log
  }
  for tree in ${STEP_TREES-$OLD $PWD}; do
    step $tree $([ $tree = $OLD ] && echo before || echo after)
  done
  # STEP_VARIANTS="name:VAR=value,VAR=value ...": this tree again under inductor settings, e.g.
  # autotune:TORCHINDUCTOR_MAX_AUTOTUNE_GEMM=1 (Triton GEMM templates with fused epilogues)
  for variant in ${STEP_VARIANTS:-}; do
    step $PWD "after-${variant%%:*}" $(tr , ' ' <<< "${variant#*:}")
  done
fi
if [ "$phase" = b ]; then
  join_gguf || exit 1
  ppo() { timeout $1 python3 benchmarks/gpu_ppo.py --cases smol --model $M --data $G/data/gsm8k --budget $(($1 - 10)) "${@:2}"; }
  (cd $OLD && ppo 170 --paths fast --warmup 3 --steps 5 --out $OUT/ppo-before) 2>&1 | tee $OUT/ppo-before.log
  ppo 170 --paths fast --warmup 3 --steps 5 --out $OUT/ppo-after 2>&1 | tee $OUT/ppo-after.log
  ppo 200 --paths trl --steps 3 --out $OUT/ppo-trl 2>&1 | tee $OUT/ppo-trl.log
fi
ppo_runs() {  # $1: case, $2: seconds, then gpu_ppo.py's options; rows and log under $OUT/ppo-$3-...
  timeout $2 python3 benchmarks/gpu_ppo.py --cases $1 --model ${M} --data $G/data/gsm8k --budget $(($2 - 10)) \
      --child-timeout $(($2 - 10)) "${@:3}"
}
if [ "$phase" = spg-a ]; then
  device_setup || exit 1
  python3 -c 'import torch, transformers, trl, peft; print("torch", torch.__version__, "transformers", transformers.__version__, "trl", trl.__version__, "peft", peft.__version__)'
  M=/nonexistent ppo_runs 8b 400 --tokenizer .gpu/tok --paths fast,fast@4 --warmup 2 --steps 4 --out $OUT/spg-8b 2>&1 | tee $OUT/spg-8b.log
fi
if [ "$phase" = split-8b ]; then
  device_setup || exit 1
  split8b() { M=/nonexistent ppo_runs 8b 150 --tokenizer .gpu/tok --warmup 2 --steps 8 --split "$@"; }
  split8b --paths fast --out $OUT/split-8b 2>&1 | tee $OUT/split-8b.log
  PYTORCH_CUDA_ALLOC_CONF= split8b --paths fast --workdir /tmp/gpu_ppo_plain --out $OUT/split-8b-plain 2>&1 | tee $OUT/split-8b-plain.log
  split8b --paths fast-release --out $OUT/split-8b-release 2>&1 | tee $OUT/split-8b-release.log
fi
if [ "$phase" = spg-b ]; then
  join_gguf || exit 1
  ppo_runs smol 260 --paths fast,fast@2,fast@4 --warmup 4 --steps 8 --out $OUT/spg-smol-fast 2>&1 | tee $OUT/spg-smol-fast.log
  ppo_runs smol 330 --paths trl,trl@4 --warmup 1 --steps 3 --out $OUT/spg-smol-trl 2>&1 | tee $OUT/spg-smol-trl.log
fi
if [ "$phase" = spg-c ]; then
  # two phases of warm-up: the second shape, which makes the compiled layers dynamic, comes with the second phase
  ppo_runs smol 450 --paths fast-compile,fast-compile@2,fast-compile@4 --warmup 8 --steps 8 --activation-budget ${BUDGET:-0.8} \
      --out $OUT/spg-smol-compile 2>&1 | tee $OUT/spg-smol-compile.log
fi
if [ "$phase" = c ]; then  # the 8B shape (random init, EOS 1/100), LoRA r=64, 16 x up to 1,024: engine vs TRL
  timeout 560 python3 benchmarks/gpu_ppo.py --cases 8b --model $M --data $G/data/gsm8k --paths fast,trl \
      --budget 540 --child-timeout 270 --out $OUT/ppo-8b 2>&1 | tee $OUT/ppo-8b.log
fi
