"""How far 2 gloo ranks are from one process, metric by metric, in a given dtype: the cases and settings of
tests/test_distributed.py (GRPO, DAPO, RLOO, REINFORCE++, PPO, DPO; 5 steps, sharded rollouts), run in one process and
under ``torchrun --nproc_per_node 2`` with ``hardware=<strategy>``, then the largest relative difference of every
metric (``|a - b| / max(1, |a|)``, ``perf/*`` left out), the worst four per case (metrics that differ at all).

    python benchmarks/dist_equality.py --dtype float32 --strategy ddp
    python benchmarks/dist_equality.py --dtype float64 --strategy fsdp

The test holds every metric to 1e-5 in float64; this script also shows what float32 gives on the machine at hand.
Prints a line per case and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import REPO, emit, machine, setup

sys.path.insert(0, str(REPO / "tests"))


def worst(a: list[dict], b: list[dict]) -> dict[str, tuple[float, int]]:
    out: dict[str, tuple[float, int]] = {}
    for x, y in zip(a, b, strict=True):
        for k, v in x.items():
            if k.startswith("perf/"):
                continue
            d = abs(v - y[k]) / max(1.0, abs(v))
            if d > out.get(k, (-1.0, 0))[0]:
                out[k] = (d, x["step"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--strategy", default="ddp", choices=["ddp", "fsdp"])
    args = ap.parse_args()
    setup(1)
    from conftest import read_metrics
    from test_distributed import ARGS, CASES

    import rlx

    out = Path(tempfile.mkdtemp(prefix="rlx_dist_eq_"))
    extra = [f"model.dtype={args.dtype}"]
    for name, o in CASES.items():
        rlx.run(rlx.compose([*ARGS, *extra, *o]), run_dir=out / "single" / name)
    cases = {n: [*ARGS, *extra, *o, f"hardware={args.strategy}"] for n, o in CASES.items()}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "tests/dist_runs.py", str(out / args.strategy), json.dumps(cases)], cwd=REPO,
                          capture_output=True, text=True)
    if proc.returncode:
        sys.exit(proc.stderr[-3000:])
    result = {"machine": machine(), "dtype": args.dtype, "strategy": args.strategy, "cases": {}}
    for name in CASES:
        w = worst(read_metrics(out / "single" / name), read_metrics(out / args.strategy / name))
        top = sorted(((k, v) for k, v in w.items() if v[0] > 0), key=lambda kv: -kv[1][0])[:4]
        print(f"{args.dtype} {args.strategy} {name:13s}", "  ".join(f"{k} {d:.1e} (step {s})" for k, (d, s) in top)
              or "every metric bit-equal")
        result["cases"][name] = {k: f"{d:.2e}" for k, (d, _) in top}   # emit() would round them to 0
    result["max"] = f"{max((float(d) for c in result['cases'].values() for d in c.values()), default=0.0):.2e}"
    emit(result)


if __name__ == "__main__":
    main()
