"""Pre-flight (issues 16.5, 15.5): before any model or data loads and before a run dir exists, ``python -m rlx``
exits with its documented code (rlx/config/preflight.py, docs/errors.md) and one ``rlx:`` line, no traceback,
in under 5 s: missing files, reward functions that do not import, a device this torch lacks, a model too big,
a hub model that is not cached while offline. The 5 s are the CLI process's own CPU seconds (``_cli``)."""

import os
import resource
import subprocess
import sys

import pytest

from rlx.config.preflight import EXIT_CONFIG, EXIT_MACHINE, EXIT_MODEL


def _cli(tmp_path, *argv, **env):
    hf = tmp_path / "hf_home"
    hf.mkdir(exist_ok=True)
    e = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", WANDB_MODE="offline", HF_HUB_OFFLINE="1", HF_HOME=str(hf),
             PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    e.pop("RLX_DEBUG", None)
    e.update(env)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, "-m", "rlx", "trainer.steps=1", *argv], capture_output=True, text=True,
                          timeout=60, env=e, cwd=tmp_path)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # The process's own CPU seconds (user + system), not the wall clock: these exits import torch (~3 s), and under
    # ``pytest -n 2`` a torchrun test beside them can stretch that wall time by half without the CLI doing more work.
    return proc, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _cuda():
    import torch

    return torch.cuda.is_available()


CASES = [
    (["data=jsonl"], EXIT_CONFIG, "data.path"),
    (["data=jsonl", "data.path=missing.jsonl"], EXIT_CONFIG, "data.path=missing.jsonl"),
    (["data=jsonl", "data.path=/no/such/train.jsonl"], EXIT_CONFIG, "data.path"),
    (["data=preference", "algo=dpo"], EXIT_CONFIG, "data.path"),
    (["reward=python"], EXIT_CONFIG, "reward.fn"),
    (["reward=python", "reward.fn=no_such_module_xyz:score"], EXIT_CONFIG, "no_such_module_xyz"),
    (["reward=python", "reward.fn=rlx.rewards.python:import_functoin"], EXIT_CONFIG, "import_function"),
    (["reward=python", "reward.fn=missing_file.py:score"], EXIT_CONFIG, "missing_file.py"),
    (["reward=rm"], EXIT_CONFIG, "reward.path"),
    (["reward=rm", "reward.path=/no/such/rm"], EXIT_CONFIG, "reward.path"),
    (["model.path=/no/such/model"], EXIT_MODEL, "model.path"),
    (["model=qwen7b"], EXIT_MODEL, "huggingface-cli download Qwen/Qwen2.5-7B-Instruct"),
    (["model=qwen0_5b"], EXIT_MODEL, "Qwen/Qwen2.5-0.5B-Instruct"),
    (["model=llama3_8b", "model.lora.rank=0", "model.dtype=float32"], EXIT_MACHINE, "model too big"),
]


@pytest.mark.parametrize("argv, code, needle", CASES, ids=[" ".join(a) for a, _, _ in CASES])
def test_preflight_exit(tmp_path, argv, code, needle):
    proc, dt = _cli(tmp_path, *argv)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("rlx: ") and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and dt < 5, (dt, proc.stderr)
    assert not (tmp_path / "outputs").exists(), "a run dir was created"


def test_hub_error_names_model_path(tmp_path):
    proc, _ = _cli(tmp_path, "model=qwen7b")
    assert "model.path" in proc.stderr and "HF_HUB_OFFLINE" in proc.stderr


@pytest.mark.parametrize("argv", [["hardware=gpu"], ["hardware=ddp", "hardware.backend=nccl"]])
def test_device_not_in_torch_build(tmp_path, argv):
    if _cuda():
        pytest.skip("a CUDA device is present")
    proc, dt = _cli(tmp_path, *argv)
    assert proc.returncode == EXIT_MACHINE, proc.stderr
    assert proc.stderr.startswith("rlx: hardware=") and "CUDA" in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert "Traceback" not in proc.stderr and dt < 5
    assert not (tmp_path / "outputs").exists()


def test_rlx_debug_shows_the_traceback(tmp_path):
    proc, _ = _cli(tmp_path, "data=jsonl", RLX_DEBUG="1")
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "PreflightError" in proc.stderr


def test_good_user_reward_passes_preflight(tmp_path):
    from rlx import compose
    from rlx.config.preflight import check_rewards

    f = tmp_path / "my_reward.py"
    f.write_text("def score(prompts, completions, **fields):\n    return [0.0] * len(completions)\n")
    check_rewards(compose(["reward=python", f"reward.fn={f}:score"]))


def test_runner_checks_before_the_run_dir(tmp_path):
    import rlx
    from rlx.config.preflight import PreflightError

    cfg = rlx.compose(["data=jsonl", "trainer.steps=1"])
    with pytest.raises(PreflightError) as err:
        rlx.run(cfg, run_dir=tmp_path / "run")
    assert err.value.code == EXIT_CONFIG and not (tmp_path / "run").exists()


def test_preflight_memory_plan_counts_the_architecture():
    import rlx
    from rlx.models.memory import arch_params, param_count

    cfg = rlx.compose(["model=qwen0_5b"])
    counted, _ = param_count(cfg.model)
    assert abs(arch_params(cfg.model.arch, cfg.model.arch.vocab_size) / counted - 1) < 1e-3  # biases/norms aside
