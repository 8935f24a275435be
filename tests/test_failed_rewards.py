"""A sample whose reward failed (all-False response mask; the loop fills its reward with its group's mean as a
placeholder) must not move the other samples' advantages, in every group algorithm, and must not count as a
sequence in the sequence-mean aggregations."""

from __future__ import annotations

import pytest
import torch
from conftest import algo_batch
from omegaconf import OmegaConf

import rlx
from rlx.ops import aggregate
from rlx.trainers import minibatch

EPS = 1e-4
GROUP = ["grpo", "dapo", "cispo", "dr_grpo", "gmpo", "gspo", "gspo_token", "ttrl"]


def algo(name: str, group_size: int):
    return rlx.build("algo", rlx.compose([f"algo={name}", f"algo.group_size={group_size}"]).algo)


@pytest.mark.parametrize("name", GROUP)
def test_a_failed_sample_does_not_move_its_group(name):
    # One group of G = 4: rewards [1, ?, 0, 2], the second failed. Its placeholder is the mean of the others,
    # (1 + 0 + 2) / 3 = 1. The scored three alone: mean 1, unbiased std sqrt(((0)² + (−1)² + 1²) / 2) = 1,
    # so A = [0, −1, +1] / (1 + eps) (Dr. GRPO: no std, [0, −1, +1]), and the failed one gets 0.
    # Before the fix the placeholder stayed in the std: sqrt(2/3) = 0.816, so A = ±1.22 (22% too large).
    a = algo(name, 4)
    rewards = torch.tensor([1.0, 1.0, 0.0, 2.0])
    mask = torch.tensor([[True, True], [False, False], [True, False], [True, True]])
    adv = a.advantages(algo_batch(rewards, mask))[0][:, 0]
    scale = 1.0 if name == "dr_grpo" else 1.0 / (1.0 + EPS)
    torch.testing.assert_close(adv, torch.tensor([0.0, 0.0, -scale, scale]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", GROUP)
def test_with_every_sample_scored_the_advantage_is_the_group_normalised_reward(name):
    # rewards [1, 0, 2, 1]: mean 1, unbiased std sqrt(2/3) = 0.8165 → A = [0, −1.2247, 1.2247, 0] (scaled)
    a = algo(name, 4)
    adv = a.advantages(algo_batch(torch.tensor([1.0, 0.0, 2.0, 1.0]), torch.ones(4, 3, dtype=torch.bool)))[0][:, 0]
    s = 1.0 if name == "dr_grpo" else 1.0 / ((2 / 3) ** 0.5 + EPS)
    torch.testing.assert_close(adv, torch.tensor([0.0, -s, s, 0.0]), rtol=0, atol=1e-5)


def test_empty_rows_do_not_count_as_sequences():
    # 3 rows, the middle one failed (no valid token). seq_mean_token_mean over the valid rows:
    # row 0 mean (1 + 3)/2 = 2, row 2 mean 4 → (2 + 4) / 2 = 3 — not (2 + 0 + 4) / 3 = 2.
    cfg = OmegaConf.create({"trainer": {"mini_batch_size": None, "micro_batch_size": None, "update_epochs": 1},
                            "rollout": {"max_new_tokens": 2}})
    mask = torch.tensor([[True, True], [False, False], [True, False]])
    loss = torch.tensor([[1.0, 3.0], [9.0, 9.0], [4.0, 7.0]])
    [(rows, norm)] = list(minibatch.minibatches(cfg, mask))
    assert norm["num_seqs"] == 2 and int(norm["num_tokens"]) == 3
    assert float(aggregate(loss[rows], mask[rows], "seq_mean_token_mean", num_seqs=norm["num_seqs"])) == 3.0
    # seq_mean_token_sum: (1 + 3 + 4) / 2 = 4, not 8 / 3
    assert float(aggregate(loss[rows], mask[rows], "seq_mean_token_sum", num_seqs=norm["num_seqs"])) == 4.0


@pytest.mark.slow
def test_eval_leaves_unscorable_samples_out_of_accuracy_and_counts_them(tmp_path):
    # The reward scores 1 for answers that are right, and NaN for every prompt whose first operand is odd (about
    # half): accuracy is over the scorable samples only, and the others are eval/<ds>/failures.
    import json

    reward = tmp_path / "flaky.py"
    reward.write_text(
        "import math\n"
        "def score(prompts, completions, answer, **_):\n"
        "    return [math.nan if int(p.split('+')[0].split('-')[0].strip() or 0) % 2 else float(c.strip() == a)\n"
        "            for p, c, a in zip(prompts, completions, answer)]\n")
    cfg = rlx.compose(["reward=python", f"reward.fn={reward}:score", "trainer.steps=1", "trainer.progress=false",
                       "data.eval_size=40", "data.prompts_per_step=2", "hardware.num_threads=1"])
    rlx.run(cfg, run_dir=tmp_path / "run")
    first = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    prompts = [r["prompt"] for r in rlx.build("data", cfg.data).eval_set()]
    odd = sum(int(p.split("+")[0].split("-")[0].strip() or 0) % 2 for p in prompts)
    assert 0 < odd < len(prompts)
    assert first["eval/arithmetic/failures"] == float(odd)
    # accuracy = right / scorable: times the scorable count it is a whole number of right answers (it was right / 40)
    right = first["eval/arithmetic/accuracy"] * (len(prompts) - odd)
    assert right >= 1 and abs(right - round(right)) < 1e-9
