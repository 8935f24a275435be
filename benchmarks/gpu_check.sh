#!/usr/bin/env bash
# GPU check (issue 8): GRPO with a randomly initialised Qwen2.5-0.5B (no downloads) on the HF engine with the
# lean forward on and off (rlx/models/lean.py) and, if vLLM is installed, on vLLM; prints generation tokens/s,
# step time and peak memory; with 2 or more GPUs, sharded rollouts against the replicated design
# (benchmarks/sharded_rollouts.py); the compiled path (hardware.compile=true) and, where TRL is installed, rlx
# against TRL on the same GPU (benchmarks/vs_trl.py --device cuda: GRPO and DPO at ~0.5B). At most ~35 minutes.
#   bash benchmarks/gpu_check.sh            (on a machine with one CUDA GPU)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/rlx_gpu_check}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
COMMON=(model=qwen0_5b trainer.steps=10 trainer.eval_every=0 data.eval_size=64 data.prompts_per_step=16
        rollout.max_new_tokens=64 trainer.micro_batch_size=32 trainer.progress=false)
timeout 240 python -m rlx "${COMMON[@]}" model.init=random hardware=gpu hydra.run.dir="$OUT/hf"
timeout 240 python -m rlx "${COMMON[@]}" model.init=random hardware=gpu hardware.lean_forward=false \
  hydra.run.dir="$OUT/hf_transformers_forward"
timeout 300 python -m rlx "${COMMON[@]}" model.init=random hardware=gpu hardware.compile=true \
  hydra.run.dir="$OUT/hf_compiled" || true
if python -c "import trl" 2>/dev/null; then
  timeout 900 python benchmarks/vs_trl.py --device cuda --compile --variants trl_default,trl_matched --steps 8 \
    --warmup 3 | tee "$OUT/vs_trl.txt" || true
else
  echo "vs_trl: TRL is not installed here (pip install trl); the rlx rows above stand alone"
fi
# vLLM loads from disk: save the same random architecture first.
if python -c "import vllm" 2>/dev/null; then
  python - "$OUT/model" <<'PY'
import sys, rlx
cfg = rlx.compose(["model=qwen0_5b", "model.init=random"])
model, tok = rlx.build("model", cfg.model)
model.save_pretrained(sys.argv[1]); tok.save_pretrained(sys.argv[1])
PY
  timeout 240 python -m rlx "${COMMON[@]}" model.path="$OUT/model" hardware=vllm hydra.run.dir="$OUT/vllm" || true
fi
# Sharded rollouts against the replicated design on the GPUs at hand (NCCL needs one GPU per rank).
NGPU=$(nvidia-smi --list-gpus | wc -l)
if [ "$NGPU" -ge 2 ]; then
  timeout 600 python benchmarks/sharded_rollouts.py --device cuda --backend nccl --nproc "$NGPU" --runs 2 \
    --prompts $((8 * NGPU)) --tokens 128 | tee "$OUT/sharded_rollouts.txt" || true
else
  echo "sharded rollouts: $NGPU GPU, need 2 or more (the CPU figures: python benchmarks/sharded_rollouts.py)"
fi
python - "$OUT" <<'PY'
import json, statistics, sys, pathlib
for eng in ("hf", "hf_transformers_forward", "hf_compiled", "vllm"):
    p = pathlib.Path(sys.argv[1]) / eng / "metrics.jsonl"
    if not p.exists():
        continue
    every = [r for r in map(json.loads, p.read_text().splitlines()) if "perf/step_s" in r]
    rows = every[2:]   # 2 warm-up steps
    med = lambda k: statistics.median(r[k] for r in rows if k in r)
    print(json.dumps({"engine": eng, "step_s": med("perf/step_s"), "compile_s": sum(r.get("perf/compile_s", 0) for r in every), "gen_s": med("perf/gen_s"),
                      "train_s": med("perf/train_s"), "gen_tokens_per_s": med("perf/tokens_per_s"),
                      "peak_mem_gb": max(r["perf/peak_mem_gb"] for r in rows)}))
PY
