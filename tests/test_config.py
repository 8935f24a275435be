"""Every conf/ file composes; malformed invocations exit with status 2 before any model loads."""

import subprocess
import sys
import time

import pytest

import rlx
from rlx.config import CONF_DIR, GROUPS, ConfigError, group_choices


@pytest.mark.parametrize("group", [g for g in GROUPS if (CONF_DIR / g).exists()])
@pytest.mark.slow
def test_every_conf_file_composes(group):
    for choice in group_choices(group):
        # a token-level reward term (reward=prm) is refused by the default GRPO: compose it with PPO
        cfg = rlx.compose([f"{group}={choice}"] + (["algo=ppo"] if (group, choice) == ("reward", "prm") else []))
        if group != "experiment":
            assert cfg[group].name == choice, f"conf/{group}/{choice}.yaml: name must equal the file stem"


def test_every_key_has_a_comment():
    # DESIGN.md: every key has a one-line comment above it (its meaning and the source of its value).
    for path in CONF_DIR.rglob("*.yaml"):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            s = line.strip()
            # leaf keys only: section headers ("terms:") and list items are exempt
            if not s or s.startswith(("#", "-")) or ":" not in s or s.endswith(":") or s.startswith("name:"):
                continue
            j = i - 1
            while j >= 0 and lines[j].strip() == "":
                j -= 1
            assert j >= 0 and lines[j].strip().startswith("#"), f"{path.name}:{i + 1} '{s}' has no comment above it"


@pytest.mark.parametrize("overrides, needle", [
    (["algo=grpoo"], "grpo"),
    (["algo.eps_hgih=0.3"], "eps_high"),
    (["trainer.stpes=3"], "steps"),
    (["model=tinyy"], "tiny"),
    (["algo.eps_high=0.1"], "eps_low"),
    (["algo.group_size=1"], "group_size"),
    (["trainer.lr=fast"], "trainer.lr"),
    (["+algo.foo=1"], "+"),
    (["trainer.mini_batch_size=100"], "mini_batch_size"),
    (["algo.loss_agg_mode=token_meen"], "token_mean"),
])
@pytest.mark.slow
def test_bad_config_raises(overrides, needle):
    with pytest.raises(ConfigError) as e:
        rlx.compose(overrides)
    assert needle in str(e.value).splitlines()[0]


@pytest.mark.parametrize("arg, needle", [("algo=grpoo", "grpo"), ("algo.eps_hgih=0.3", "eps_high")])
@pytest.mark.slow
def test_cli_exits_2_fast(arg, needle):
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "rlx", arg], capture_output=True, text=True, timeout=30)
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 2, proc.stderr
    first = proc.stderr.strip().splitlines()[0]
    assert needle in first, first
    assert elapsed < 5.0, f"took {elapsed:.1f}s"
    assert "building the embedded model" not in proc.stderr


def test_multirun_checks_every_value():
    proc = subprocess.run([sys.executable, "-m", "rlx", "-m", "algo=grpo,grpoo", "seed=0,1"], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 2 and "grpoo" in proc.stderr


def test_public_api(cfg):
    fn = rlx.build("reward", cfg.reward)
    assert fn(["1+1="], ["2"], answer=["2"]) == [1.1]   # correct (1.0) + 0.1 · format (1.0)
    assert fn(["1+1="], ["x"], answer=["2"]) == [0.0]
    assert rlx.build("algo", cfg.algo).group_size == 8


SECOND_WAVE = ["clip_cov", "kl_cov", "gpg", "sapo", "ppo_penalty", "gvpo", "grpo_lambda", "cppo", "ghpo", "eepo"]


def _own_keys(preset: str) -> list[str]:
    """The keys of conf/algo/<preset>.yaml that the grpo preset does not have (the preset's own knobs)."""
    own = set(rlx.compose([f"algo={preset}"]).algo) - set(rlx.compose(["algo=grpo"]).algo)
    return sorted(k for k in own if len(k) > 3)


@pytest.mark.parametrize("preset", SECOND_WAVE)
def test_misspelt_key_of_each_new_preset_names_the_closest(preset):
    keys = _own_keys(preset)
    assert keys, f"{preset}: no key of its own"
    for key in keys:
        with pytest.raises(ConfigError) as e:
            rlx.compose([f"algo={preset}", f"algo.{key[:-1]}=1"])
        first = str(e.value).splitlines()[0]
        assert f"did you mean 'algo.{key}'" in first, first


def test_misspelt_key_of_each_new_preset_exits_2_from_the_cli():
    procs = {p: subprocess.Popen([sys.executable, "-m", "rlx", f"algo={p}", f"algo.{_own_keys(p)[0][:-1]}=1"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for p in SECOND_WAVE}
    for p, proc in procs.items():
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 2, (p, err)
        assert f"did you mean 'algo.{_own_keys(p)[0]}'" in err.splitlines()[0], (p, err)
        assert "building the embedded model" not in err
