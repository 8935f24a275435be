"""Every preset of conf/algo x seeds, a few steps each, one run at a time: the before/after check of a refactor.

    python benchmarks/preset_sweep.py OUT_DIR [--steps 50] [--seeds 0 1 2] [--algos grpo dpo ...]
    python benchmarks/preset_sweep.py --compare BEFORE_DIR AFTER_DIR

A run is ``python -m rlx algo=<name> seed=<s> trainer.steps=<n>`` with one torch thread, into
``OUT_DIR/<name>_s<s>``. ``--compare`` reads both dirs' ``metrics.jsonl`` and reports, per run, whether every
value except ``perf/*`` is equal (exit 1 when any run differs or is missing); keys only the second dir has
(a metric the change adds) are listed.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def presets() -> list[str]:
    return sorted(p.stem for p in (ROOT / "conf" / "algo").glob("*.yaml"))


def sweep(out: Path, steps: int, seeds: list[int], algos: list[str]) -> int:
    failed = 0
    for name in algos:
        for s in seeds:
            run_dir = out / f"{name}_s{s}"
            if (run_dir / "summary.json").exists():
                continue
            t0 = time.time()
            cmd = [sys.executable, "-m", "rlx", f"algo={name}", f"seed={s}", f"trainer.steps={steps}",
                   "hardware.num_threads=1", "trainer.progress=false", f"hydra.run.dir={run_dir}"]
            rc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            failed += rc.returncode != 0
            tail = rc.stderr.strip().splitlines()[-1:] if rc.returncode else []
            print(f"{name} s{s}: rc {rc.returncode}, {time.time() - t0:.0f} s {' '.join(tail)}", flush=True)
    return failed


def rows(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        out.append({k: v for k, v in rec.items() if not k.startswith("perf/") and k not in ("time", "wall_s")})
    return out


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def compare(before: Path, after: Path) -> int:
    names = sorted({p.name for p in before.iterdir() if p.is_dir()} | {p.name for p in after.iterdir() if p.is_dir()})
    bad = 0
    for name in names:
        a, b = before / name / "metrics.jsonl", after / name / "metrics.jsonl"
        if not a.exists() or not b.exists():
            print(f"{name}: MISSING in {'before' if not a.exists() else 'after'}")
            bad += 1
            continue
        ra, rb = rows(a), rows(b)
        # keys the change adds (a new metric) are listed, not compared; a value that changed or vanished is a diff
        added = sorted({k for y in rb for k in y} - {k for x in ra for k in x})
        diffs = [(i, k) for i, (x, y) in enumerate(zip(ra, rb)) for k in sorted(x)
                 if not same(x.get(k), y.get(k))]
        if len(ra) != len(rb) or diffs:
            bad += 1
            first = diffs[0] if diffs else None
            detail = (f"row {first[0]} {first[1]}: {ra[first[0]].get(first[1])} vs {rb[first[0]].get(first[1])}"
                      if first else "")
            print(f"{name}: DIFFERENT ({len(ra)} vs {len(rb)} rows, {len(diffs)} values) {detail}")
        else:
            new = f"; new keys: {', '.join(added)}" if added else ""
            print(f"{name}: equal ({len(ra)} rows, {sum(len(r) for r in ra)} values){new}")
    print(f"{len(names) - bad}/{len(names)} runs equal except perf/*")
    return 1 if bad else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", nargs="?", type=Path)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--algos", nargs="+", default=None)
    p.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    a = p.parse_args()
    if a.compare:
        return compare(*a.compare)
    if a.out is None:
        p.error("give OUT_DIR, or --compare BEFORE AFTER")
    return 1 if sweep(a.out.resolve(), a.steps, a.seeds, a.algos or presets()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
