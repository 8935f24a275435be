"""GRPO advantages and loss on examples a reader can check by hand."""

import math

import pytest
import torch

from rlx.algos.grpo import grpo_advantages, grpo_loss


def test_advantages_two_groups():
    # group 1: [1, 0, 0, 1]: mean 0.5, unbiased std sqrt(1/3) = 0.57735 -> ±0.8660
    # group 2: [0, 0, 0, 0]: no signal -> 0
    adv = grpo_advantages(torch.tensor([1.0, 0, 0, 1, 0, 0, 0, 0]), 4, std_eps=0.0)
    s = 0.5 / math.sqrt(1 / 3)
    assert adv.tolist() == pytest.approx([s, -s, -s, s, 0, 0, 0, 0], abs=1e-6)


def test_advantages_mean_only():
    # scale_rewards=false (Dr.GRPO): A = r − mean = [1, 0, 2] − 1
    assert grpo_advantages(torch.tensor([1.0, 0, 2]), 3, scale_rewards=False).tolist() == [0.0, -1.0, 1.0]


def _one_token(ratio, adv):
    logp = torch.log(torch.tensor([[ratio]]))
    return logp, torch.zeros(1, 1), torch.tensor([[adv]]), torch.ones(1, 1, dtype=torch.bool)


def test_ratio_one_gives_minus_mean_advantage():
    # ratio 1 everywhere: L = −mean_t A = −(2 + 2 + (−1)) / 3 = −1 under token_mean
    adv = torch.tensor([[2.0, 2.0], [-1.0, 0.0]])
    mask = torch.tensor([[True, True], [True, False]])
    loss, m = grpo_loss(torch.zeros(2, 2), torch.zeros(2, 2), adv, mask)
    assert loss.item() == pytest.approx(-1.0)
    assert m["policy/clip_frac"].item() == 0.0 and m["policy/ratio_max"].item() == 1.0


def test_clipping_hand_computed():
    # ratio 1.5, A = +1, eps 0.2: min(1.5·1, 1.2·1) = 1.2 -> loss −1.2, clipped (high)
    loss, m = grpo_loss(*_one_token(1.5, 1.0))
    assert loss.item() == pytest.approx(-1.2)
    assert m["policy/clip_frac_high"].item() == 1.0 and m["policy/clip_frac_low"].item() == 0.0
    # ratio 0.5, A = −1: min(0.5·(−1), 0.8·(−1)) = −0.8 -> loss 0.8, clipped (low)
    loss, m = grpo_loss(*_one_token(0.5, -1.0))
    assert loss.item() == pytest.approx(0.8)
    assert m["policy/clip_frac_low"].item() == 1.0
    # ratio 0.5, A = +1: not clipped (the unclipped branch is smaller): loss −0.5, gradient flows
    logp, old, adv, mask = _one_token(0.5, 1.0)
    logp.requires_grad_(True)
    loss, m = grpo_loss(logp, old, adv, mask)
    loss.backward()
    assert loss.item() == pytest.approx(-0.5) and m["policy/clip_frac"].item() == 0.0
    assert logp.grad.item() == pytest.approx(-0.5)  # d(−ρA)/dlogp = −ρA


def test_clipped_token_has_no_gradient():
    logp, old, adv, mask = _one_token(1.5, 1.0)
    logp.requires_grad_(True)
    grpo_loss(logp, old, adv, mask)[0].backward()
    assert logp.grad.item() == 0.0


def test_kl_term_added_with_beta():
    # one token: logp = log 0.5, ref = log 0.25 -> k3 = 0.5 − 1 + log 2 = 0.19315; beta 0.1 -> +0.019315
    logp = torch.tensor([[math.log(0.5)]])
    ref = torch.tensor([[math.log(0.25)]])
    adv, mask = torch.tensor([[1.0]]), torch.ones(1, 1, dtype=torch.bool)
    loss, m = grpo_loss(logp, logp, adv, mask, ref, beta=0.1)
    k3 = 0.5 - 1 + math.log(2)
    assert loss.item() == pytest.approx(-1.0 + 0.1 * k3)
    assert m["policy/kl_ref"].item() == pytest.approx(k3)
    assert m["loss/kl"].item() == pytest.approx(0.1 * k3)
