"""Issue 2 figure: ``python -m rlx`` (no arguments but the seed) for seeds 0, 1, 2, one after another.

    python benchmarks/default_run.py                 # runs the three seeds (about 4-5 min each on 2 cores)
    python benchmarks/default_run.py --dirs D0 D1 D2 # only tabulates finished run dirs

Prints a markdown table (eval accuracy at step 0 and at the last step, gain, steps, run wall time, peak RSS)
and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KEY = "eval/arithmetic/accuracy"


def run_seed(seed: int, out: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rlx", f"seed={seed}", "trainer.progress=false", f"hydra.run.dir={out}"],
                   cwd=REPO, check=True, env=os.environ.copy())
    return time.perf_counter() - t0


def row(d: Path, wall: float | None) -> dict:
    s = json.loads((d / "summary.json").read_text())
    rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    peak = max(r.get("perf/peak_mem_gb", 0) for r in rows)
    return {"dir": str(d), "seed": json.loads((d / "run_info.json").read_text())["seed"], "start": s["initial"][KEY],
            "end": s["final"][KEY], "steps": s["steps"], "train_wall_s": s["wall_s"], "process_wall_s": wall,
            "peak_rss_gb": peak}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dirs", nargs="*")
    ap.add_argument("--out", default="outputs/bench/default_run")
    args = ap.parse_args()
    if args.dirs:
        results = [row(Path(d), None) for d in args.dirs]
    else:
        results = []
        for seed in (0, 1, 2):
            d = Path(args.out) / f"seed{seed}"
            results.append(row(d, run_seed(seed, d)))
    print(f"| seed | {KEY} step 0 | last step | gain | steps | train wall (s) | process wall (s) | peak RSS (GB) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        pw = f"{r['process_wall_s']:.0f}" if r["process_wall_s"] else "—"
        print(f"| {r['seed']} | {r['start']:.3f} | {r['end']:.3f} | {r['end'] - r['start']:+.3f} | {r['steps']} | "
              f"{r['train_wall_s']:.0f} | {pw} | {r['peak_rss_gb']:.2f} |")
    print(json.dumps({"default_run": results}))


if __name__ == "__main__":
    main()
