#!/usr/bin/env bash
# GPU smoke check: every trainer family once on CUDA (the embedded architecture, random init, 3 steps, with
# evaluation), to catch CPU/GPU tensor mixes that no CPU test can show. About 2 minutes on one GPU.
#   bash benchmarks/gpu_algos.sh            (on a machine with one CUDA GPU)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/rlx_gpu_algos}"; mkdir -p "$OUT"
fail=0
for algo in grpo dapo rloo ppo dpo kto simpo; do
  extra=()
  case $algo in dpo|kto|simpo) extra=(data.pref_eval_size=16);; esac
  timeout 90 python -m rlx algo=$algo model.init=random hardware=gpu trainer.steps=3 trainer.eval_every=3 \
    data.eval_size=32 data.prompts_per_step=4 trainer.progress=false "${extra[@]}" hydra.run.dir="$OUT/$algo" \
    > "$OUT/log_$algo.txt" 2>&1
  rc=$?
  echo "== $algo rc=$rc $(grep -c '"step"' "$OUT/$algo/metrics.jsonl" 2>/dev/null) metric rows"
  if [ $rc -ne 0 ]; then fail=1; grep -E "Error|File \"/" "$OUT/log_$algo.txt" | tail -6; fi
done
exit $fail
