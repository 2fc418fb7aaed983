#!/usr/bin/env bash
# Issue 15's SmolLM2 PPO figures, then issue 16's study (scripts/study_smollm2.sh), on one lent H200,
# in consecutive device calls (the machine stays warm 30 s between calls; a call lasts at most 10 min,
# so the work runs in its own process session and each call follows it for a while):
#   call "up"   (carry .gpu/gguf_a .gpu/gguf.sha256 .gpu/data .gpu/whl .gpu/whl_alt .gpu/whl_b): wheels, data,
#               GGUF half 1 (whl_b holds gguf: transformers needs it to read the GGUF)
#   call "go"   (carry .gpu/gguf_b): join the GGUF, start "work" (PPO_SECONDS=N sets the arms' stop), follow it
#   call "wait" (no carry): follow it for up to WAIT seconds (default 570); bring back logs and results
# Inputs in .gpu/ (git-ignored): see docs/perf-notes.md "Device setup".
set -uo pipefail
phase=$1
source scripts/gpu_common.sh  # G, M, device_setup, join_gguf
R=/tmp/study LOG=/tmp/work.log DONE=/tmp/work.rc
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=4
export PYTHONPATH=/tmp/site:$PWD
mkdir -p $G
if [ "$phase" = up ]; then
  device_setup || exit 1
  python3 -c 'import gguf, torch, transformers, trl, datasets, peft, regime_w_core; print("torch", torch.__version__, "transformers", transformers.__version__, "trl", trl.__version__, "datasets", datasets.__version__, "peft", peft.__version__)'
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  exit 0
fi
if [ "$phase" = go ]; then
  join_gguf || exit 1
  rm -f $DONE
  cp -r . /tmp/tree  # the work outlives this call's copy of the tree
  (cd /tmp/tree && setsid nohup env -u OUT bash scripts/gpu_study.sh work > $LOG 2>&1 < /dev/null &)
  phase=wait
fi
if [ "$phase" = work ]; then
  T0=$(date +%s)
  echo "== issue 15: PPO steps on SmolLM2, the engine vs TRL's sampling"
  timeout 200 python3 benchmarks/gpu_ppo.py --cases smol --paths fast,trl --model $M --data $G/data/gsm8k \
      --steps 3 --budget 190 --out $R/bench15
  echo "== bench took $(( $(date +%s) - T0 )) s"
  echo "== issue 16: the study"
  M=$M D=$G/data/gsm8k P=$G/data/gsm8k_platinum R=$R GPU_KV=8 PPO_SECONDS=${PPO_SECONDS:-800} \
      bash scripts/study_smollm2.sh
  rc=$?
  echo "== work ended, exit $rc, $(( $(date +%s) - T0 )) s"
  echo $rc > $DONE
  exit 0
fi
if [ "$phase" = wait ]; then
  for _ in $(seq 1 $(( ${WAIT:-570} / 5 ))); do [ -f $DONE ] && break; sleep 5; done
  cp $LOG $OUT/work.log
  for f in $R/logs/*.log; do echo "== $f"; tail -c 1500 "$f" | tr '\r' '\n' | tail -n 6; done > $OUT/status.txt 2>&1
  tar czf /tmp/results.tgz -C /tmp --exclude='*.safetensors' --exclude='checkpoint-*' --exclude='*.bin' \
      --exclude='*.pt' --exclude='*.pth' --exclude='rollouts.shards' study 2>/dev/null
  (cd $OUT && split -b 15M -d /tmp/results.tgz results.tgz.part)
  ls -la $OUT | tail -n +2 | head -3
  [ -f $DONE ] && echo "work finished, exit $(cat $DONE)" || echo "work still running"
  tail -c 4000 $LOG
  nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader
fi
