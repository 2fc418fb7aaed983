#!/usr/bin/env bash
# `looper sft` itself on the 8B shape, one GPU: the default (gradient checkpointing) against
# --compile --liger, on GSM8K train. The model is a random-init Llama of the 8B shape with a
# small BPE tokenizer (benchmarks/gpu_rollout_cli.py; GSM8K text makes rows of ~300-900
# tokens with it). Carry .gpu/whl .gpu/data .whl.
#   SFT_STEPS=60 bash scripts/gpu_sft_compile.sh [build|run]   (no argument: both)
set -uo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
R=/tmp/sft-compile M=/tmp/m8b
mkdir -p $R
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/whl/*.whl .whl/*.whl || exit
rm -rf /tmp/site/looper_cli  # the tree's looper_cli, the wheel's compiled core
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
if [ "${1:-build}" = build ] && [ ! -f $M/config.json ]; then
  python3 benchmarks/gpu_rollout_cli.py $M || exit
fi
[ "${1:-run}" = run ] || [ $# -eq 0 ] || exit 0
sft() {  # name, options
  local name=$1; shift
  rm -rf $R/$name
  python3 -m looper_cli sft --base-model $M --data .gpu/data/gsm8k --template plain --batch-size ${SFT_BATCH:-16} \
      --max-length 2048 --max-steps ${SFT_STEPS:-60} --save-steps 1000 -o $R/$name "$@" > $R/$name.log 2>&1
  echo "== $name (exit $?)"; tail -n 16 $R/$name.log
  python3 -c "import json,sys; s=json.load(open('$R/$name/summary.json')); print({k: s.get(k) for k in ('steps','seconds','tokens','tokens_per_s','second_half_tokens_per_s','peak_gpu_gib','first_loss','final_loss','compiled_layers')})" 2>/dev/null
}
sft default
sft compile --compile --liger
[ -z "${OUT:-}" ] || tar czf $OUT/sft-compile.tgz --exclude='*.safetensors' --exclude='checkpoint-*' -C $R .
