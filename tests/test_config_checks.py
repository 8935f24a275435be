"""Config checks (issue 22.3): None, interpolations, non-finite floats, integer bounds, num_threads, score_term,
head divisibility, mini batch vs N, YAML errors and user presets in --config-dir. Each error is a ConfigError
whose first line names the key; a handful also through ``python -m rlx`` (exit 2, one line, < 5 s)."""

import os
import subprocess
import sys
import time

import pytest

from rlx.config import ConfigError
from rlx.config.compose import check_cli

ENV = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", WANDB_MODE="offline", HF_HUB_OFFLINE="1")

CASES = [
    (["trainer.lr=null"], "trainer.lr"),
    (["trainer.steps=null"], "trainer.steps"),
    (["trainer.steps={a:1}"], "trainer.steps"),
    (["trainer.steps=[1,2]"], "trainer.steps"),
    (["trainer.steps=abc"], "trainer.steps"),
    (["trainer.betas=[a,b]"], "trainer.betas"),
    (["trainer.betas=null"], "trainer.betas"),
    (["trainer.betas=[0.9,null]"], "trainer.betas"),
    (["trainer.steps=${oc.env:HOME}"], "trainer.steps"),
    (["trainer.lr=${trainer.schedule}"], "trainer.lr"),
    (["seed=null"], "seed"),
    (["seed=99999999999999999999"], "seed"),
    (["seed=-1"], "seed"),
    (["seed=4294967296"], "seed"),
    (["trainer.steps=99999999999999999999"], "trainer.steps"),
    (["hardware.num_threads=1.5"], "hardware.num_threads"),
    (["hardware.num_threads=true"], "hardware.num_threads"),
    (["hardware.num_threads=0"], "hardware.num_threads"),
    (["hardware.compile=yes"], "hardware.compile"),
    (["hardware.autocast=1"], "hardware.autocast"),
    (["reward.score_term=nope"], "reward.score_term"),
    (["reward=gsm8k", "reward.score_term=nope"], "reward.score_term"),
    (["model.arch.num_attention_heads=3"], "model.arch.num_attention_heads"),
    (["model=qwen7b", "model.arch.num_attention_heads=5", "model.arch.num_key_value_heads=1"],
     "model.arch.num_attention_heads"),
    (["model=qwen7b", "model.arch.num_attention_heads=27"], "model.arch.num_attention_heads"),
    (["rollout.temperature=inf"], "rollout.temperature"),
    (["rollout.temperature=nan"], "rollout.temperature"),
    (["trainer.lr=inf"], "trainer.lr"),
    (["trainer.lr=-inf"], "trainer.lr"),
    (["algo.beta=inf"], "algo.beta"),
    (["algo=dapo", "algo.eps_high=nan"], "algo.eps_high"),
    (["trainer.grad_clip=inf"], "trainer.grad_clip"),
    (["trainer.mini_batch_size=1024", "trainer.micro_batch_size=null"], "trainer.mini_batch_size"),
    (["data.prompts_per_step=2", "trainer.mini_batch_size=32", "trainer.micro_batch_size=null"],
     "trainer.mini_batch_size"),
    (["rollout.max_new_tokens=null"], "rollout.max_new_tokens"),
]


@pytest.mark.parametrize("argv, key", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_config_error_names_the_key(argv, key):
    with pytest.raises(ConfigError) as err:
        check_cli(["trainer.steps=1"] + argv)
    first = str(err.value).splitlines()[0]
    assert key in first, first


@pytest.mark.parametrize("argv", [[], ["trainer.mini_batch_size=64"], ["hardware.num_threads=2"], ["seed=4294967295"],
                                  ["trainer.micro_batch_size=null"], ["model=qwen7b"], ["algo=ppo", "algo.cliprange_value=null"]])
def test_valid_configs_pass(argv):
    check_cli(["trainer.steps=1"] + argv)


def _preset_dir(tmp_path, extra=""):
    src = (os.path.join(os.path.dirname(__file__), "..", "conf", "algo", "grpo.yaml"))
    (tmp_path / "algo").mkdir()
    text = open(src).read().replace("  eps_high: 0.2", "  eps_high: 0.25") + extra   # name: grpo, its implementation
    (tmp_path / "algo" / "mygrpo.yaml").write_text(text)
    return tmp_path


def test_user_preset_in_config_dir_is_accepted(tmp_path):
    cfgs = check_cli(["--config-dir", str(_preset_dir(tmp_path)), "algo=mygrpo", "trainer.steps=1"])
    assert cfgs[0].algo.name == "grpo" and cfgs[0].algo.eps_high == 0.25


def test_user_preset_yaml_error_names_file_and_line(tmp_path):
    d = _preset_dir(tmp_path, "  broken: [a, b\n  x: 1\n")
    n = len((d / "algo" / "mygrpo.yaml").read_text().splitlines())
    with pytest.raises(ConfigError) as err:
        check_cli(["--config-dir", str(d), "algo=mygrpo"])
    first = str(err.value).splitlines()[0]
    assert "mygrpo.yaml:" in first and "YAML" in first and f":{n}:" in first, first


def _cli(*argv, cwd=None):
    t = time.time()
    proc = subprocess.run([sys.executable, "-m", "rlx", "trainer.steps=1", *argv], capture_output=True, text=True,
                          timeout=60, env=ENV, cwd=cwd)
    return proc, time.time() - t


@pytest.mark.parametrize("argv, key", [(["trainer.lr=null"], "trainer.lr"), (["seed=99999999999999999999"], "seed"),
                                       (["trainer.steps=${oc.env:HOME}"], "trainer.steps"),
                                       (["hardware.num_threads=1.5"], "hardware.num_threads"),
                                       (["algo.beta=inf"], "algo.beta")])
def test_cli_exits_2_in_one_line(argv, key):
    proc, dt = _cli(*argv)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("rlx: config error: ") and key in proc.stderr.splitlines()[0], proc.stderr
    assert "Traceback" not in proc.stderr and dt < 5, (dt, proc.stderr)


def test_cli_yaml_error_in_config_dir(tmp_path):
    d = _preset_dir(tmp_path, "  broken: [a, b\n  x: 1\n")
    proc, dt = _cli("--config-dir", str(d), "algo=mygrpo", cwd=tmp_path)
    assert proc.returncode == 2 and "mygrpo.yaml:" in proc.stderr.splitlines()[0], proc.stderr
    assert "Traceback" not in proc.stderr and dt < 5
    assert not (tmp_path / "outputs").exists()
