"""A run owns its run dir (a lock, refusals with exit 2, unique default names), and a resumed run keeps the
config saved in its dir (docs/reliability.md "Run directory", "Resume keeps the run's config").

Real ``python -m rlx`` processes on the tiny model (random init, 2 prompts per step); the in-process checks
(``claim``, ``resume_config``, ``check_resumed``) load no model.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FAST, REPO, read_metrics, run_cli
from omegaconf import OmegaConf

ARGS = [*FAST, "hardware.num_threads=1", "data.prompts_per_step=2", "data.eval_size=8", "trainer.save_every=2"]
DONE = [*ARGS, "trainer.steps=6", "seed=5"]
NAME = re.compile(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_[0-9a-z]+(-\d+)?")


def rlx_cli(args, cwd=REPO) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rlx", *args], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=os.environ.copy())


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("rlx:")]


def snapshot(d: Path) -> dict:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(Path(d).rglob("*")) if p.is_file()}


def strip_perf(rows):
    return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in rows]


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """A finished 6-step run (seed 5, checkpoints at steps 4 and 6): the dir the tests below try to reuse."""
    d = tmp_path_factory.mktemp("done") / "run"
    run_cli(DONE, run_dir=d)
    return d


# ---------------------------------------------------------------- unique default names


def test_default_run_dirs_are_unique(cfg, tmp_path, monkeypatch):
    from rlx.runner import default_run_dir

    monkeypatch.chdir(tmp_path)
    first = default_run_dir(cfg)   # rlx.run without Hydra: outputs/<algo>/<model>/<date>_<time>_<id>
    first.mkdir(parents=True)
    second = default_run_dir(cfg)  # the same process in the same second
    assert first != second and first.parent == second.parent == Path("outputs/grpo/tiny")
    assert NAME.fullmatch(first.name) and NAME.fullmatch(second.name), (first, second)
    # hydra.run.dir of two processes started together (python -m rlx's default): different ids
    code = ("from rlx.config.compose import _compose_raw\n"
            "print(_compose_raw(['model.init=random'], hydra=True).hydra.run.dir)")
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    dirs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert dirs[0] != dirs[1], dirs
    assert all(d.startswith("outputs/grpo/tiny/") and NAME.fullmatch(Path(d).name) for d in dirs), dirs


@pytest.mark.slow
def test_two_default_dir_launches_get_two_dirs(tmp_path):
    procs = [rlx_cli([*ARGS, "trainer.steps=1"], cwd=tmp_path) for _ in range(2)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    dirs = sorted((tmp_path / "outputs" / "grpo" / "tiny").iterdir())
    assert len(dirs) == 2 and all(NAME.fullmatch(d.name) for d in dirs), dirs
    for d in dirs:
        assert [r["step"] for r in read_metrics(d)] == [0, 1] and not (d / ".rlx.lock").exists()


# ---------------------------------------------------------------- ownership


@pytest.mark.slow
def test_a_second_launch_into_a_busy_dir_exits_2_and_the_first_completes(tmp_path):
    d = tmp_path / "run"
    first = rlx_cli([*ARGS, "trainer.steps=30", "seed=3", f"hydra.run.dir={d}"])
    try:
        t0 = time.time()
        while not (d / "metrics.jsonl").exists():   # training: the lock was taken before the model loaded
            assert first.poll() is None and time.time() - t0 < 200, first.stderr.read() if first.poll() else "slow"
            time.sleep(0.01)
        os.kill(first.pid, signal.SIGSTOP)   # it stays alive (and holds the dir) while the second one tries
        second = subprocess.run([sys.executable, "-m", "rlx", *ARGS, "trainer.steps=2", "seed=4",
                                 f"hydra.run.dir={d}"], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr[-3000:]
        [line] = error_lines(second.stderr)
        assert line.startswith(f"rlx: error: run dir {d} is locked by pid {first.pid} on host "
                               f"{socket.gethostname()} since "), line
        lock = json.loads((d / ".rlx.lock").read_text())
        assert lock["pid"] == first.pid and lock["host"] == socket.gethostname()
        from rlx.runtime.run_dir import RunDirError, claim

        for resume in (False, True):   # rlx.run's own guard (two launches that both got past the CLI's check)
            with pytest.raises(RunDirError, match=f"locked by pid {first.pid} on host"):
                claim(d, resume=resume)
        os.kill(first.pid, signal.SIGCONT)
        assert first.wait(300) == 0, first.stderr.read()[-3000:]
    finally:
        if first.poll() is None:
            os.kill(first.pid, signal.SIGCONT)
            first.kill()
            first.wait()
    assert [r["step"] for r in read_metrics(d)] == list(range(31))
    assert OmegaConf.load(d / "config.yaml").seed == 3
    assert "seed=3" in (d / ".hydra" / "overrides.yaml").read_text()   # the second launch wrote nothing there
    assert json.loads((d / "summary.json").read_text())["steps"] == 30
    assert not (d / ".rlx.lock").exists()


@pytest.mark.slow
def test_a_rerun_into_a_used_dir_without_resume_exits_2_and_keeps_its_files(done):
    before = snapshot(done)
    proc = run_cli(DONE, run_dir=done, check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    [line] = error_lines(proc.stderr)
    assert line == (f"rlx: error: run dir {done} holds another run's metrics.jsonl, summary.json, checkpoints/; "
                    "pass trainer.resume=true to continue it, or choose another hydra.run.dir"), line
    from rlx.runtime.run_dir import RunDirError, claim

    with pytest.raises(RunDirError, match="holds another run's metrics.jsonl"):   # rlx.run's own check
        claim(done, resume=False)
    assert snapshot(done) == before   # nothing written, nothing removed (.hydra/ included), no lock left


# ---------------------------------------------------------------- resume keeps the run's config


@pytest.mark.slow
def test_resume_without_overrides_reaches_the_runs_steps_and_equals_the_uninterrupted_run(done, tmp_path):
    cut = tmp_path / "cut"
    killed = subprocess.run([sys.executable, "-m", "rlx", *DONE, f"hydra.run.dir={cut}"], cwd=REPO,
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "RLX_FAULT": "kill_in_save@4:rename"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]   # after its step-4 checkpoint
    assert json.loads((cut / ".rlx.lock").read_text())["pid"] > 0   # a killed run leaves its lock behind
    # only trainer.resume=true: steps, seed, model.init, batch sizes... come from cut/config.yaml
    proc = run_cli(["trainer.resume=true"], run_dir=cut, timeout=200)
    assert f"[rlx] run dir {cut}: taking over the lock of pid " in proc.stderr   # stale: its pid is gone
    assert f"resumed from {cut / 'checkpoints' / 'step_00000004'}" in proc.stderr
    assert strip_perf(read_metrics(cut)) == strip_perf(read_metrics(done))
    assert json.loads((cut / "summary.json").read_text())["steps"] == 6
    assert not (cut / ".rlx.lock").exists()


@pytest.mark.slow
def test_resume_refuses_a_changed_key_and_extends_with_trainer_steps(done, tmp_path):
    before = snapshot(done)
    proc = run_cli(["trainer.resume=true", "seed=7", "trainer.lr=0.001", "trainer.progress=false"], run_dir=done,
                   check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    [line] = error_lines(proc.stderr)
    assert line.startswith("rlx: error: trainer.resume=true: seed=7 (saved: 5); trainer.lr=0.001 (saved: 0.0001) "
                           f"differ from the run's config ({done / 'config.yaml'})"), line
    assert "trainer.steps" in line   # the keys that may change are listed
    assert snapshot(done) == before

    ext = tmp_path / "ext"
    shutil.copytree(done, ext)
    # seed=5 equals the saved value: fine; trainer.steps=8 extends the run (a note says so)
    proc = run_cli(["trainer.resume=true", "trainer.steps=8", "seed=5"], run_dir=ext)
    assert f"[rlx] resume of {ext}: its saved config, with trainer.steps=8 (was 6; the run is extended)" in proc.stderr
    assert [r["step"] for r in read_metrics(ext)] == list(range(9))
    saved = OmegaConf.load(ext / "config.yaml")
    assert saved.trainer.steps == 8 and saved.seed == 5 and saved.model.init == "random"
    assert saved.data.prompts_per_step == 2 and saved.trainer.resume is True


def test_resume_config_applies_safe_overrides_and_refuses_others(tmp_path):
    import rlx
    from rlx.runtime.resume_config import check_resumed, resume_config
    from rlx.runtime.run_dir import RunDirError

    saved = rlx.compose(["algo=dpo", "seed=3", "trainer.steps=10", "data.eval_size=8"])
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(saved, resolve=True))
    saved = OmegaConf.load(tmp_path / "config.yaml")

    def resumed(typed):   # what python -m rlx <typed> composes, then the resume
        return resume_config(rlx.compose(typed), saved, typed, rlx.compose(["algo=dpo"]), tmp_path)

    cfg = resumed(["trainer.resume=true", "trainer.steps=20", "hardware.num_threads=2", "seed=3", "algo=dpo"])
    assert (cfg.algo.name, cfg.seed, cfg.data.eval_size) == ("dpo", 3, 8)   # the saved run, not the defaults
    assert (cfg.trainer.steps, cfg.trainer.resume, cfg.hardware.num_threads) == (20, True, 2)
    assert cfg.data.shuffle_seed == 3   # ${seed}: the interpolation is kept
    with pytest.raises(RunDirError, match=r"algo=grpo \(saved: dpo\).*data.eval_size=16 \(saved: 8\)"):
        resumed(["trainer.resume=true", "algo=grpo", "data.eval_size=16"])
    with pytest.raises(RunDirError, match=r"experiment=rlhf_pipeline \(saved: a run without pipeline\)"):
        resumed(["trainer.resume=true", "experiment=rlhf_pipeline"])
    # rlx.run(cfg) with trainer.resume=true: every key compared; a safe difference is used and said
    notes = []
    check_resumed(rlx.compose(["algo=dpo", "seed=3", "trainer.steps=12", "data.eval_size=8", "trainer.resume=true"]),
                  tmp_path, log=notes.append)
    assert notes == [f"[rlx] resume of {tmp_path}: its saved config, with trainer.steps=12 (was 10; the run is "
                     "extended; the linear lr schedule follows the new total)"]   # algo=dpo's preset: linear
    with pytest.raises(RunDirError, match=r"seed=4 \(saved: 3\)"):
        check_resumed(rlx.compose(["algo=dpo", "seed=4", "data.eval_size=8"]), tmp_path, log=notes.append)
