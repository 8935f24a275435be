"""Clip-Cov and KL-Cov (Cui et al. 2025, arXiv:2505.22617 §4) on examples a reader can check by hand: the
covariance, which tokens each selects, the zero gradient of Clip-Cov's detached tokens (a real backward), the
value and gradient of KL-Cov's penalty, and the presets."""

import math

import pytest
import torch
from conftest import loss_inputs

import rlx
from rlx.algos.clip_cov import clip_cov_loss, clip_cov_select, token_covariance
from rlx.algos.grpo import grpo_loss
from rlx.algos.kl_cov import kl_cov_loss, kl_cov_select
from rlx.config import ConfigError

# One row of 5 valid tokens and a padding column (garbage values that must never count).
# log π = [−2, −1, −4, −5, −3]: mean −3, deviations d = [1, 2, −1, −2, 0]
# A     = [2.5, 5, 3, 1, −1.5]: mean 2,  deviations e = [0.5, 3, 1, −1, −3.5]
# Cov = d·e = [0.5, 6, −1, 2, 0]
LOGP = torch.tensor([[-2.0, -1.0, -4.0, -5.0, -3.0, -100.0]])
ADV = torch.tensor([[2.5, 5.0, 3.0, 1.0, -1.5, 100.0]])
MASK = torch.tensor([[True, True, True, True, True, False]])


def _grad(fn, logp, *args, **kw):
    logp = logp.detach().clone().requires_grad_(True)
    loss, m = fn(logp, *args, **kw)
    loss.backward()
    return loss.detach(), logp.grad, m


def test_token_covariance_by_hand():
    assert token_covariance(LOGP, ADV, MASK)[0].tolist() == pytest.approx([0.5, 6.0, -1.0, 2.0, 0.0, 0.0])


def test_clip_cov_candidates_are_the_band_outside_the_ppo_clip():
    # ω = (1, 5): only token 3 (Cov 2) is a candidate; token 1 (Cov 6) is above the band, token 0 (0.5) below.
    # k = max(⌊2e-4·5⌋, 1) = 1, so token 3 is drawn whatever the generator says
    sel, cand = clip_cov_select(LOGP, ADV, MASK, clip_cov_ratio=2e-4, clip_cov_lb=1.0, clip_cov_ub=5.0)
    assert cand[0].tolist() == [False, False, False, True, False, False]
    assert sel[0].tolist() == [False, False, False, True, False, False]
    # token 3 already clipped by PPO (ratio 1.5 > 1 + 0.2 with A = 1 > 0): no candidate left, nothing detached
    old = LOGP.clone()
    old[0, 3] -= math.log(1.5)
    m = clip_cov_loss(LOGP, old, ADV, MASK, clip_cov_ratio=2e-4, eps_low=0.2, eps_high=0.2)[1]
    assert m["clip_cov/clip_frac"].item() == 0.0 and m["clip_cov/candidate_frac"].item() == 0.0
    # with the preset's ε = 1 the ratio 1.5 is inside the clip range: token 3 is detached, 1 of 5 valid tokens
    m = clip_cov_loss(LOGP, old, ADV, MASK, clip_cov_ratio=2e-4, eps_low=1.0, eps_high=1.0)[1]
    assert m["clip_cov/clip_frac"].item() == pytest.approx(0.2)


def test_clip_cov_detached_tokens_get_no_gradient():
    # log π = [[−0.5, −2.5], [−1.5, −1.5]]: mean −1.5, d = [1, −1, 0, 0]
    # A     = [[3, −2], [1, 1]]:            mean 0.75, e = [2.25, −2.75, 0.25, 0.25]
    # Cov = [2.25, 2.75, 0, 0]: tokens 0 and 1 in (1, 5); r = 0.5 -> k = ⌊0.5·4⌋ = 2 = both of them.
    # On-policy (ratio 1), token_mean: L = −Σ_kept A / 4 = −(1 + 1)/4 = −0.5 (GRPO: −(3 − 2 + 1 + 1)/4 = −0.75);
    # dL/dlog π_t = −A_t/4 on kept tokens: [0, 0, −0.25, −0.25] (GRPO: [−0.75, 0.5, −0.25, −0.25])
    logp = torch.tensor([[-0.5, -2.5], [-1.5, -1.5]])
    adv, mask = torch.tensor([[3.0, -2.0], [1.0, 1.0]]), torch.ones(2, 2, dtype=torch.bool)
    loss, grad, m = _grad(clip_cov_loss, logp, logp, adv, mask, clip_cov_ratio=0.5)
    assert loss.item() == pytest.approx(-0.5)
    assert grad.flatten().tolist() == pytest.approx([0.0, 0.0, -0.25, -0.25])
    assert m["clip_cov/clip_frac"].item() == 0.5 and m["clip_cov/cov"].item() == pytest.approx((2.25 + 2.75) / 4)
    loss, grad, _ = _grad(grpo_loss, logp, logp, adv, mask)
    assert loss.item() == pytest.approx(-0.75) and grad.flatten().tolist() == pytest.approx([-0.75, 0.5, -0.25, -0.25])


def test_clip_cov_draws_with_the_global_generator():
    # 10 valid tokens, log π deviations ±1 and A deviations ±2 of the same sign: Cov = 2 for every token, all
    # candidates; r = 0.3 -> k = 3. The draw is the first 3 of torch.randperm(10) on the global generator.
    logp = torch.tensor([[-1.0, -3.0] * 5])
    adv = torch.tensor([[2.0, -2.0] * 5])
    mask = torch.ones(1, 10, dtype=torch.bool)
    draws = []
    for seed in range(5):
        torch.manual_seed(seed)
        sel = clip_cov_select(logp, adv, mask, clip_cov_ratio=0.3, clip_cov_lb=1.0, clip_cov_ub=5.0)[0]
        torch.manual_seed(seed)
        expected = sorted(torch.randperm(10)[:3].tolist())
        assert sel[0].nonzero().flatten().tolist() == expected
        draws.append(tuple(expected))
    assert len(set(draws)) > 1


def test_kl_cov_penalty_on_the_top_covariance_token():
    # log π = [[−1, −2], [−1.5, −1.5]]: mean −1.5, d = [0.5, −0.5, 0, 0]
    # A     = [[2, −1], [0.5, −1.5]]:   mean 0,    e = A        ->  Cov = [1, 0.5, 0, 0]
    # κ = 0.25 -> k = ⌊0.25·4⌋ = 1: token 0. log π_old = [[−0.8, −2], [−1.5, −1.5]] -> Δ = log π − log π_old = [−0.2, 0, 0, 0]
    # per token (β_KL = 1, no clip): t0 −2·e^−0.2 + |−0.2|, t1 +1, t2 −0.5, t3 +1.5
    #   L = (2.2 − 2·e^−0.2)/4 = (2.2 − 1.6374615)/4 = 0.1406346
    # dL/dlog π_0 = (−2·e^−0.2 + sign(Δ_0))/4 = (−1.6374615 − 1)/4 = −0.6593654; others −A·1/4: [0.25, −0.125, 0.375]
    logp = torch.tensor([[-1.0, -2.0], [-1.5, -1.5]])
    old = torch.tensor([[-0.8, -2.0], [-1.5, -1.5]])
    adv, mask = torch.tensor([[2.0, -1.0], [0.5, -1.5]]), torch.ones(2, 2, dtype=torch.bool)
    assert kl_cov_select(logp, adv, mask, kl_cov_ratio=0.25).flatten().tolist() == [True, False, False, False]
    assert kl_cov_select(logp, adv, mask, kl_cov_ratio=0.5).flatten().tolist() == [True, True, False, False]
    e = math.exp(-0.2)
    loss, grad, m = _grad(kl_cov_loss, logp, old, adv, mask, kl_cov_ratio=0.25, ppo_kl_coef=1.0)
    assert loss.item() == pytest.approx((2.2 - 2 * e) / 4)
    assert grad.flatten().tolist() == pytest.approx([(-2 * e - 1) / 4, 0.25, -0.125, 0.375])
    assert m["kl_cov/penalty_frac"].item() == 0.25 and m["kl_cov/abs_kl"].item() == pytest.approx(0.2)
    assert m["kl_cov/cov"].item() == pytest.approx(1.5 / 4)
    # β_KL = 0: the unclipped surrogate alone, (2 − 2·e^−0.2)/4
    loss0, grad0, _ = _grad(kl_cov_loss, logp, old, adv, mask, kl_cov_ratio=0.25, ppo_kl_coef=0.0)
    assert loss0.item() == pytest.approx((2 - 2 * e) / 4) and grad0[0, 0].item() == pytest.approx(-2 * e / 4)


def test_kl_cov_clips_no_ratio():
    # ratio 1.5, A = +1, β_KL = 0: KL-Cov's loss is −1.5 with gradient −1.5; GRPO's clips to −1.2 with gradient 0
    logp, z, adv, mask = torch.log(torch.tensor([[1.5]])), torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1) > 0
    loss, grad, _ = _grad(kl_cov_loss, logp, z, adv, mask, ppo_kl_coef=0.0)
    assert (loss.item(), grad.item()) == pytest.approx((-1.5, -1.5))
    loss, grad, _ = _grad(grpo_loss, logp, z, adv, mask)
    assert (loss.item(), grad.item()) == pytest.approx((-1.2, 0.0))


def test_presets_run_their_loss_and_check_their_keys():
    clip_cov = rlx.build("algo", rlx.compose(["algo=clip_cov"]).algo)
    kl_cov = rlx.build("algo", rlx.compose(["algo=kl_cov"]).algo)
    assert (clip_cov.clip_cov_ratio, clip_cov.clip_cov_lb, clip_cov.clip_cov_ub) == (2e-4, 1.0, 5.0)
    assert (kl_cov.kl_cov_ratio, kl_cov.ppo_kl_coef) == (2e-3, 1.0)
    assert clip_cov.requires == frozenset() and kl_cov.requires == frozenset()   # β = 0: no reference model
    old = LOGP - 0.1
    mb = loss_inputs(old, ADV, MASK)
    torch.manual_seed(0)
    a = clip_cov.loss(LOGP, mb)[0]
    torch.manual_seed(0)
    b = clip_cov_loss(LOGP, old, ADV, MASK, clip_cov_ratio=2e-4, eps_low=1.0, eps_high=1.0, **mb.norm)[0]
    assert torch.equal(a, b)
    assert torch.equal(kl_cov.loss(LOGP, mb)[0], kl_cov_loss(LOGP, old, ADV, MASK, kl_cov_ratio=2e-3, **mb.norm)[0])
    for bad in (["algo=clip_cov", "algo.clip_cov_lb=5", "algo.clip_cov_ub=1"], ["algo=clip_cov", "algo.clip_cov_ratio=0"],
                ["algo=kl_cov", "algo.kl_cov_ratio=0"], ["algo=kl_cov", "algo.ppo_kl_coef=-1"]):
        with pytest.raises(ConfigError):
            rlx.compose(bad)
