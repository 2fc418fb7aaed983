#!/usr/bin/env bash
# The multi-GPU runs behind issues 4 and 7, on a lent 4-GPU machine (nvidia-h200-x4; on x2 set SCALE_GPUS=2),
# which has torch/transformers/peft/accelerate but no trl/datasets/liger and no network.
#   phase "scaling" (carry .gpu/whl .whl .gpu/data .gpu/gguf_a .gpu/gguf.sha256):
#       install the carried wheels, keep the first GGUF half, then
#       rollout-engine throughput on 1 vs 2 vs 4 GPUs (bench_gpu.py scaling)
#   phase "sft-small" (carry .gpu/whl .gpu/data), one call: the same sft runs on a random-init model
#       of the SmolLM2-135M shape; with SCALE_GPUS=2 the engine scaling run after them
#   phase "train" (carry .gpu/gguf_b), right after "scaling", while the machine is warm:
#       `looper sft` of SmolLM2-135M on 1 GPU, on 2 (DDP), on 2 with FSDP2, then a short eval
#       of both 2-GPU adapters (they load back and answer)
#   phase "rollout" (carry .gpu/whl .gpu/data): `looper rollout --gpus N` end to end on a
#       random-init 8B-shape Llama, for N = 1 and each of SCALE_GPUS (default 2), after a short
#       run that fills the compile caches (every N then starts equally warm); ROLLOUT_QUESTIONS
#       (default 1024) x 8 samples x 256 new tokens; then `looper sft --gpus 1` with every GPU
#       visible (the DataParallel fix; SFT_CHECK=0 skips it)
# Everything lands in /tmp/multi and comes back as $OUT/multi.tgz.
set -uo pipefail
phase=$1
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
R=/tmp/multi
mkdir -p $R
bring_back() { tar czf $OUT/multi.tgz --exclude='*.safetensors' --exclude='checkpoint-*' --exclude='*.pt' --exclude='*.bin' -C $R .; }
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader
if [ "$phase" = scaling ]; then
  SKIP_ENGINE_CHECK=1 bash scripts/gpu_smollm2.sh upload || exit
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/liger_kernel-*.whl || exit
  export PYTHONPATH=/tmp/site:$PWD
  python3 benchmarks/bench_gpu.py scaling --gpus ${SCALE_GPUS:-2,4} --questions ${SCALE_QUESTIONS:-512} --out $R/scaling 2>&1 | tee $R/scaling.log
fi
if [ "$phase" = rollout ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/whl/*.whl 2>/dev/null || exit
  rm -rf /tmp/site/looper_cli
  export PYTHONPATH=/tmp/site:$PWD
  [ -f /tmp/m8b/config.json ] || python3 benchmarks/gpu_rollout_cli.py /tmp/m8b 2>&1 | tail -n 1
  rollout() {  # name, questions, gpus
    rm -rf $R/$1
    python3 -m looper_cli rollout --base-model /tmp/m8b --data synthetic:$2 --samples 8 --max-new-tokens 256 \
        --batch-size 512 --gpus $3 --output $R/$1/rollouts.jsonl > $R/$1.log 2>&1
    echo "$1: exit $?"
    python3 -c "import json; s=json.load(open('$R/$1/rollouts.summary.json')); print({k: s[k] for k in ('questions','solutions','generated_tokens','tokens_per_s','seconds')})"
  }
  rollout warm 64 1
  rollout rollout-1gpu ${ROLLOUT_QUESTIONS:-1024} 1
  for n in ${SCALE_GPUS:-2}; do rollout rollout-${n}gpu ${ROLLOUT_QUESTIONS:-1024} $n; done
  bring_back
  [ "${SFT_CHECK:-1}" = 1 ] || exit 0
  python3 -m looper_cli sft --base-model /tmp/m8b --data .gpu/data/gsm8k --gpus 1 --max-steps 3 --batch-size 2 \
      --max-length 512 --save-steps 100 -o $R/sft-gpus1-visible2 > $R/sft-gpus1.log 2>&1
  echo "sft --gpus 1 with $(nvidia-smi -L | wc -l) GPUs visible: exit $?"; tail -n 12 $R/sft-gpus1.log
fi
if [ "$phase" = train ]; then
  bash scripts/gpu_smollm2.sh join || exit
  M=/tmp/gg/SmolLM2-135M-Instruct.Q4_1.gguf
fi
if [ "$phase" = sft-small ]; then  # one call, no GGUF: a random-init model of the SmolLM2-135M shape
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/whl/*.whl || exit
  rm -rf /tmp/site/looper_cli
  M=/tmp/smollm2-shape
  PYTHONPATH=/tmp/site:$PWD python3 -c '
from looper_cli.data import load_problems
from looper_cli.tiny import TinyConfig, build_tiny_model
texts = [p.question + "\n" + p.answer for p in load_problems(".gpu/data/gsm8k", split="train", limit=3000)]
shape = TinyConfig(vocab_size=8192, hidden_size=576, layers=30, heads=9, kv_heads=3, intermediate_size=1536,
                   max_positions=2048)
print("built", build_tiny_model("'$M'", texts, shape))' || exit
fi
if [ "$phase" = train ] || [ "$phase" = sft-small ]; then
  export PYTHONPATH=/tmp/site:$PWD
  D=$PWD/.gpu/data/gsm8k
  [ -d $D ] || D=/tmp/gg/data/gsm8k
  sft() {  # name, extra options
    local name=$1; shift
    CUDA_VISIBLE_DEVICES=0,1 python3 -m looper_cli sft --base-model $M --data $D --batch-size 32 \
        --max-length 768 --lora-r 128 --lora-alpha 256 --lr 3e-4 --max-steps ${SFT_STEPS:-60} --save-steps 30 \
        --no-gradient-checkpointing -o $R/$name "$@" > $R/$name.log 2>&1
    echo "$name: exit $?"; tail -n 14 $R/$name.log
  }
  sft sft-1gpu --gpus 1
  sft sft-2gpu --gpus 2
  sft sft-2gpu-fsdp2 --gpus 2 --accelerate-config configs/accelerate/fsdp2.yaml
  CUDA_VISIBLE_DEVICES=0 python3 -m looper_cli eval --checkpoint $R/sft-2gpu --checkpoint $R/sft-2gpu-fsdp2 \
      --dataset $D --limit 200 --max-new-tokens 256 --output $R/eval-2gpu > $R/eval.log 2>&1
  echo "eval: exit $?"; tail -n 12 $R/eval.log
  bring_back  # before the optional scaling run, in case it is cut off
  if [ -n "${SCALE_GPUS:-}" ]; then
    python3 benchmarks/bench_gpu.py scaling --gpus $SCALE_GPUS --questions ${SCALE_QUESTIONS:-256} \
        --out $R/scaling 2>&1 | tee $R/scaling.log
  fi
fi
bring_back
