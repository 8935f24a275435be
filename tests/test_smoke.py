"""A 2-step run of every algorithm through ``python -m rlx``'s own ``main`` (the user's path, in processes forked
with the heavy modules imported: conftest.run_main), and what the run directory must hold."""

import json

import pytest
from conftest import FAST, read_metrics, run_cli, run_main

import rlx
from rlx.config import group_choices

ONLINE_VOCAB = ["reward/mean", "reward/std", "score/mean", "response_length/mean", "response_length/max",
                "response_length/min", "response_length/clip_ratio", "policy/entropy", "loss/total", "adv/mean",
                "adv/std", "adv/max", "adv/min", "optim/lr", "optim/grad_norm", "perf/step_s", "perf/gen_s",
                "perf/train_s", "perf/tokens_per_s", "perf/peak_mem_gb"]


def small_eval(data) -> list[str]:
    """Held-out sets of 64 problems (pairs, solutions) for a 2-step run: the presets' 500 made the two evaluations
    most of such a run (data=sums_steps: 7 of its 8 s)."""
    return [f"data.{k}=64" for k in ("eval_size", "pref_eval_size", "step_eval_size") if data.get(k, 0) > 64]


@pytest.mark.parametrize("algo", group_choices("algo"))
@pytest.mark.slow
def test_two_steps(algo, tmp_path):
    preset = rlx.compose([f"algo={algo}"])
    # ghpo's preset picks data=sums (48-token answers) and generates up to 4 rounds: shorter answers keep it quick
    short = ["rollout.max_new_tokens=8"] if algo == "ghpo" else []
    run_main([f"algo={algo}", "trainer.steps=2", "data.prompts_per_step=4", *FAST, *short, *small_eval(preset.data)],
             tmp_path / "run")
    tmp_path = tmp_path / "run"
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [0, 1, 2]
    # a reward model generates nothing: its held-out evaluation is pair accuracy (rlx/trainers/rm.py)
    trainer = rlx.build("algo", preset.algo).trainer
    if trainer == "rm":
        assert "rm/accuracy" in rows[0] and "rm/accuracy" in rows[-1]
    elif trainer == "prm":
        assert "eval/sums_prm/step_accuracy" in rows[0] and "eval/sums_prm/step_accuracy" in rows[-1]
    else:   # the preset's eval set: arithmetic, or the task a preset picks (ghpo: sums)
        held_out = [k for k in rows[0] if k.startswith("eval/") and k.endswith("/accuracy")]
        assert held_out and held_out[0] in rows[-1], rows[0]
    for key in ("loss/total", "optim/lr", "perf/step_s"):
        assert key in rows[1], key
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"] == 2
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert {"git_sha", "versions", "seed", "data_hash"} <= info.keys()
    assert (tmp_path / "config.yaml").exists() and (tmp_path / ".hydra" / "config.yaml").exists()


@pytest.mark.slow
def test_grpo_logs_the_vocabulary(tmp_path):
    run_cli(["algo=grpo", "trainer.steps=2", "data.prompts_per_step=4", *FAST], run_dir=tmp_path)
    row = read_metrics(tmp_path)[1]
    expected = ONLINE_VOCAB + ["policy/kl_ref", "policy/kl_old", "policy/clip_frac", "policy/clip_frac_low",
                               "policy/clip_frac_high", "policy/ratio_max", "policy/ratio_min", "loss/policy",
                               "loss/kl", "groups/frac_zero_std", "groups/kept_frac", "reward/correct/mean",
                               "health/skipped_steps"]
    missing = [k for k in expected if k not in row]
    assert not missing, missing
