"""Exact resume: a run killed with SIGKILL and resumed with trainer.resume=true writes the same
metrics.jsonl as an uninterrupted run (every value except wall-clock perf/*)."""

import os
import signal
import subprocess
import sys
import time

from conftest import FAST, REPO, read_metrics, run_cli

ARGS = ["trainer.steps=8", "trainer.save_every=2", "trainer.eval_every=4", "data.prompts_per_step=4",
        "trainer.mini_batch_size=16", "trainer.micro_batch_size=8", "trainer.update_epochs=2", *FAST]


def _strip(rows):
    return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in rows]


def kill_at(args, run_dir, step, timeout=120):
    """Start ``python -m rlx``; SIGKILL it once metrics.jsonl has reached ``step``."""
    proc = subprocess.Popen([sys.executable, "-m", "rlx", *args, f"hydra.run.dir={run_dir}"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    path, t0 = run_dir / "metrics.jsonl", time.time()
    while time.time() - t0 < timeout and proc.poll() is None:
        if path.exists() and any(f'"step": {step},' in ln for ln in path.read_text().splitlines()):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    return proc.returncode


def test_resume_after_sigkill_equals_uninterrupted(tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    run_cli(ARGS, run_dir=full)
    assert kill_at(ARGS, cut, step=5) == -signal.SIGKILL
    assert any((cut / "checkpoints").glob("step_*"))
    run_cli(ARGS + ["trainer.resume=true"], run_dir=cut)
    a, b = _strip(read_metrics(full)), _strip(read_metrics(cut))
    assert [r["step"] for r in b] == list(range(9))
    assert a == b
