"""GRPO-λ (rlx/algos/grpo_lambda.py): the shaped rewards of four groups with λ = 0.5 by hand, Kimi's length
reward, the top-λ choice (ties, groups with no correct sample), λ = 0 as GRPO, and the preset."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import algo_batch
from omegaconf import OmegaConf

import rlx
from rlx.algos.grpo_lambda import GRPOLambda, kimi_length_reward, top_lambda_groups
from rlx.config import ConfigError


def grpo_lambda(*overrides, **keys):
    """The preset's algorithm (command-line ``overrides``), with ``keys`` set on the built node (group sizes the
    default batch units would refuse)."""
    return rlx.build("algo", OmegaConf.merge(rlx.compose(["algo=grpo_lambda", *overrides]).algo, keys))


def lengths_mask(lengths, T=6):
    return torch.arange(T).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)


def test_shaped_rewards_of_four_groups_with_lambda_half():
    # G = 3, 0/1 rewards, lengths in tokens:
    #   group 0: r [1, 1, 0], |y| [3, 5, 5]  c = 2/3
    #   group 1: r [0, 0, 0], |y| [1, 2, 3]  c = 0
    #   group 2: r [1, 1, 1], |y| [2, 4, 6]  c = 1
    #   group 3: r [1, 0, 0], |y| [4, 4, 4]  c = 1/3
    # ranked by c: 2, 0, 3, 1; top ⌊0.5·4⌋ = 2 → groups 2 and 0 get the length reward, 1 and 3 keep r.
    # group 2: λ = 0.5 − (|y| − 2)/(6 − 2) = [0.5, 0, −0.5], all correct → ℓ = λ → r' = [1.5, 1.0, 0.5]
    # group 0: λ = 0.5 − (|y| − 3)/(5 − 3) = [0.5, −0.5, −0.5]; correct, correct, wrong → ℓ = [0.5, −0.5, min(0, −0.5)]
    #          → r' = [1.5, 0.5, −0.5]
    a = grpo_lambda(group_size=3)
    rewards = torch.tensor([1.0, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0])
    mask = lengths_mask([3, 5, 5, 1, 2, 3, 2, 4, 6, 4, 4, 4])
    shaped, m = a.shape_rewards(rewards, mask, 6)
    assert shaped.tolist() == [1.5, 0.5, -0.5, 0, 0, 0, 1.5, 1.0, 0.5, 1, 0, 0]
    # half the groups shaped; mean ℓ over their six samples = (0.5 − 0.5 − 0.5 + 0.5 + 0 − 0.5) / 6 = −1/12
    assert m == {"grpo_lambda/efficiency_frac": 0.5, "grpo_lambda/length_reward": pytest.approx(-1 / 12)}
    # the advantage is GRPO's on the shaped rewards: group 2 [1.5, 1, 0.5] → mean 1, deviations [0.5, 0, −0.5],
    # unbiased std 0.5 → A = [0.5, 0, −0.5] / (0.5 + eps) ≈ [1, 0, −1]
    adv, _ = a.advantages(algo_batch(shaped, mask))
    torch.testing.assert_close(adv[6:9, 0], torch.tensor([0.5, 0.0, -0.5]) / (0.5 + 1e-4))


def test_kimi_length_reward():
    correct = torch.tensor([[True, True, True], [True, True, False], [True, False, False]])
    lengths = torch.tensor([[2, 4, 6], [3, 5, 5], [4, 4, 4]])
    # rows 0 and 1 as in the four-group example; equal lengths (row 2): no length signal, ℓ = 0
    assert kimi_length_reward(lengths, correct).tolist() == [[0.5, 0.0, -0.5], [0.5, -0.5, -0.5], [0, 0, 0]]
    # a wrong answer is never rewarded for being short: |y| [1, 3], both wrong → λ = [0.5, −0.5] → [0, −0.5]
    assert kimi_length_reward(torch.tensor([[1, 3]]), torch.tensor([[False, False]])).tolist() == [[0.0, -0.5]]
    # an invalid sample (failed reward) is out of the group's min/max: |y| [2, 9, 4] with 9 invalid → [0.5, 0, −0.5]
    valid = torch.tensor([[True, False, True]])
    assert kimi_length_reward(torch.tensor([[2, 9, 4]]), torch.tensor([[True, True, True]]), valid).tolist() == \
        [[0.5, 0.0, -0.5]]


def test_top_lambda_choice_ties_and_groups_without_a_correct_sample():
    # ties go to the earlier group: ratios [0.5, 1, 1, 0.5], λ = 0.5 → the two 1s (groups 1, 2); λ = 0.75 → ⌊3⌋:
    # 1, 2 and the first 0.5 (group 0)
    acc = torch.tensor([0.5, 1.0, 1.0, 0.5])
    assert top_lambda_groups(acc, 0.5).tolist() == [False, True, True, False]
    assert top_lambda_groups(acc, 0.75).tolist() == [True, True, True, False]
    # ⌊0.75·4⌋ = 3 but only two groups have a correct sample: the third place stays empty
    assert top_lambda_groups(torch.tensor([1.0, 0.0, 0.25, 0.0]), 0.75).tolist() == [True, False, True, False]
    assert not top_lambda_groups(acc, 0.0).any() and top_lambda_groups(acc, 1.0).all()


def test_a_failed_sample_keeps_its_nan_and_counts_for_nothing():
    # G = 2, one group [1, NaN] with |y| [2, 6]: accuracy 1/1, the valid sample alone spans no length → ℓ = 0
    a = grpo_lambda(group_size=2, lambda_frac=1.0)
    shaped, m = a.shape_rewards(torch.tensor([1.0, math.nan]), lengths_mask([2, 6]), 6)
    assert shaped[0].item() == 1.0 and math.isnan(shaped[1].item()) and m["grpo_lambda/efficiency_frac"] == 1.0


def test_lambda_zero_is_grpo():
    rewards, mask = torch.tensor([1.0, 0, 0, 1, 1.1, 0.1, 0.1, 0.1]), lengths_mask([1, 2, 3, 4, 2, 2, 3, 1])
    a = grpo_lambda(group_size=4, lambda_frac=0.0)
    shaped, m = a.shape_rewards(rewards, mask, 6)
    assert torch.equal(shaped, rewards) and m["grpo_lambda/efficiency_frac"] == 0.0
    grpo = rlx.build("algo", OmegaConf.merge(rlx.compose(["algo=grpo"]).algo, {"group_size": 4}))
    assert torch.equal(a.advantages(algo_batch(shaped, mask))[0], grpo.advantages(algo_batch(rewards, mask))[0])


def test_preset_composes_and_builds():
    a = grpo_lambda()
    assert isinstance(a, GRPOLambda) and (a.lambda_frac, a.length_coef, a.correct_reward) == (0.5, 1.0, 1.0)
    assert a.group_size == 8 and a.scale_rewards and "ref_logp" in a.requires   # β = 0.04 as the grpo preset


def test_unknown_key_names_the_closest():
    with pytest.raises(ConfigError) as e:
        rlx.compose(["algo=grpo_lambda", "algo.lambda_fac=0.2"])
    first = str(e.value).splitlines()[0]
    assert "'algo.lambda_fac'" in first and "did you mean 'algo.lambda_frac'" in first, first


@pytest.mark.parametrize("key, value", [("lambda_frac", 1.5), ("lambda_frac", -0.1), ("length_coef", -1.0)])
def test_bad_values_name_the_key(key, value):
    with pytest.raises(ConfigError, match=f"algo.{key}={value}"):
        grpo_lambda(f"algo.{key}={value}")
