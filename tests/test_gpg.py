"""GPG (rlx/algos/gpg.py): the correction α = B/(B − M) and the advantages by hand (with a failed sample), the
loss −Â·log π and its gradient by hand, the algorithm's advantages and metrics, and the preset's keys."""

import math

import pytest
import torch
from conftest import algo_batch, loss_inputs

import rlx
from rlx.algos.gpg import gpg_advantages, gpg_alpha, gpg_loss
from rlx.algos.grpo import grpo_advantages
from rlx.config import ConfigError


def algo(*overrides):
    return rlx.build("algo", rlx.compose(["algo=gpg", *overrides]).algo)


# three groups of G = 4: one with a spread, one all right, one all wrong
REWARDS = torch.tensor([1.0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0])


def test_alpha_and_advantages_by_hand():
    mask = torch.ones(12, 3, dtype=torch.bool)
    # B = 12 samples, M = 8 of them in the all-equal groups 2 and 3 -> α = 12 / (12 − 8) = 3
    # (verl's α = B / count_nonzero(r) would be 12 / 5 = 2.4: it counts the reward-1 samples, the all-right group too)
    assert gpg_alpha(REWARDS, 4) == (3.0, 12, 8)
    # group 1: mean 0.25 -> r − mean = [0.75, −0.25, −0.25, −0.25], times α = 3 -> [2.25, −0.75, −0.75, −0.75];
    # groups 2 and 3: 0
    adv, alpha, B, M = gpg_advantages(REWARDS, mask, 4)
    assert adv.tolist() == pytest.approx([2.25, -0.75, -0.75, -0.75] + [0.0] * 8)
    assert (alpha, B, M) == (3.0, 12, 8)
    # alpha_correction off: α = 1, the plain group-centred reward (F_norm = 1: no division by the std)
    adv, alpha, _, _ = gpg_advantages(REWARDS, mask, 4, alpha_correction=False)
    assert alpha == 1.0 and adv[:4].tolist() == pytest.approx([0.75, -0.25, -0.25, -0.25])
    # F_norm = std (scale=True): GRPO's advantage times α
    adv, _, _, _ = gpg_advantages(REWARDS, mask, 4, scale=True)
    assert torch.allclose(adv, 3.0 * grpo_advantages(REWARDS, 4))


def test_a_failed_sample_counts_in_neither_b_nor_m():
    # the last sample's reward failed (no valid token): group 3 keeps 3 scored samples, all 0 -> M = 4 + 3 = 7, B = 11
    # -> α = 11 / (11 − 7) = 2.75; group 1 as before: [0.75, −0.25, −0.25, −0.25]·2.75
    mask = torch.ones(12, 3, dtype=torch.bool)
    mask[11] = False
    adv, alpha, B, M = gpg_advantages(REWARDS, mask, 4)
    assert (alpha, B, M) == (2.75, 11, 7)
    assert adv.tolist() == pytest.approx([2.0625, -0.6875, -0.6875, -0.6875] + [0.0] * 8)
    # a group left with one scored sample has no spread either: with 3 of group 1 failed too, B = 1 + 4 + 3 = 8 and
    # all 8 are in groups without spread (M = 8): every Â is 0 and α falls back to 1
    mask[1:4] = False
    assert gpg_alpha(REWARDS, 4, mask.any(-1)) == (1.0, 8, 8)


def test_loss_and_gradient_by_hand():
    # token log-probs ln 0.5, ln 0.25 (sample 1, Â = 2) and ln 0.8 (sample 2, Â = −1; its second token is padding)
    logp = torch.log(torch.tensor([[0.5, 0.25], [0.8, 1.0]])).requires_grad_(True)
    adv = torch.tensor([[2.0, 2.0], [-1.0, -1.0]])
    mask = torch.tensor([[True, True], [True, False]])
    old = torch.full((2, 2), -3.0)   # far from logp: GPG has no ratio, the loss does not depend on it
    loss, m = gpg_loss(logp, old, adv, mask)
    # −Â·log π per token: −2·ln 0.5 = 1.386294, −2·ln 0.25 = 2.772589, +ln 0.8 = −0.223144; token_mean over 3 tokens
    assert loss.item() == pytest.approx((1.386294 + 2.772589 - 0.223144) / 3, abs=1e-6)   # 1.311913
    assert gpg_loss(logp, torch.zeros(2, 2), adv, mask)[0].item() == pytest.approx(loss.item())
    loss.backward()
    # d/dlogp = −Â / 3 at valid tokens, 0 at padding
    assert logp.grad.flatten().tolist() == pytest.approx([-2 / 3, -2 / 3, 1 / 3, 0.0])
    # old_logp is only measured: the largest valid ratio is 0.8 / e^−3 = 16.07 (the padding's 1.0 is left out)
    assert m["policy/ratio_max"].item() == pytest.approx(0.8 * math.exp(3), rel=1e-5)


def test_algorithm_advantages_metrics_and_loss():
    a = algo("algo.group_size=4")
    mask = torch.ones(12, 3, dtype=torch.bool)
    adv, m = a.advantages(algo_batch(REWARDS, mask))
    assert adv.shape == (12, 3) and adv.dtype == torch.float32
    assert adv[0].tolist() == pytest.approx([2.25] * 3) and adv[4:].abs().max() == 0
    assert m == {"gpg/alpha": 3.0, "gpg/zero_adv_frac": pytest.approx(8 / 12)}
    # the loss on one token: logp = ln 0.5, Â = 2.25 -> −2.25·ln 0.5 = 1.559581
    mb = loss_inputs(torch.zeros(1, 1), torch.full((1, 1), 2.25), torch.ones(1, 1, dtype=torch.bool))
    assert a.loss(torch.log(torch.full((1, 1), 0.5)), mb)[0].item() == pytest.approx(-2.25 * math.log(0.5))
    off = algo("algo.group_size=4", "algo.alpha_correction=false")
    assert off.advantages(algo_batch(REWARDS, mask))[0][0, 0].item() == pytest.approx(0.75)


def test_preset_builds_and_checks_its_keys():
    a = algo()
    assert (a.group_size, a.scale_rewards, a.alpha_correction, a.loss_agg_mode, a.beta) == \
        (8, False, True, "token_mean", 0.0)
    assert a.requires == frozenset()   # no reference model, no critic
    with pytest.raises(ConfigError, match="did you mean 'algo.alpha_correction'"):
        rlx.compose(["algo=gpg", "algo.alpha_corection=false"])
