"""Peak resident memory: the default ``python -m rlx`` run against TRL's GRPOTrainer on the same work.

    python benchmarks/peak_rss.py                 # 60 steps each, rlx then TRL, each in its own process
    python benchmarks/peak_rss.py --steps 100 --repeats 2
    python benchmarks/peak_rss.py --compile       # also rlx with hardware.compile=true

rlx: ``python -m rlx trainer.steps=N`` (everything else default: the embedded 1M model, 32 prompts x 8,
4 new tokens, beta 0.04 with a reference model, fp32, its evaluations at step 0 and at the end).
TRL: ``GRPOTrainer`` on the same model directory, prompts, group size, completion length, batch, beta,
learning rate and dtype, for N steps, with TRL's other defaults. Each run is a child process; its peak
RSS is the kernel's ``ru_maxrss`` for that child (``os.wait4``). Prints a table and a final JSON line.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from _common import REPO, emit, machine, setup


def child_rss(cmd: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, wall s) of a child process running ``cmd``."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({status}): {proc.stderr.read().decode()[-2000:]}")
    return usage.ru_maxrss / 1024, time.perf_counter() - t0


def trl_child(steps: int) -> None:
    """TRL GRPO on the default rlx run's work (runs in the child process)."""
    setup(int(os.environ.get("RLX_BENCH_THREADS", "0")) or os.cpu_count())
    import warnings

    warnings.filterwarnings("ignore")
    from _common import model_dir, quiet, trl_step_timer
    from vs_trl import trl_grpo

    trainer = trl_grpo(model_dir("1m"), 32, 8, 4, 0.04, steps, trl_step_timer(), bf16=False)
    quiet(trainer)
    trainer.train()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--compile", action="store_true", help="also run rlx with hardware.compile=true")
    p.add_argument("--trl-child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.trl_child:
        return trl_child(a.steps)
    setup(1)
    rows = {"rlx": [], **({"rlx_compiled": []} if a.compile else {}), "trl": []}
    for _ in range(a.repeats):
        for key in [k for k in rows if k != "trl"]:
            rows[key].append(child_rss([sys.executable, "-m", "rlx", f"trainer.steps={a.steps}", "trainer.progress=false",
                                        f"hardware.compile={str(key == 'rlx_compiled').lower()}",
                                        f"hydra.run.dir={tempfile.mkdtemp(prefix='rlx_rss_')}"]))
        rows["trl"].append(child_rss([sys.executable, __file__, "--trl-child", "--steps", str(a.steps)]))
    peak = {k: max(r[0] for r in v) for k, v in rows.items()}
    print(f"\n| run ({a.steps} steps, default GRPO work) | peak RSS (MB) | wall (s) |\n|---|---|---|")
    labels = {"rlx": "`python -m rlx` (defaults)", "rlx_compiled": "`python -m rlx hardware.compile=true`",
              "trl": "TRL GRPOTrainer, same work"}
    for k, label in labels.items():
        if k not in rows:
            continue
        print(f"| {label} | {peak[k]:.0f} | {max(r[1] for r in rows[k]):.0f} |")
    print(f"rlx / TRL peak RSS: {peak['rlx'] / peak['trl']:.2f}")
    if a.compile:
        print(f"rlx compiled / TRL peak RSS: {peak['rlx_compiled'] / peak['trl']:.2f}")
    emit({"benchmark": "peak_rss", "machine": machine(), "steps": a.steps, "rlx_mb": peak["rlx"], "trl_mb": peak["trl"],
          "ratio": peak["rlx"] / peak["trl"], **({"rlx_compiled_mb": peak["rlx_compiled"]} if a.compile else {}),
          "runs": rows})


if __name__ == "__main__":
    main()
