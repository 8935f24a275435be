"""Reliability figures (docs/reliability.md): config errors, atomic checkpoints, the numerical guard,
bad data rows and fault isolation. Exact resume, SIGTERM and determinism are in test_resume.py.

Every fault here is real: a process SIGKILLed in the middle of a checkpoint write (RLX_FAULT, rlx/runtime/faults.py),
truncated and corrupted checkpoint files, a learning rate that overflows the model, reward functions
that return NaN, overflow, raise or hang, and an MLflow server that does not exist.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import FAST, REPO

import rlx
from rlx.config import ConfigError
from rlx.registry import REWARDS
from rlx.runtime.checkpoint import Checkpointer, ResumeError, _step_of

# ---------------------------------------------------------------- 1. config errors (figure 4)

# (overrides, what the first line must name: the key, and the closest valid choice or the valid range)
MALFORMED = [
    # misspelt keys at every level
    (["sed=1"], "'sed'", "'seed'"),
    (["trainr.steps=3"], "'trainr'", "'trainer.steps'"),
    (["trainer.stpes=3"], "'trainer.stpes'", "'trainer.steps'"),
    (["trainer.lrr=1e-3"], "'trainer.lrr'", "'trainer.lr'"),
    (["rollout.temprature=0.7"], "'rollout.temprature'", "'rollout.temperature'"),
    (["algo.eps_hgih=0.3"], "'algo.eps_hgih'", "'algo.eps_high'"),
    (["algo.grup_size=4"], "'algo.grup_size'", "'algo.group_size'"),
    (["model.initt=random"], "'model.initt'", "'model.init'"),
    (["model.arch.hidden_sise=64"], "'model.arch.hidden_sise'", "'model.arch.hidden_size'"),
    (["model.warm_start.dev_targt=0.3"], "'model.warm_start.dev_targt'", "'model.warm_start.dev_target'"),
    (["model.warm_start.task.max_operant=9"], "max_operant'", "'model.warm_start.task.max_operand'"),
    (["reward.terms.correct.weigth=2"], "'reward.terms.correct.weigth'", "'reward.terms.correct.weight'"),
    (["reward.terms.corect.weight=2"], "'reward.terms.corect'", "'reward.terms.correct.weight'"),
    (["reward.score_trm=correct"], "'reward.score_trm'", "'reward.score_term'"),
    (["data.prompts_per_stp=4"], "'data.prompts_per_stp'", "'data.prompts_per_step'"),
    (["hardware.devce=cpu"], "'hardware.devce'", "'hardware.device'"),
    (["tracker.backend=[]"], "'tracker.backend'", "'tracker.backends'"),
    (["algoo=grpo"], "'algoo'", "'algo'"),
    (["algo=sft", "algo.group_size=4"], "'algo.group_size'", "'algo.batch_size'"),
    # unknown group choices
    (["algo=grpoo"], "algo=grpoo", "'algo=grpo'"),
    (["algo=rlooo"], "algo=rlooo", "'algo=rloo'"),
    (["model=tinyy"], "model=tinyy", "'model=tiny'"),
    (["reward=arithmetc"], "reward=arithmetc", "'reward=arithmetic'"),
    (["data=arithmatic"], "data=arithmatic", "'data=arithmetic'"),
    (["hardware=cpuu"], "hardware=cpuu", "'hardware=cpu'"),
    (["tracker=jsnol"], "tracker=jsnol", "'tracker=jsonl'"),
    # wrong types
    (["trainer.lr=fast"], "trainer.lr='fast'", "expected float"),
    (["trainer.steps=1.5"], "trainer.steps=1.5", "expected int"),
    (["seed=x"], "seed='x'", "expected int"),
    (["algo.group_size=eight"], "algo.group_size='eight'", "expected int"),
    (["algo.scale_rewards=maybe"], "algo.scale_rewards='maybe'", "expected bool"),
    (["rollout.temperature=hot"], "rollout.temperature='hot'", "expected float"),
    (["trainer.betas=0.9"], "trainer.betas=0.9", "expected list"),
    (["trainer.resume=yes"], "trainer.resume='yes'", "expected bool"),
    # bad values of enum-like keys and registry names
    (["model.dtype=float33"], "model.dtype='float33'", "'float32'"),
    (["hardware.device=gpu"], "hardware.device='gpu'", "cuda"),
    (["trainer.schedule=cosin"], "trainer.schedule='cosin'", "'cosine'"),
    (["algo.kl_estimator=k4"], "algo.kl_estimator='k4'", "k3"),
    (["algo.loss_agg_mode=token_meen"], "algo.loss_agg_mode='token_meen'", "'token_mean'"),
    (["rollout.engine=hff"], "rollout.engine='hff'", "'hf'"),
    (["reward.terms.correct.fn=arith_correct"], "reward.terms.correct.fn='arith_correct'", "'arithmetic_correct'"),
    (["tracker.backends=[mlfow]"], "tracker.backends[0]='mlfow'", "'mlflow'"),
    # out-of-range values
    (["trainer.lr=-1"], "trainer.lr=-1", "> 0"),
    (["trainer.steps=0"], "trainer.steps=0", ">= 1"),
    (["trainer.update_epochs=0"], "trainer.update_epochs=0", ">= 1"),
    (["rollout.temperature=0"], "rollout.temperature=0", "> 0"),
    (["rollout.top_p=1.5"], "rollout.top_p=1.5", "(0, 1]"),
    (["rollout.max_new_tokens=0"], "rollout.max_new_tokens=0", ">= 1"),
    (["algo.eps_low=-0.1"], "algo.eps_low=-0.1", ">= 0"),
    (["algo.eps_high=0.1"], "algo.eps_high=0.1", "algo.eps_low=0.2"),
    (["algo.beta=-1"], "algo.beta=-1", ">= 0"),
    (["algo.group_size=1"], "algo.group_size=1", "at least 2"),
    (["algo=rloo", "algo.group_size=1"], "algo.group_size=1", "at least 2"),
    (["trainer.grad_clip=-1"], "trainer.grad_clip=-1", ">= 0"),
    (["trainer.betas=[0.9,1.5]"], "trainer.betas=[0.9, 1.5]", "[0, 1)"),
    (["trainer.keep_checkpoints=0"], "trainer.keep_checkpoints=0", ">= 1"),
    (["trainer.max_bad_steps=0"], "trainer.max_bad_steps=0", ">= 1"),
    (["trainer.save_every=-1"], "trainer.save_every=-1", ">= 0"),
    (["rollout.top_k=-1"], "rollout.top_k=-1", ">= 0"),
    (["hardware.num_threads=0"], "hardware.num_threads=0", ">= 1"),
    # '+' additions the schema does not know, and '~' deletions
    (["+algo.eps_hihg=0.3"], "'algo.eps_hihg'", "'algo.eps_high'"),
    (["+trainer.lrr=1"], "'trainer.lrr'", "'trainer.lr'"),
    (["+seed2=3"], "'seed2'", "'seed'"),
    (["+trainer.lr=1e-3"], "'+trainer.lr'", "drop the '+'"),
    (["~trainer.steps"], "'~trainer.steps'", "trainer.steps=<value>"),
    # inconsistent batch sizes
    (["trainer.mini_batch_size=100"], "trainer.mini_batch_size=100", "closest that does is 128"),
    (["data.prompts_per_step=3", "trainer.mini_batch_size=16"], "trainer.mini_batch_size=16", "closest that does is 12"),
    (["trainer.mini_batch_size=16", "trainer.micro_batch_size=3"], "trainer.micro_batch_size=3",
     "trainer.mini_batch_size=16"),
    (["trainer.micro_batch_size=0"], "trainer.micro_batch_size=0", ">= 1, or null"),
    (["trainer.mini_batch_size=-8"], "trainer.mini_batch_size=-8", ">= 1, or null"),
    # syntax
    (["trainer.steps"], "'trainer.steps'", "key=value"),
    (["trainer.lr=${trainer.lrr}"], "trainer.lr", "'${trainer.lr}'"),
]


@pytest.mark.parametrize("overrides, key, hint", MALFORMED, ids=[" ".join(m[0]) for m in MALFORMED])
@pytest.mark.slow
def test_malformed_invocation_names_key_and_closest_choice(overrides, key, hint):
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as e:
        rlx.compose(overrides)
    first = str(e.value).splitlines()[0]
    assert key in first and hint in first, first
    assert time.perf_counter() - t0 < 5.0


# The user's path: python -m rlx, timed. RLX_CACHE is an empty dir, so any model load would build the
# embedded model into it; no run dir may appear either (nothing ran).
CLI_CASES = [
    ("model.arch.hidden_sise=64", "'model.arch.hidden_size'"),
    ("algo=grpoo", "'algo=grpo'"),
    ("trainer.lr=fast", "trainer.lr='fast'"),
    ("algo.eps_high=0.1", "algo.eps_low=0.2"),
    ("algo.group_size=1", "at least 2"),
    ("+trainer.lrr=1", "'trainer.lr'"),
    ("trainer.mini_batch_size=48", "closest that does is 32"),
]


@pytest.mark.parametrize("arg, hint", CLI_CASES, ids=[c[0] for c in CLI_CASES])
@pytest.mark.slow
def test_cli_exits_2_fast_before_any_load(arg, hint, tmp_path):
    cache, run_dir = tmp_path / "cache", tmp_path / "run"
    cache.mkdir()
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "rlx", arg, f"hydra.run.dir={run_dir}"], cwd=REPO,
                          capture_output=True, text=True, timeout=60, env={**os.environ, "RLX_CACHE": str(cache)})
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 2, proc.stderr
    first = proc.stderr.strip().splitlines()[0]
    assert first.startswith("rlx: config error:") and arg.split("=")[0].lstrip("+") in first and hint in first, first
    assert elapsed < 5.0, f"{elapsed:.1f} s"
    assert not any(cache.iterdir()) and not run_dir.exists()


def test_config_checks_import_no_torch():
    # what keeps the CLI's exit-2 path fast: the checks of the shared groups need no torch, transformers or
    # component import (the algorithm's own keys are checked by the algorithm, which imports torch)
    code = ("import sys, rlx\n"
            "for bad in (['rollout.top_p=2'], ['trainer.schedule=x'], ['trainer.micro_batch_size=3']):\n"
            "    try: rlx.compose(bad)\n"
            "    except rlx.ConfigError: pass\n"
            "    else: raise SystemExit(f'{bad} passed')\n"
            "print(sorted(m for m in ('torch', 'transformers', 'rlx.algos') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.parametrize("bad, needle", [(["algo.group_size=1"], "algo.group_size=1: grpo needs at least 2"),
                                         (["algo=dpo", "algo.tau=0.1"], "algo.tau"),
                                         (["algo=ipo", "algo.tau=0"], "algo.tau=0: must be > 0"),
                                         (["algo=dapo", "algo.overlong_buffer_len=9"], "rollout.max_new_tokens=6")])
def test_algorithm_checks_its_own_keys(bad, needle):
    # the typed algorithm (rlx/algos/base.py) names the key; dpo has no tau: caught before the build, as a typo
    with pytest.raises(rlx.ConfigError) as err:
        rlx.compose(bad)
    assert needle in str(err.value), str(err.value)


def test_light_choice_lists_match_the_modules_that_use_them():
    from rlx.config import choices
    from rlx.rollout.correction import CORRECTIONS

    assert choices.IS_CORRECTIONS == tuple(CORRECTIONS)


# ---------------------------------------------------------------- 2. atomic checkpoints (figure 2)


def _model(seed: int):
    torch.manual_seed(seed)
    return torch.nn.Linear(4, 3)


def _save_in_killed_child(ck: Checkpointer, step: int, model, phase: str) -> None:
    """Fork; the child saves with RLX_FAULT=kill_in_save@step:phase and is SIGKILLed at that point."""
    pid = os.fork()
    if pid == 0:   # child: no cleanup of any kind may run (os._exit if the fault did not fire)
        try:
            os.environ["RLX_FAULT"] = f"kill_in_save@{step}:{phase}"
            ck.save(step, model, {"step": step})
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status


@pytest.mark.parametrize("phase, survivor", [("weights", 1), ("state", 1), ("manifest", 1), ("rename", 2)])
def test_sigkill_during_checkpoint_write_never_loads_wrongly(tmp_path, capfd, phase, survivor):
    ck = Checkpointer(tmp_path, keep=2)
    models = {1: _model(1), 2: _model(2)}
    ck.save(1, models[1], {"step": 1})
    _save_in_killed_child(ck, 2, models[2], phase)
    latest = ck.latest()
    assert _step_of(latest) == survivor   # the kill before the rename leaves step 1 as the newest complete one
    fresh = _model(0)
    assert Checkpointer.load(latest, fresh)["step"] == survivor
    assert torch.equal(fresh.weight, models[survivor].weight)
    err = capfd.readouterr().err
    assert ("skipping incomplete checkpoint" in err) == (survivor == 1), err
    # the next save of step 2 replaces the cut one; the step-1 checkpoint stays (keep=2)
    ck.save(2, models[2], {"step": 2})
    assert [_step_of(d) for d in ck.entries()] == [1, 2] and _step_of(ck.latest()) == 2


@pytest.mark.parametrize("damage, reason", [
    ("truncate_state", "state.pt differs from the SHA-256"),
    ("flip_weight_byte", "model.safetensors differs from the SHA-256"),
    ("delete_state", "state.pt is missing"),
    ("garble_manifest", "unreadable manifest.json"),
    ("delete_manifest", "no manifest.json"),
])
def test_damaged_checkpoint_is_skipped_with_the_reason(tmp_path, capfd, damage, reason):
    ck = Checkpointer(tmp_path, keep=3)
    for s in (1, 2):
        ck.save(s, _model(s), {"step": s})
    d = tmp_path / "step_00000002"
    if damage == "truncate_state":
        data = (d / "state.pt").read_bytes()
        (d / "state.pt").write_bytes(data[: len(data) // 2])
    elif damage == "flip_weight_byte":   # same size, one byte of the last tensor's data changed
        data = bytearray((d / "model.safetensors").read_bytes())
        data[-1] ^= 0xFF
        (d / "model.safetensors").write_bytes(bytes(data))
    elif damage == "delete_state":
        (d / "state.pt").unlink()
    elif damage == "garble_manifest":
        (d / "manifest.json").write_text('{"step": 2, "fil')
    else:
        (d / "manifest.json").unlink()
    assert _step_of(ck.resume_point()) == 1
    err = capfd.readouterr().err
    assert f"skipping incomplete checkpoint {d}: {reason}" in err, err


def test_resume_refuses_to_start_over_when_no_finished_checkpoint_is_intact(tmp_path):
    ck = Checkpointer(tmp_path, keep=2)
    assert ck.resume_point() is None   # no checkpoint at all: the trainer warns and starts at step 0
    ck.save(1, _model(1), {"step": 1})
    (tmp_path / "step_00000001" / "state.pt").write_bytes(b"")
    with pytest.raises(ResumeError, match="none is intact.*refusing to start from scratch"):
        ck.resume_point()


def test_resume_after_cut_first_save_starts_over_loudly(tmp_path):
    # the very first save was cut short: nothing was ever finished, so nothing is lost by starting over
    _save_in_killed_child(Checkpointer(tmp_path), 2, _model(2), "state")
    assert [d.name for d in Checkpointer(tmp_path).entries()] == ["step_00000002.tmp"]
    assert Checkpointer(tmp_path).resume_point() is None


@pytest.mark.slow
def test_cli_resume_with_only_damaged_checkpoints_exits_2_before_loading(tmp_path):
    ck = Checkpointer(tmp_path / "run" / "checkpoints")
    ck.save(4, _model(4), {"step": 4})
    (tmp_path / "run" / "checkpoints" / "step_00000004" / "model.safetensors").write_bytes(b"x")
    cache = tmp_path / "cache"
    cache.mkdir()
    proc = subprocess.run([sys.executable, "-m", "rlx", *FAST, "trainer.resume=true",
                           f"hydra.run.dir={tmp_path / 'run'}"], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "RLX_CACHE": str(cache)})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "rlx: error: trainer.resume=true" in proc.stderr and "refusing to start from scratch" in proc.stderr
    assert not any(cache.iterdir())   # failed before the model was built or loaded


# ---------------------------------------------------------------- 3. numerical guard (figure 5)

SMALL = [*FAST, "data.prompts_per_step=2", "hardware.num_threads=1", "trainer.save_every=1",
         "trainer.keep_checkpoints=10"]


@REWARDS.register("reliability_flaky")
def build_flaky(cfg=None):
    """Reward term with a real signal (length of the completion mod 3), broken on calls 2-4."""
    calls = [0]

    def flaky(prompts, completions, **fields) -> list[float]:
        calls[0] += 1
        n = len(completions)
        if calls[0] == 2:
            return [math.nan] * n                          # no sample of step 2 can be scored
        if calls[0] == 3:
            return [1e308] * n                             # finite, but weight 10 overflows the sum to inf
        if calls[0] == 4:
            return [math.nan] * (n // 2) + [float(len(c) % 3) for c in completions[n // 2:]]   # half unscorable
        return [float(len(c) % 3) for c in completions]

    return flaky


def _weights(run_dir: Path, step: int) -> dict:
    from safetensors.torch import load_file

    return load_file(run_dir / "checkpoints" / f"step_{step:08d}" / "model.safetensors")


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def _raw_rows(run_dir: Path) -> list[dict]:
    """metrics.jsonl parsed strictly: NaN/Infinity literals (non-standard JSON) are an error."""
    def no_literal(name):
        raise ValueError(f"bare {name} in metrics.jsonl")

    return [json.loads(ln, parse_constant=no_literal) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_nonfinite_reward_skips_the_update_of_its_step_only(tmp_path):
    # eval off (eval_size=0): the reward is called once per step, so call k is step k
    cfg = rlx.compose([*SMALL, "trainer.steps=5", "data.eval_size=0", "reward.terms.format.fn=reliability_flaky",
                       "reward.terms.format.weight=10.0"])
    summary = rlx.run(cfg, tmp_path)
    rows = {r["step"]: r for r in _raw_rows(tmp_path)}
    assert [rows[s]["health/skipped_steps"] for s in range(1, 6)] == [0.0, 1.0, 2.0, 2.0, 2.0]
    assert rows[2]["reward/mean"] == "nan" and rows[2]["reward/failures"] == 16.0   # logged, as a string
    assert rows[3]["reward/mean"] == "inf" and rows[3]["reward/failures"] == 0.0
    assert rows[4]["reward/failures"] == 8.0 and math.isfinite(rows[4]["reward/mean"])   # masked, not skipped
    assert summary["skipped_steps"] == 2 and summary["steps"] == 5
    w = {s: _weights(tmp_path, s) for s in (1, 2, 3, 4)}
    assert _same(w[1], w[2]) and _same(w[2], w[3])   # steps 2 and 3: no update
    assert not _same(w[3], w[4])                     # step 4 trained on its 8 scorable samples
    opt = {s: torch.load(tmp_path / "checkpoints" / f"step_{s:08d}" / "state.pt", weights_only=False)["optim"]
           for s in (1, 3)}
    assert all(torch.equal(a, b) for p in opt[1]["state"] for a, b in
               zip(opt[1]["state"][p].values(), opt[3]["state"][p].values()))   # nor any optimizer state


def test_nonfinite_loss_stops_after_max_bad_steps_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("RLX_FAULT", "nan_logp@2")   # the training log-probs of step 2 are NaN
    from rlx.trainers.base import NonFiniteError

    with pytest.raises(NonFiniteError, match=r"non-finite loss at step 2, then 1 bad step\(s\) in a row"):
        rlx.run(rlx.compose([*SMALL, "trainer.steps=4", "trainer.max_bad_steps=1", "data.eval_size=8"]), tmp_path)
    rows = _raw_rows(tmp_path)
    assert rows[-1]["step"] == 2 and rows[-1]["loss/total"] == "nan" and rows[-1]["health/skipped_steps"] == 1.0
    assert _same(_weights(tmp_path, 1), _weights(tmp_path, 2))


@pytest.mark.slow
def test_overflowing_lr_stops_the_cli_run_with_exit_3_naming_the_first_bad_quantity(tmp_path):
    # lr 1e38: the first update with a nonzero gradient throws the weights past float32's range with a finite loss
    # and gradient. The check after the update names it (step F: "weights after the update"), no checkpoint is
    # written from then on, the next rollout meets non-finite logits (its update skipped), and the run stops.
    proc = subprocess.run([sys.executable, "-m", "rlx", *SMALL, "trainer.steps=6", "trainer.lr=1e38",
                           "trainer.max_bad_steps=2", "data.eval_size=8", f"hydra.run.dir={tmp_path}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert proc.returncode == 3, proc.stderr[-3000:]
    msg = next(ln for ln in proc.stderr.splitlines() if ln.startswith("rlx: error:"))
    rows = _raw_rows(tmp_path)
    first = int(re.search(r"non-finite weights after the update at step (\d+), then 2 bad step", msg).group(1))
    row = next(r for r in rows if r["step"] == first)
    assert math.isfinite(row["optim/grad_norm"]) and math.isfinite(row["loss/total"])   # a finite update
    assert rows[-1]["step"] == first + 1 and "optim/grad_norm" not in rows[-1]   # the next one skipped
    assert rows[-1]["health/skipped_steps"] == 1.0
    # the newest checkpoint is the last good state (step first - 1, every weight finite); none after it
    ckpts = tmp_path / "checkpoints"
    steps = sorted(int(p.name.split("_")[1]) for p in ckpts.iterdir()) if ckpts.exists() else []
    assert steps == list(range(1, first)), steps
    if steps:
        assert all(torch.isfinite(w).all() for w in _weights(tmp_path, steps[-1]).values())


# ---------------------------------------------------------------- 4. bad data rows (figure 6)


def _write_lines(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_bad_prompt_rows_error_with_file_and_line_or_are_dropped_and_counted(tmp_path):
    rows = [{"prompt": f"{i}+1=", "answer": str(i + 1)} for i in range(12)]
    rows[3] = {"question": "1+1=", "answer": "2"}   # line 4: no prompt field
    rows[7] = {"prompt": 5, "answer": "6"}          # line 8: wrong type
    path = _write_lines(tmp_path / "p.jsonl", rows)
    base = ["data=jsonl", f"data.path={path}", "data.eval_size=2"]
    with pytest.raises(ValueError, match=f"{path}:4: missing field 'prompt'"):
        rlx.build("data", rlx.compose(base).data)
    data = rlx.build("data", rlx.compose(base + ["data.bad_rows=drop"]).data)
    assert sum(data.dropped.values()) == 2 and "dropped 2" in data.summary()


def test_bad_preference_rows_error_with_file_and_line_or_are_dropped_and_counted(tmp_path):
    rows = [{"prompt": f"{i}+1=", "chosen": str(i + 1), "rejected": str(i)} for i in range(12)]
    rows[2] = {"prompt": "1+1=", "chosen": "", "rejected": "3"}   # line 3: empty response
    rows[5] = {"prompt": "1+1=", "chosen": "2"}                   # line 6: no rejected
    path = _write_lines(tmp_path / "pref.jsonl", rows)
    base = ["data=preference", f"data.path={path}", "data.eval_size=2"]
    with pytest.raises(ValueError, match=f"{path}:3: empty 'chosen'"):
        rlx.build("data", rlx.compose(base).data)
    data = rlx.build("data", rlx.compose(base + ["data.bad_rows=drop"]).data)
    assert dict(data.dropped) == {"empty response": 1, "missing field": 1}


def test_invalid_json_line_is_an_error_naming_file_and_line(tmp_path):
    path = _write_lines(tmp_path / "p.jsonl", [{"prompt": "1+1=", "answer": "2"}, '{"prompt": "2+2=", "ans'])
    with pytest.raises(ValueError, match=f"{path}:2: not valid JSON"):
        rlx.build("data", rlx.compose(["data=jsonl", f"data.path={path}", "data.eval_size=0"]).data)


# ---------------------------------------------------------------- 5. isolation (figure 8)


@REWARDS.register("reliability_raises")
def build_raises(cfg=None):
    def raises(prompts, completions, **fields) -> list[float]:
        """Raises whenever a completion of odd length is in the call (per-sample retries isolate it)."""
        if any(len(c) % 2 for c in completions):
            raise ValueError("a reward function bug")
        return [1.0] * len(completions)

    return raises


@REWARDS.register("reliability_hangs")
def build_hangs(cfg=None):
    def hangs(prompts, completions, **fields) -> list[float]:
        """Takes 3 s (well past timeout_s) whenever a completion whose length is a multiple of 3 is in the call."""
        if any(len(c) % 3 == 0 for c in completions):
            time.sleep(3.0)
        return [0.5] * len(completions)

    return hangs


@pytest.mark.slow
def test_reward_exceptions_timeouts_and_tracker_outage_together(tmp_path, capfd):
    steps = 3
    cfg = rlx.compose([*SMALL, f"trainer.steps={steps}", "data.eval_size=4", "reward.timeout_s=0.5",
                       "reward.terms.correct.fn=reliability_raises", "reward.terms.format.fn=reliability_hangs",
                       "tracker=mlflow", "tracker.mlflow.tracking_uri=http://127.0.0.1:9",
                       "tracker.mlflow.init_timeout_s=1.0"])
    summary = rlx.run(cfg, tmp_path)
    err = capfd.readouterr().err
    assert "tracker 'mlflow' could not start" in err, err[-2000:]
    rows = _raw_rows(tmp_path)
    assert [r["step"] for r in rows] == list(range(steps + 1)) and summary["steps"] == steps
    for r in rows[1:]:   # every step logged locally with its failures counted, and the scorable samples trained
        assert 0 < r["reward/failures"] < 16 and math.isfinite(r["reward/mean"]), r
        assert isinstance(r["loss/total"], float) and r["health/skipped_steps"] == 0.0
    assert (tmp_path / "summary.json").exists()
