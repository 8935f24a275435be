"""Step time of the default ``python -m rlx`` run, before and after a change, alternating under the same load.

    python benchmarks/default_step.py --before 87aa888          # the tree before the performance work
    python benchmarks/default_step.py --before 87aa888 --rounds 3 --steps 30 --threads 1

``--before`` is a git revision; its tree is exported (``git archive``) to a temp dir. Each round runs
``python -m rlx trainer.steps=N trainer.eval_every=0 hardware.num_threads=T`` once in the old tree and
once in the working tree (everything else default: GRPO, 32 prompts x 8, 4 new tokens, beta 0.04, the
embedded 1M model). The figure is the median ``perf/step_s`` over all rounds' steps (the first 3 steps
of each run dropped). Prints a table and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import REPO, emit, machine, median, setup


def export(rev: str) -> Path:
    out = Path(tempfile.mkdtemp(prefix="rlx_before_"))
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


def run(tree: Path, steps: int, threads: int) -> list[float]:
    """perf/step_s of each step of one default run in ``tree``."""
    run_dir = tempfile.mkdtemp(prefix="rlx_step_")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, "-m", "rlx", f"trainer.steps={steps}", "trainer.eval_every=0", "trainer.progress=false",
           f"hardware.num_threads={threads}", f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if proc.wait() != 0:
        raise RuntimeError(f"{' '.join(cmd)} in {tree} failed: {proc.stderr.read().decode()[-2000:]}")
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if line]
    return [r["perf/step_s"] for r in rows if r.get("step", 0) > 0]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", required=True, help="git revision of the 'before' tree")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    setup(a.threads)
    old = export(a.before)
    res = {"before": [], "after": []}
    for i in range(a.rounds):
        for name, tree in (("before", old), ("after", REPO)):
            steps = run(tree, a.steps, a.threads)
            res[name].extend(steps[3:])
            print(f"round {i} {name}: median step {median(steps, 3):.3f} s", flush=True)
    fig = {k: {"step_s": median(v), "n": len(v)} for k, v in res.items()}
    print("\n| tree | median perf/step_s | steps |\n|---|---|---|")
    for k, label in (("before", f"before ({a.before})"), ("after", "after (working tree)")):
        print(f"| {label} | {fig[k]['step_s']:.3f} | {fig[k]['n']} |")
    print(f"after / before: {fig['after']['step_s'] / fig['before']['step_s']:.2f} (step time)")
    emit({"benchmark": "default_step", "machine": machine(), "before": a.before, "threads": a.threads,
          "steps": a.steps, "rounds": a.rounds, **fig, "ratio": fig["after"]["step_s"] / fig["before"]["step_s"]})


if __name__ == "__main__":
    main()
