#!/usr/bin/env bash
# The multi-GPU runs behind issues 4 and 7, on a lent 4-GPU machine (nvidia-h200-x4; on x2 set SCALE_GPUS=2),
# which has torch/transformers/peft/accelerate but no trl/datasets/liger and no network.
#   phase "scaling" (carry .gpu/whl .whl .gpu/data .gpu/gguf_a .gpu/gguf.sha256):
#       install the carried wheels, keep the first GGUF half, then
#       rollout-engine throughput on 1 vs 2 vs 4 GPUs (bench_gpu.py scaling)
#   phase "train" (carry .gpu/gguf_b), right after, while the machine is warm:
#       `looper sft` of SmolLM2-135M on 1 GPU, on 2 (DDP), on 2 with FSDP2, then a short eval
#       of both 2-GPU adapters (they load back and answer)
# Everything lands in /tmp/multi and comes back as $OUT/multi.tgz.
set -uo pipefail
phase=$1
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
R=/tmp/multi
mkdir -p $R
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader
if [ "$phase" = scaling ]; then
  SKIP_ENGINE_CHECK=1 bash scripts/gpu_smollm2.sh upload || exit
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/liger_kernel-*.whl || exit
  export PYTHONPATH=/tmp/site:$PWD
  python3 benchmarks/bench_gpu.py scaling --gpus ${SCALE_GPUS:-2,4} --questions ${SCALE_QUESTIONS:-512} --out $R/scaling 2>&1 | tee $R/scaling.log
fi
if [ "$phase" = train ]; then
  bash scripts/gpu_smollm2.sh join || exit
  export PYTHONPATH=/tmp/site:$PWD
  M=/tmp/gg/SmolLM2-135M-Instruct.Q4_1.gguf D=/tmp/gg/data/gsm8k
  sft() {  # name, extra options
    local name=$1; shift
    CUDA_VISIBLE_DEVICES=0,1 python3 -m looper_cli sft --base-model $M --data $D --batch-size 32 \
        --max-length 768 --lora-r 128 --lora-alpha 256 --lr 3e-4 --max-steps 60 --save-steps 30 \
        --no-gradient-checkpointing -o $R/$name "$@" > $R/$name.log 2>&1
    echo "$name: exit $?"; tail -n 14 $R/$name.log
  }
  sft sft-1gpu --gpus 1
  sft sft-2gpu --gpus 2
  sft sft-2gpu-fsdp2 --gpus 2 --accelerate-config configs/accelerate/fsdp2.yaml
  CUDA_VISIBLE_DEVICES=0 python3 -m looper_cli eval --checkpoint $R/sft-2gpu --checkpoint $R/sft-2gpu-fsdp2 \
      --dataset $D --limit 200 --max-new-tokens 256 --output $R/eval-2gpu > $R/eval.log 2>&1
  echo "eval: exit $?"; tail -n 12 $R/eval.log
fi
tar czf $OUT/multi.tgz --exclude='*.safetensors' --exclude='checkpoint-*' --exclude='*.pt' --exclude='*.bin' -C $R .
