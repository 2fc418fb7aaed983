#!/usr/bin/env bash
# The real-model run behind the README's Results, as run on a lent GPU machine that
# has torch/transformers/peft/accelerate but no trl/datasets and no network.
#   phase "upload": keep the first half of the GGUF (an upload is capped at 64 MiB)
#   phase "join": join the GGUF halves only (other scripts run the model)
#   phase "pipeline": join the GGUF, install the carried wheels, run the pipeline
#   phase "extra": Platinum evals of every stage, maj@8 / Regime W vote@8 of the final model
#   phase "start": launch "extra" in its own process session (it outlives the call, which a
#                  device command may not: 10 minutes), then "wait"
#   phase "wait":  follow that run for up to WAIT seconds (default 570), then bring back its
#                  log and results (and train-bench.tgz); call again while the machine is warm
# Inputs travel in .gpu/ (git-ignored): whl/ (trl, datasets, ..., our looper wheel),
# data/ (GSM8K, Platinum), gguf_a/ and gguf_b/ (the two halves of the GGUF); the upload
# phase copies them under /tmp, which lasts while the machine stays warm.
set -euo pipefail
phase=$1
G=/tmp/gg
M=$G/SmolLM2-135M-Instruct.Q4_1.gguf
RUN=runs/smollm2-135m
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p $G
if [ "$phase" = upload ]; then
  cp .gpu/gguf_a/* .gpu/gguf.sha256 $G/ && cp -r .gpu/data $G/
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/whl/*.whl
  rm -rf /tmp/site/looper_cli  # the wheel's copy; run the tree's own looper_cli
  if [ -z "${SKIP_ENGINE_CHECK:-}" ]; then
    python3 benchmarks/gpu_left_pad_nan.py || true  # why PPO uses eager attention here
  fi
  python3 -c 'import pyarrow, fsspec, torch, transformers; print(pyarrow.__version__, fsspec.__version__, torch.__version__, transformers.__version__)'
  PYTHONPATH=/tmp/site python3 -c 'import trl, datasets, regime_w_core; print(trl.__version__, datasets.__version__, regime_w_core.__version__)'
  exit 0
fi
if [ ! -f $M ]; then
  cat $G/smol.part00 .gpu/gguf_b/smol.part01 > $M
  echo "$(cut -d' ' -f1 $G/gguf.sha256)  $M" | sha256sum -c -
fi
if [ "$phase" = join ]; then exit 0; fi
export PYTHONPATH=/tmp/site:$PWD
LOG=/tmp/looper-extra.log DONE=/tmp/looper-extra.rc
if [ "$phase" = start ]; then
  rm -f $DONE
  setsid nohup env -u OUT bash -c "bash $0 extra; echo \$? > $DONE" > $LOG 2>&1 < /dev/null &
  phase=wait
fi
if [ "$phase" = wait ]; then
  for _ in $(seq 1 $(( ${WAIT:-570} / 5 ))); do [ -f $DONE ] && break; sleep 5; done
  cp $LOG $OUT/extra.log
  if [ -d /tmp/train-bench ]; then tar czf $OUT/train-bench.tgz -C /tmp/train-bench .; fi
  [ -f $DONE ] && echo "extra finished, exit $(cat $DONE)" || echo "extra still running"
  tail -c 3000 $LOG
fi
looper() { python3 -m looper_cli "$@"; }
D=$G/data/gsm8k P=$G/data/gsm8k_platinum
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
if [ "$phase" = pipeline ]; then
  time looper pipeline --config configs/smollm2-135m.toml --base-model $M --data $D --eval-data $D
fi
if [ "$phase" = extra ]; then
  # PPO runs apart, so that a failing PPO cannot cost the other stages' evals.
  time looper pipeline --config configs/smollm2-135m.toml --base-model $M --data $D --eval-data $D \
      --stages sft,rollout,prefs,dpo,eval
  time looper pipeline --config configs/smollm2-135m.toml --base-model $M --data $D --eval-data $D \
      --stages ppo,eval || echo "PPO FAILED"
  stages=(--checkpoint $M --checkpoint $RUN/sft --checkpoint $RUN/dpo) final=$RUN/dpo
  if [ -f $RUN/ppo/summary.json ]; then stages+=(--checkpoint $RUN/ppo); final=$RUN/ppo; fi
  time looper eval "${stages[@]}" --dataset $P --max-new-tokens 320 --batch-size 512 \
      --output $RUN/eval-platinum || echo "PLATINUM EVAL FAILED"
  time looper eval --checkpoint $final --dataset $D --samples 8 --temperature 0.8 \
      --max-new-tokens 320 --batch-size 1024 --bandit $RUN --output $RUN/eval-k8 || echo "K8 EVAL FAILED"
  # with TRAIN_BENCH=1 (and .whl carried): issue 7's training figures on the same GPU, after the run
  [ -z "${TRAIN_BENCH:-}" ] || bash scripts/gpu_train_bench.sh
fi
if [ -n "${OUT:-}" ] && [ -d $RUN ] && [ "$phase" != extra ]; then
  tar czf $OUT/results.tgz --exclude='*.safetensors' --exclude='checkpoint-*' --exclude='*.bin' \
      --exclude='*.pt' --exclude='*.pth' --exclude='*.prev' --exclude='rollouts.shards' $RUN
fi
