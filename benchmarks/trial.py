"""The failure cases of a new user's trial, each as the command a user types: exit status and first line.

    python benchmarks/trial.py [--out trial.md]

Every case runs ``python -m rlx ...`` in a scratch dir (its data files written there first) with one torch
thread, and the table lists the exit status, the seconds it took and the first line of its error (or the last
line of a run that finished). A case is what a user would try; the tests pin each behaviour
(tests/test_preflight.py, test_config_checks.py, test_data_rows.py, test_run_dir.py, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAST = ["trainer.steps=2", "hardware.num_threads=1", "trainer.progress=false", "data.eval_size=8"]


def files(d: Path) -> None:
    (d / "badjson.jsonl").write_text('{"prompt": "1 + 1 =", "answer": "2"}\n{"prompt": oops}\n'
                                     + "".join(json.dumps({"prompt": f"{i} + 1 =", "answer": str(i + 1)}) + "\n"
                                               for i in range(40)))
    (d / "wrongtype.jsonl").write_text("".join(json.dumps({"prompt": f"{i} + 1 =", "answer": [i + 1]}) + "\n"
                                               for i in range(40)))
    (d / "latin1.jsonl").write_bytes(b'{"prompt": "caf\xe9", "answer": "1"}\n')
    (d / "empty.jsonl").write_text("")
    (d / "u2028.jsonl").write_text("".join(json.dumps({"prompt": f"{i}\u2028+ 1 =", "answer": str(i + 1)},
                                                      ensure_ascii=False) + "\n" for i in range(40)))
    (d / "pref.jsonl").write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b", "score_chosen": "high",
                                              "score_rejected": 0}) + "\n")
    (d / "reward_broken.py").write_text("import not_a_module\n")
    (d / "reward_ok.py").write_text("def score(prompts, completions, **_):\n    return [0.0] * len(completions)\n")


CASES = [
    ("default run", []),
    ("random-init 0.5B on the CPU", ["algo=gspo", "model=qwen0_5b", "model.init=random", "trainer.steps=1",
                                     "data.prompts_per_step=2", "trainer.eval_every=0", "data.eval_size=2"]),
    ("missing data.path", ["data=jsonl", "data.path=nope.jsonl"]),
    ("data=jsonl without a path", ["data=jsonl"]),
    ("hardware=gpu on a CPU-only torch", ["hardware=gpu"]),
    ("reward module that does not import", ["reward=python", "reward.fn={d}/reward_broken.py:score"]),
    ("misspelt reward function", ["reward=python", "reward.fn={d}/reward_ok.py:scroe"]),
    ("model=qwen7b with no hub", ["model=qwen7b"]),
    ("invalid JSON row", ["data=jsonl", "data.path={d}/badjson.jsonl"]),
    ("invalid JSON row, bad_rows=drop", ["data=jsonl", "data.path={d}/badjson.jsonl", "data.bad_rows=drop"]),
    ("answer of the wrong type", ["data=jsonl", "data.path={d}/wrongtype.jsonl"]),
    ("non-UTF-8 byte", ["data=jsonl", "data.path={d}/latin1.jsonl"]),
    ("empty data file", ["data=jsonl", "data.path={d}/empty.jsonl"]),
    ("U+2028 inside a string", ["data=jsonl", "data.path={d}/u2028.jsonl"]),
    ("non-numeric score_chosen", ["algo=dpo", "data=preference", "data.path={d}/pref.jsonl"]),
    ("trainer.lr=null", ["trainer.lr=null"]),
    ("trainer.steps=null", ["trainer.steps=null"]),
    ("trainer.steps={a:1}", ["trainer.steps={a:1}"]),
    ("trainer.betas=[a,b]", ["trainer.betas=[a,b]"]),
    ("trainer.steps=${oc.env:HOME}", ["trainer.steps=${oc.env:HOME}"]),
    ("seed=null", ["seed=null"]),
    ("seed=99999999999999999999", ["seed=99999999999999999999"]),
    ("hardware.num_threads=1.5", ["hardware.num_threads=1.5"]),
    ("reward.score_term=nope", ["reward.score_term=nope"]),
    ("model.arch.num_attention_heads=3", ["model.arch.num_attention_heads=3"]),
    ("rollout.temperature=inf", ["rollout.temperature=inf"]),
    ("trainer.lr=inf", ["trainer.lr=inf"]),
    ("algo.beta=inf", ["algo.beta=inf"]),
    ("mini batch larger than N", ["trainer.mini_batch_size=4096", "trainer.micro_batch_size=null"]),
    ("algo key of another algorithm", ["algo.tau=0.1"]),
    ("comma list without -m", ["algo=grpo,dapo"]),
]


def run(name: str, argv: list[str], d: Path) -> tuple[int, float, str]:
    argv = [a.replace("{d}", str(d)) for a in argv]
    run_dir = d / "runs" / "".join(c if c.isalnum() else "_" for c in name)
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1",
           "RLX_CACHE": str(d / "cache")}
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "rlx", *FAST, *argv, f"hydra.run.dir={run_dir}"], cwd=d, env=env,
                       capture_output=True, text=True, timeout=900)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    first = next((ln for ln in lines if ln.startswith("rlx:")), lines[-1] if lines else "")
    return p.returncode, time.time() - t0, first


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path)
    ap.add_argument("--only", nargs="*")
    args = ap.parse_args()
    rows = ["| case | exit | s | first line |", "|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        files(d)
        for name, argv in CASES:
            if args.only and name not in args.only:
                continue
            rc, s, first = run(name, argv, d)
            rows.append(f"| {name} | {rc} | {s:.1f} | `{first[:160]}` |")
            print(rows[-1], flush=True)
    if args.out:
        args.out.write_text("\n".join(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
