#!/usr/bin/env bash
# Issue 16's study on SmolLM2-135M-Instruct: does Regime W help?
#   SFT on GSM8K train minus its last 500 problems (the held-out slice), then side by side on one GPU:
#   - PPO reward ablation from the SFT adapter, same seed/steps/samples for each arm:
#       rw (alpha 1, beta 0.5, gamma 0.1), correctness-only (beta 0, gamma 0), corr-len (beta 0, gamma 0.1),
#       rw-m1 (rw with the coherence arm pinned to M1, s_cf: no agreement term for a collapse to buy);
#       ARMS="..." picks others, e.g. rw-gated (rw with --shaping correct: wrong answers earn 0)
#   - DPO pair ablation from the SFT adapter on the same rollouts: correctness pairs vs correctness + coherence
#   - greedy evals of every model on GSM8K test, GSM8K-Platinum and the held-out train slice
#   - K=32 samples of the model best on the held-out slice, on GSM8K test and on the held-out slice
#     (vote@K / maj@K for K = 8, 16, 32 are computed from these files: benchmarks/vote_from_rollouts.py)
# Every PPO arm runs PPO_STEPS steps (default 250). If PPO_SECONDS pass first, the arms are stopped
# and evaluated at the last checkpoint all of them reached, so they are compared at the same step.
#
#   M=PATH/SmolLM2-135M-Instruct.Q4_1.gguf D=PATH/gsm8k P=PATH/gsm8k_platinum R=runs/study \
#       bash scripts/study_smollm2.sh
# Knobs: ARMS, PPO_STEPS, PPO_SECONDS, PPO_LR, K, HELD_OUT, GPU_KV (GiB of KV cache per process, default 8).
# Smoke run on CPU (tiny model, a few steps of everything): SMOKE=1 with M a `looper tiny` folder.
set -uo pipefail
: "${M:?model}" "${D:?gsm8k folder}" "${P:?gsm8k_platinum folder}" "${R:=runs/study}"
CFG=configs/smollm2-135m.toml
HELD_OUT=${HELD_OUT:-500}
PPO_STEPS=${PPO_STEPS:-250} PPO_SECONDS=${PPO_SECONDS:-100000} SAVE_STEPS=${SAVE_STEPS:-25}
PPO_LR=${PPO_LR:-2e-5} K=${K:-32}
GPU_ENGINE=(--engine fast)  # every generating process shares the GPU: fixed cache sizes, not "free memory"
if [ -n "${SMOKE:-}" ]; then  # the same flow on CPU in minutes: tiny sizes everywhere
  HELD_OUT=20 SAVE_STEPS=2 K=4 GPU_ENGINE=(--engine hf)
  SFT_X=(--max-steps 3 --batch-size 4 --template chat) PPO_X=(--max-new-tokens 16 --limit 16 --template chat)
  EVAL_X=(--limit 6 --max-new-tokens 16 --template chat) ROLL_X=(--limit 6 --max-new-tokens 16 --template chat)
  DPO_X=(--max-steps 2 --batch-size 2) BS=16 GPU_KV=
else
  SFT_X=() PPO_X=() EVAL_X=(--max-new-tokens 320 --template chat) ROLL_X=(--max-new-tokens 320 --template chat)
  DPO_X=() BS=512 GPU_KV=${GPU_KV:-8}  # GiB of KV cache per generating process (votes: 3x)
fi
looper() { python3 -m looper_cli "$@"; }
stamp() { echo "[$(date +%T) +$(( $(date +%s) - T0 ))s] $*"; }
T0=$(date +%s)
mkdir -p $R/eval $R/logs
TRAIN="train[:-$HELD_OUT]" HELD="train[-$HELD_OUT:]"

# greedy evals of one model on the three sets (sequential: each loads the model once)
eval_model() {  # NAME CHECKPOINT
  local name=$1 ckpt=$2 set split data
  for set in test platinum heldout; do
    case $set in test) data=$D split=test ;; platinum) data=$P split=test ;; heldout) data=$D split=$HELD ;; esac
    looper eval --checkpoint "$ckpt" --base-model "$M" --dataset "$data" --split "$split" "${EVAL_X[@]}" \
        --batch-size $BS "${GPU_ENGINE[@]}" ${GPU_KV:+--kv-cache-gib $GPU_KV} --output $R/eval/$name-$set \
        || stamp "EVAL FAILED: $name $set"
  done
}

# the PPO arms (checked before anything runs)
read -ra ARMS <<< "${ARMS:-rw correctness-only corr-len rw-m1}"
declare -A ARM_ARGS=([rw]="--beta 0.5 --gamma 0.1" [correctness-only]="--beta 0 --gamma 0"
                     [corr-len]="--beta 0 --gamma 0.1" [rw-m1]="--beta 0.5 --gamma 0.1 --coherence-arm M1"
                     [rw-gated]="--beta 0.5 --gamma 0.1 --shaping correct"
                     [rw-m1-gated]="--beta 0.5 --gamma 0.1 --coherence-arm M1 --shaping correct")
for arm in "${ARMS[@]}"; do [ -n "${ARM_ARGS[$arm]:-}" ] || { echo "unknown arm $arm: ${!ARM_ARGS[*]}"; exit 2; }; done

stamp "SFT on $TRAIN"
looper sft --config $CFG --base-model "$M" --data "$D" --split "$TRAIN" "${SFT_X[@]}" --output $R/sft \
    > $R/logs/sft.log 2>&1 || { stamp "SFT FAILED"; tail -20 $R/logs/sft.log; exit 1; }
stamp "SFT done"

# PPO arms, side by side (each: 64 completions a step as 4 micro-batches of 16, so four fit one GPU)
pids=()
for arm in "${ARMS[@]}"; do
  # python itself in the background (not a shell function), so that its pid is the one to stop
  python3 -m looper_cli ppo --config $CFG --sft $R/sft --data "$D" --split "$TRAIN" --alpha 1 ${ARM_ARGS[$arm]} \
      --seed 0 --lr $PPO_LR --max-steps $PPO_STEPS --save-steps $SAVE_STEPS --save-total-limit 1000 --batch-size 16 --grad-accum 4 \
      "${GPU_ENGINE[@]}" ${GPU_KV:+--kv-cache-gib $GPU_KV} "${PPO_X[@]}" --output $R/ppo-$arm \
      > $R/logs/ppo-$arm.log 2>&1 &
  pids+=($!)
done
stamp "PPO arms started: ${pids[*]}"

# meanwhile: SFT evals, rollouts -> pairs -> DPO (both pair sets) -> DPO evals
(
  eval_model sft $R/sft
  stamp "rollouts from SFT"
  looper rollout --base-model "$M" --adapter $R/sft --data "$D" --split "$TRAIN" --limit 1000 --samples 8 \
      --temperature 0.8 "${ROLL_X[@]}" --batch-size $BS "${GPU_ENGINE[@]}" ${GPU_KV:+--kv-cache-gib $GPU_KV} \
      --output $R/rollouts.jsonl || stamp "ROLLOUT FAILED"
  for pairs in correctness correctness,coherence; do
    name=dpo-${pairs/,/+}
    looper prefs $R/rollouts.jsonl --config $CFG --kinds $pairs --output $R/prefs-${pairs/,/+}.jsonl
    looper dpo --config $CFG --sft $R/sft --prefs $R/prefs-${pairs/,/+}.jsonl "${DPO_X[@]}" --output $R/$name \
        > $R/logs/$name.log 2>&1 || stamp "DPO FAILED: $name"
    eval_model $name $R/$name
  done
  stamp "SFT/DPO branch done"
) > $R/logs/dpo-branch.log 2>&1 &
branch=$!

# stop the arms at PPO_SECONDS (or when all have finished)
until [ $(( $(date +%s) - T0 )) -ge $PPO_SECONDS ]; do
  alive=0; for p in "${pids[@]}"; do kill -0 $p 2>/dev/null && alive=1; done
  [ $alive = 1 ] || break
  sleep 5
done
for p in "${pids[@]}"; do kill $p 2>/dev/null; done; wait "${pids[@]}" 2>/dev/null
pkill -f "looper_cli ppo .*--output $R/ppo-" 2>/dev/null  # nothing of an arm may outlive this point (later timings share the GPU)
finished=1; for arm in "${ARMS[@]}"; do [ -f $R/ppo-$arm/summary.json ] || finished=0; done
if [ $finished = 1 ]; then common=$PPO_STEPS; else
  common=$(python3 scripts/study_checkpoints.py "${ARMS[@]/#/$R/ppo-}"); fi
stamp "PPO stopped; the arms are compared at step $common"
echo "$common" > $R/ppo-common-step.txt
ppo_checkpoint() { [ $finished = 1 ] && echo $R/ppo-$1 || echo $R/ppo-$1/checkpoint-$common; }
if [ "$common" -gt 0 ]; then
  epids=()
  for arm in "${ARMS[@]}"; do
    eval_model ppo-$arm $(ppo_checkpoint $arm) > $R/logs/eval-ppo-$arm.log 2>&1 &
    epids+=($!)
  done
  wait "${epids[@]}"
else
  stamp "NO COMMON PPO CHECKPOINT: the PPO arms are not evaluated"
fi
wait $branch
stamp "evals done"

# K samples of the model best on the held-out slice (never chosen on a test set)
best=$(python3 scripts/study_checkpoints.py --best $R/eval)
stamp "best on the held-out slice: $best"
echo "$best" > $R/best-model.txt
case $best in
  sft) best_ckpt=$R/sft ;; dpo-*) best_ckpt=$R/$best ;; ppo-*) best_ckpt=$(ppo_checkpoint ${best#ppo-}) ;;
esac
for set in test heldout; do
  [ $set = test ] && split=test || split=$HELD
  looper rollout --base-model "$M" --adapter $best_ckpt --data "$D" --split "$split" --samples $K \
      --temperature 0.8 "${ROLL_X[@]}" --batch-size $(( BS * 2 )) "${GPU_ENGINE[@]}" \
      ${GPU_KV:+--kv-cache-gib $(( GPU_KV * 3 ))} --output $R/vote-$set/rollouts.jsonl &
done
wait
stamp "study done"
