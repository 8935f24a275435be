"""Sharded rollouts against the replicated design: the same 2-rank GRPO run with ``rollout.shard=true`` (each rank
generates, scores and computes log-probs for its B/2 prompts) and ``rollout.shard=false`` (every rank generates the
whole batch), alternating, on the ~30M model (benchmarks/_common.py) or the embedded 1M one.

    python benchmarks/sharded_rollouts.py                          # 30m, 2 ranks x 1 thread, 3 runs each
    python benchmarks/sharded_rollouts.py --size 1m --runs 2 --steps 6
    python benchmarks/sharded_rollouts.py --device cuda --backend nccl --nproc 2   # GPU ranks (gpu_check.sh)

Each run is ``torchrun --standalone --nproc_per_node 2 -m rlx hardware=ddp`` with GRPO, B prompts x G samples,
``rollout.max_new_tokens`` L (a random-init 30M model rarely ends early, so every step generates about B·G·L
tokens). The figure is the median ``perf/step_s`` (rank 0, steps after the first ``--warmup``) of each run, and
the ratio of the medians over runs. ``perf/gen_s`` is reported beside it. A single process with the same thread
count per rank is run once for reference. Prints a table and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import REPO, emit, machine, median, model_dir, n_params, setup


def run(mode: str, args, path: Path, out: Path) -> dict:
    common = [f"model.path={path}", f"data.prompts_per_step={args.prompts}", f"algo.group_size={args.group}",
              f"rollout.max_new_tokens={args.tokens}", "algo.beta=0.0", f"trainer.steps={args.steps}",
              "trainer.eval_every=0", "trainer.progress=false", "tracker=none", f"hardware.num_threads={args.threads}",
              f"hardware.device={args.device}", f"hydra.run.dir={out}"]
    if mode == "single":
        cmd = [sys.executable, "-m", "rlx", *common, f"hardware={'gpu' if args.device == 'cuda' else 'cpu'}"]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.nproc),
               "-m", "rlx", *common, "hardware=ddp", f"hardware.backend={args.backend}",
               f"rollout.shard={'true' if mode == 'sharded' else 'false'}"]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"{mode} run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r.get("step", 0) > args.warmup and "perf/step_s" in r]
    return {"step_s": median(r["perf/step_s"] for r in steps), "gen_s": median(r["perf/gen_s"] for r in steps),
            "samples_per_rank": steps[-1]["perf/rollout_samples_per_rank"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="30m", choices=["1m", "30m"])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--backend", default="gloo")
    p.add_argument("--no-single", action="store_true", help="skip the one-process reference run")
    args = p.parse_args()
    setup(args.threads)
    path = model_dir(args.size)
    results = {"sharded": [], "replicated": []}
    with tempfile.TemporaryDirectory(prefix="rlx_shard_bench_") as tmp:
        for i in range(args.runs):   # alternating, so both see the same machine
            for mode in ("replicated", "sharded"):
                results[mode].append(run(mode, args, path, Path(tmp) / f"{mode}{i}"))
        single = None if args.no_single else run("single", args, path, Path(tmp) / "single")
    med = {m: median(r["step_s"] for r in rs) for m, rs in results.items()}
    print(f"{machine()}; model {args.size} ({n_params(path) / 1e6:.1f}M params); GRPO {args.prompts} prompts x "
          f"{args.group} samples x {args.tokens} new tokens; {args.nproc} ranks x {args.threads} thread(s)")
    print(f"{'design':<12} {'step s (median of runs)':>24} {'gen s':>8} {'samples/rank':>13}  runs")
    for m, rs in results.items():
        print(f"{m:<12} {med[m]:>24.3f} {median(r['gen_s'] for r in rs):>8.3f} {rs[0]['samples_per_rank']:>13.0f}  "
              + ", ".join(f"{r['step_s']:.3f}" for r in rs))
    if single:
        print(f"{'one process':<12} {single['step_s']:>24.3f} {single['gen_s']:>8.3f} {single['samples_per_rank']:>13.0f}")
    ratio = med["sharded"] / med["replicated"]
    print(f"sharded / replicated step time: {ratio:.3f}")
    emit({"benchmark": "sharded_rollouts", "size": args.size, "ranks": args.nproc, "threads": args.threads,
          "sharded_step_s": med["sharded"], "replicated_step_s": med["replicated"], "ratio": ratio,
          "runs": results, "single": single})


if __name__ == "__main__":
    main()
