"""Pipeline resume (docs/reliability.md "Pipeline resume"): ``experiment=rlhf_pipeline`` SIGTERMed in
a stage, then resumed with ``trainer.resume=true``, ends with the uninterrupted pipeline's metrics.

Real processes (``python -m rlx``) and real signals (``os.kill``): the first SIGTERM lands while the RM
stage trains, the second (on the resumed run) while PPO trains, the third once PPO has exported its model
(outside any training loop: the pipeline's own handler). A finished stage is skipped, the interrupted one
continues from its checkpoint, the later ones run fresh; every stage's ``metrics.jsonl`` (but the
wall-clock ``perf/*``) and the comparison table equal the uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, last_step, read_metrics, run_cli

STAGES = ("sft", "rm", "ppo")
SMALL = ["trainer.eval_every=0", "data.eval_size=16", "data.dev_size=16"]


def _stage(overrides: list[str]) -> str:
    return "[" + ",".join(f'"{o}"' for o in overrides) + "]"


# The three stages of conf/experiment/rlhf_pipeline.yaml with a few steps each (RM and PPO long enough that
# a signal sent after their step 2 lands while they still train).
ARGS = ["experiment=rlhf_pipeline", "model.init=random", "trainer.progress=false", "hardware.num_threads=1",
        "pipeline.eval_size=16",
        "pipeline.stages.sft.overrides=" + _stage(["algo=sft", "data=arithmetic_demos", "reward=hidden_rule",
                                                   "trainer.steps=6", *SMALL, "trainer.save_model=true"]),
        "pipeline.stages.rm.overrides=" + _stage(["algo=rm", "data=arithmetic_pref", "trainer.steps=16", *SMALL,
                                                  "data.pref_eval_size=16"]),
        "pipeline.stages.ppo.overrides=" + _stage(["algo=ppo", "data=arithmetic_pref", "reward=rm_arithmetic_pref",
                                                   "algo.critic_init=reward_model", "algo.beta=0.2",
                                                   "trainer.schedule=linear", "data.prompts_per_step=8",
                                                   "trainer.steps=8", "trainer.eval_every=4", "data.eval_size=16",
                                                   "data.dev_size=16", "data.pref_eval_size=16",
                                                   "trainer.save_model=true"])]


def sigterm_when(ready, run_dir: Path, extra: list[str], log: str) -> tuple[int, str]:
    """Run the pipeline; SIGTERM it once ``ready()``; its exit status and stderr."""
    with open(run_dir.parent / log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "rlx", *ARGS, *extra, f"hydra.run.dir={run_dir}"], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=err, env=os.environ.copy())
        try:
            t0 = time.time()
            while proc.poll() is None and not ready():
                assert time.time() - t0 < 300, "the pipeline never got there"
                time.sleep(0.01)
            os.kill(proc.pid, signal.SIGTERM)
            code = proc.wait(120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return code, (run_dir.parent / log).read_text()


def sigterm_in(stage: str, run_dir: Path, extra: list[str], log: str, after: int = 2) -> str:
    """SIGTERM the pipeline once ``stage`` has logged step ``after`` (it is training); expect exit 143."""
    code, text = sigterm_when(lambda: last_step(run_dir / stage) >= after, run_dir, extra, log)
    assert code == 143, f"exit {code}\n{text[-3000:]}"
    return text


def strip_perf(rows):
    return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in rows]


@pytest.mark.slow
def test_pipeline_sigterm_in_rm_then_in_ppo_resumes_to_the_uninterrupted_metrics(tmp_path):
    from rlx.runtime.checkpoint import Checkpointer, _step_of

    ref, cut = tmp_path / "ref", tmp_path / "cut"
    run_cli(ARGS, run_dir=ref)

    # 1. SIGTERM while RM trains: RM checkpoints the step it was in and says so; the pipeline's summary too
    err = sigterm_in("rm", cut, [], "first.txt")
    rm_summary = json.loads((cut / "rm" / "summary.json").read_text())
    assert rm_summary["interrupted"] == "SIGTERM" and 2 <= rm_summary["steps"] < 16
    assert _step_of(Checkpointer(cut / "rm" / "checkpoints").latest()) == rm_summary["steps"]
    summary = json.loads((cut / "summary.json").read_text())
    assert summary["interrupted"] == "SIGTERM" and summary["interrupted_in"] == "rm"
    assert list(summary["stages"]) == ["sft", "rm"] and "compare" not in summary
    assert not (cut / "ppo").exists()
    assert "pipeline SIGTERM in stage 'rm'" in err
    sft_rows = (cut / "sft" / "metrics.jsonl").read_text()

    # 2. resumed: SFT skipped, RM continues from its checkpoint, PPO runs fresh; SIGTERM while PPO trains
    err = sigterm_in("ppo", cut, ["trainer.resume=true"], "second.txt")
    assert "pipeline stage 'sft': finished in an earlier run, skipped" in err
    assert f"resumed from {cut / 'rm' / 'checkpoints'}" in err
    assert (cut / "sft" / "metrics.jsonl").read_text() == sft_rows   # not run again
    assert json.loads((cut / "rm" / "summary.json").read_text())["steps"] == 16
    assert json.loads((cut / "summary.json").read_text())["interrupted_in"] == "ppo"

    # 3. resumed again: SFT and RM skipped, PPO continues; SIGTERM once PPO has exported its model, outside
    # any training loop (PPO's summary being written, or the comparison): the pipeline stops at once
    code, err = sigterm_when(lambda: (cut / "ppo" / "model" / "config.json").exists(), cut, ["trainer.resume=true"],
                             "third.txt")
    assert "pipeline stage 'rm': finished in an earlier run, skipped" in err
    assert f"resumed from {cut / 'ppo' / 'checkpoints'}" in err
    print(f"\nthird SIGTERM: exit {code}; {[ln for ln in err.splitlines() if 'pipeline SIGTERM' in ln]}")
    if code == 143:   # else it came after the comparison, once the pipeline had restored the default handler
        assert json.loads((cut / "summary.json").read_text())["interrupted_in"] in ("ppo", "compare")

    # 4. resumed a last time: what is left of PPO (if anything) and the comparison
    run_cli(ARGS + ["trainer.resume=true"], run_dir=cut)

    for stage in STAGES:
        assert strip_perf(read_metrics(cut / stage)) == strip_perf(read_metrics(ref / stage)), stage
    a, b = (json.loads((d / "summary.json").read_text()) for d in (ref, cut))
    assert "interrupted" not in b and b["compare"] == a["compare"]
    assert (b["initial"], b["final"], b["steps"]) == (a["initial"], a["final"], a["steps"])
    assert {s: b["stages"][s]["final"] for s in STAGES} == {s: a["stages"][s]["final"] for s in STAGES}
