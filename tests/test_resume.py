"""Exact resume under real kills (docs/reliability.md figures 1, 3 and 7).

A run is SIGKILLed at 5 seeded random steps in a row (each kill resumed with ``trainer.resume=true``,
then killed again further on), then finished; its ``metrics.jsonl`` must equal an uninterrupted run's
(every value of every step except the wall-clock ``perf/*``) and its final weights must be bitwise
equal. The runs are real processes forked from a forkserver that has imported torch and transformers
once (each kill and resume then costs ~1 s instead of a fresh interpreter); the SIGTERM test and its
resume go through ``python -m rlx`` itself. Kills land wherever the process happens to be once the
metrics line of the chosen step is written, so some land inside a checkpoint write (counted below);
tests/test_reliability.py injects kills at each write phase deterministically.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FAST, REPO, last_step, read_metrics, run_main

# Per algorithm: the overrides of a tiny run, and how many seeded random kill points to use.
# GRPO with off-policy reuse: 2 epochs x 2 mini-batches of 8 (of N = 2 prompts x 8 samples), 2 micro-
# batches each; cosine schedule after a 2-step warm-up, so the scheduler state matters; eval at 0, 4, 8.
GRPO = [*FAST, "trainer.steps=8", "trainer.save_every=2", "trainer.eval_every=4", "data.eval_size=32",
        "data.prompts_per_step=2", "trainer.mini_batch_size=8", "trainer.micro_batch_size=4",
        "trainer.update_epochs=2", "trainer.schedule=cosine", "trainer.warmup_steps=2", "hardware.num_threads=1"]
# DPO (offline loop): 4 pairs per step from a pool of 16, so the 8 steps cross an epoch boundary (a new
# seeded permutation of the pool); the reference log-prob cache is part of the state.
DPO = [*FAST, "algo=dpo", "trainer.steps=8", "trainer.save_every=2", "trainer.eval_every=4", "data.eval_size=16",
       "data.pref_eval_size=8", "data.prompts_per_step=4", "data.train_size=16", "trainer.micro_batch_size=4",
       "trainer.schedule=cosine", "trainer.warmup_steps=2", "hardware.num_threads=1"]
# DAPO: dynamic sampling drops zero-variance groups and generates again (up to 3 rounds), so how far the
# data cursor moves per step depends on the samples; soft overlong punishment gives the variance.
DAPO = [*FAST, "algo=dapo", "trainer.steps=6", "trainer.save_every=2", "trainer.eval_every=3", "data.eval_size=16",
        "data.prompts_per_step=2", "trainer.mini_batch_size=8", "trainer.micro_batch_size=4",
        "trainer.update_epochs=2", "hardware.num_threads=1"]
# GRPO on env=calculator: multi-turn episodes (tool call, result, answer). The embedded model is warm-started on
# the env's demonstrations, all of them calling the tool, for 60 SFT steps (~15 s once per cache): it calls,
# and copies imperfectly, so episodes take one to three turns.
CALC = ["env=calculator", "env.warm_start.tool_share=1.0", "env.warm_start.max_steps=60", "data.dev_size=16",
        "trainer.progress=false", "trainer.steps=6", "trainer.save_every=2", "trainer.eval_every=3",
        "data.eval_size=16", "data.prompts_per_step=2", "trainer.mini_batch_size=8", "trainer.micro_batch_size=4",
        "trainer.update_epochs=2", "hardware.num_threads=1"]
RUNS = {"grpo": (GRPO, 5), "dpo": (DPO, 5), "dapo": (DAPO, 3), "calculator": (CALC, 3)}


def steps_of(args) -> int:
    return int(next(a for a in args if a.startswith("trainer.steps=")).split("=")[1])


def kill_points(name: str) -> list[int]:
    """Seeded random kill steps: the same ones on every run of the test."""
    args, n = RUNS[name]
    return sorted(random.Random(f"rlx-resume-{name}").sample(range(1, steps_of(args)), n))


# The runs fork from one server process that has the heavy modules imported (and has run no torch op,
# so forking is safe); each child is a separate process that SIGKILL really kills.
CTX = multiprocessing.get_context("forkserver")
CTX.set_forkserver_preload(["torch", "transformers", "transformers.models.qwen3.modeling_qwen3", "rlx", "rlx.run",
                            "rlx.algos", "rlx.data", "rlx.models", "rlx.rewards", "rlx.rollout", "rlx.track",
                            "rlx.trainers", "conftest", "test_resume"])


def _train(overrides: list[str], run_dir: str, env: dict) -> None:
    """Child process: ``rlx.run(rlx.compose(overrides), run_dir)``, its output appended to run.log."""
    os.environ.update(env)
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    fd = os.open(Path(run_dir) / "run.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    print(f"==== rlx.run {' '.join(overrides)}", file=sys.stderr, flush=True)
    import rlx

    rlx.run(rlx.compose(overrides), run_dir)


def start(overrides, run_dir: Path, env: dict | None = None):
    p = CTX.Process(target=_train, args=(list(overrides), str(run_dir), env or {}), daemon=True)
    p.start()
    return p


def finish(overrides, run_dir: Path, env: dict | None = None) -> None:
    p = start(overrides, run_dir, env)
    p.join(300)
    if p.is_alive():   # never leave a run behind
        p.kill()
        p.join()
    assert p.exitcode == 0, f"run in {run_dir} exited {p.exitcode}:\n{_log_tail(run_dir)}"


def _log_tail(run_dir: Path, n: int = 3000) -> str:
    log = Path(run_dir) / "run.log"
    return log.read_text()[-n:] if log.exists() else "(no run.log)"


def wait_for_step(alive, run_dir: Path, step: int, timeout: float = 300) -> bool:
    """Block until metrics.jsonl's last line is ``step`` or later, written by the current process: a
    resumed run first truncates the file to its checkpoint, so a line counts only once the last line
    has been seen below ``step``. False if the process ended first."""
    armed, t0 = False, time.time()
    while alive() and time.time() - t0 < timeout:
        last = last_step(run_dir)
        if last < step:
            armed = True
        elif armed:
            return True
        time.sleep(0.01)
    return False


def newest_checkpoint(run_dir: Path) -> int:
    from rlx.runtime.checkpoint import Checkpointer, _step_of

    latest = Checkpointer(Path(run_dir) / "checkpoints").latest()
    return _step_of(latest) if latest else 0


def kill_chain(args, run_dir: Path, points) -> list[dict]:
    """SIGKILL a resumed run once the line of each kill point is written, then let the last one finish.
    A kill that landed late may have saved past the next planned point: that point moves one step past
    the newest checkpoint. Returns one record per kill."""
    kills = []
    for planned in points:
        k = max(planned, newest_checkpoint(run_dir) + 1)
        p = start(args + ["trainer.resume=true"], run_dir)
        reached = wait_for_step(p.is_alive, run_dir, k)
        p.kill()
        p.join()
        assert reached, f"run ended before step {k}:\n{_log_tail(run_dir)}"
        assert p.exitcode == -signal.SIGKILL, p.exitcode
        mid_save = any((run_dir / "checkpoints").glob("*.tmp"))
        kills.append({"step": k, "mid_save": mid_save, "checkpoint_after": newest_checkpoint(run_dir)})
    finish(args + ["trainer.resume=true"], run_dir)
    return kills


def strip_perf(rows):
    return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in rows]


def assert_same_weights(a: Path, b: Path) -> None:
    import torch
    from safetensors.torch import load_file

    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module", autouse=True)
def _stop_forkserver():
    yield
    from multiprocessing import forkserver

    forkserver._forkserver._stop()   # no process outlives the tests (and its CPU time is accounted)


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    """One uninterrupted run per algorithm, made on first use and shared by the tests below."""
    made: dict = {}

    def ref(name: str) -> Path:
        if name not in made:
            made[name] = tmp_path_factory.mktemp(name) / "ref"
            finish(RUNS[name][0], made[name])
        return made[name]

    return ref


@pytest.fixture(scope="module")
def grpo_ref(refs):
    return refs("grpo")


@pytest.mark.parametrize("name", ["grpo", "dpo", "dapo", "calculator"])
@pytest.mark.slow
def test_resume_after_sigkill_equals_uninterrupted(refs, tmp_path, name):
    args, n_kills = RUNS[name]
    ref, cut, steps = refs(name), tmp_path / "cut", steps_of(args)
    if name == "calculator":   # the resumed run is a multi-turn one: tool calls and observations happened
        rows = read_metrics(ref)[1:]
        assert max(r["episode/turns_mean"] for r in rows) > 1.2 and sum(r["tool/calls_mean"] for r in rows) > 0
    kills = kill_chain(args, cut, kill_points(name))
    assert len({k["step"] for k in kills}) >= n_kills, kills
    a, b = strip_perf(read_metrics(ref)), strip_perf(read_metrics(cut))
    assert [r["step"] for r in b] == list(range(steps + 1))
    assert a == b, next((i, x, y) for i, (x, y) in enumerate(zip(a, b)) if x != y)
    assert_same_weights(ref / "checkpoints" / f"step_{steps:08d}", cut / "checkpoints" / f"step_{steps:08d}")
    log = (cut / "run.log").read_text()
    assert "STARTING FROM STEP 0" in log   # the first launch had resume=true and nothing to resume: said so
    # a kill that left an unfinished checkpoint (.tmp) was followed by a resume that said it skipped it
    if any(k["mid_save"] for k in kills):
        assert "skipping incomplete checkpoint" in log
    print(f"\n{name}: kill points {[k['step'] for k in kills]}, inside a checkpoint write: "
          f"{sum(k['mid_save'] for k in kills)}")


@pytest.mark.slow
def test_same_seed_same_metrics_other_seed_other_trajectory(grpo_ref, tmp_path):
    twin, other = tmp_path / "twin", tmp_path / "seed1"
    finish(GRPO, twin)
    assert strip_perf(read_metrics(twin)) == strip_perf(read_metrics(grpo_ref))
    finish(GRPO + ["seed=1", "trainer.steps=2"], other)
    # step 1's samples (and so the behaviour policy's entropy on them) already differ with the seed;
    # nothing else differs before the first update (the 2-step run has the same warm-up lr)
    ref1, other1 = read_metrics(grpo_ref)[1], read_metrics(other)[1]
    assert ref1["policy/entropy"] != other1["policy/entropy"]
    assert ref1["optim/lr"] == other1["optim/lr"]


@pytest.mark.slow
def test_a_run_that_builds_the_embedded_model_equals_one_that_loads_it(tmp_path):
    """The first run on an empty model cache builds the model (seeding torch's generator and drawing from it);
    it must sample exactly as every later run, which loads the model from the cache."""
    env = {"RLX_CACHE": str(tmp_path / "empty_cache")}
    short = [*FAST, "trainer.steps=3", "data.prompts_per_step=2", "hardware.num_threads=1"]
    finish(short, tmp_path / "cold", env)
    assert "embedded model cached" in (tmp_path / "cold" / "run.log").read_text()   # this run did build it
    finish(short, tmp_path / "warm", env)
    assert strip_perf(read_metrics(tmp_path / "cold")) == strip_perf(read_metrics(tmp_path / "warm"))


@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_signal_saves_at_the_next_step_boundary_then_resumes_exactly(grpo_ref, tmp_path, sig, code):
    # SIGTERM and Ctrl-C (SIGINT) alike: the step running finishes, is checkpointed, summary.json says so, exit
    # 143 / 130; resuming gives the uninterrupted run's metrics
    from rlx.runtime.checkpoint import Checkpointer, _step_of

    run_dir, k = tmp_path / "term", 3
    run_dir.mkdir()
    with open(run_dir / "stderr.txt", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "rlx", *GRPO, f"hydra.run.dir={run_dir}"], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=err, env=os.environ.copy())
        try:
            assert wait_for_step(lambda: proc.poll() is None, run_dir, k)
            t0 = time.perf_counter()
            proc.send_signal(sig)
            assert proc.wait(120) == code
            latency = time.perf_counter() - t0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    last = read_metrics(run_dir)[-1]["step"]
    assert k <= last <= k + 1                           # the step running when the signal came, finished
    assert _step_of(Checkpointer(run_dir / "checkpoints").latest()) == last   # ... and saved
    assert f"{sig.name}: checkpoint saved at step {last}" in (run_dir / "stderr.txt").read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["interrupted"] == sig.name and summary["steps"] == last
    run_main(GRPO + ["trainer.resume=true"], run_dir)   # the CLI's main, forked without the imports' ~3 s
    assert strip_perf(read_metrics(run_dir)) == strip_perf(read_metrics(grpo_ref))
    print(f"\n{sig.name} after step {k}: checkpoint of step {last}, exit 143 after {latency:.2f} s")
