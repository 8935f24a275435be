"""The options for users who port verl configs (docs/verl_names.md): dual-clip (``clip_ratio_c``) on PPO, VAPO
and the REINFORCE family, the ``token_sum`` aggregation and the ``abs`` KL estimator, on hand-computed values;
and the presets at their defaults computing exactly what they computed before the keys existed."""

import math

import pytest
import torch
from conftest import loss_inputs

import rlx
import rlx.algos.ppo
import rlx.algos.reinforce
from rlx.algos.ppo import ppo_policy_loss
from rlx.algos.reinforce import pg_loss
from rlx.algos.surrogate import clipped_surrogate, kl_loss
from rlx.config import ConfigError
from rlx.ops import aggregate, kl_penalty

DUAL_CLIP_PRESETS = ["ppo", "ppo_ptx", "vapo", "reinforce", "reinforce_pp", "reinforce_pp_baseline", "reinforce_rej",
                     "remax", "rloo"]


def _one_token(ratio, adv):
    """(logp leaf [1, 1], LossInputs) of one token with importance ratio ``ratio`` and advantage ``adv``."""
    logp = torch.tensor([[math.log(ratio)]]).requires_grad_(True)
    return logp, loss_inputs(torch.zeros(1, 1), torch.tensor([[adv]]), torch.ones(1, 1, dtype=torch.bool))


def test_dual_clip_in_ppo_and_reinforce_losses():
    # ratio 4, A = −1: PPO's loss is max(4·1, clip(4)·1 = 1.2) = 4 with gradient 4 (d(−r·A)/dlog π = −r·A);
    # dual-clip c = 3 caps it at −c·A = 3, where it has no gradient
    for fn in (ppo_policy_loss, pg_loss):
        for c, expected in ((None, (4.0, 4.0)), (3.0, (3.0, 0.0))):
            logp, mb = _one_token(4.0, -1.0)
            loss, m = fn(logp, mb.old_logp, mb.advantages, mb.response_mask, eps_low=0.2, eps_high=0.2,
                         loss_agg_mode="token_mean", clip_ratio_c=c)
            loss.backward()
            assert (loss.item(), logp.grad.item()) == pytest.approx(expected), (fn.__name__, c)
        assert m["policy/clip_frac"].item() == 1.0   # the dual-clipped token counts as clipped
    # ratio 2 < c: unchanged (loss 2, gradient 2)
    logp, mb = _one_token(2.0, -1.0)
    loss = ppo_policy_loss(logp, mb.old_logp, mb.advantages, mb.response_mask, eps_low=0.2, eps_high=0.2,
                           loss_agg_mode="token_mean", clip_ratio_c=3.0)[0]
    assert loss.item() == pytest.approx(2.0)


@pytest.mark.parametrize("name", DUAL_CLIP_PRESETS)
def test_every_preset_takes_clip_ratio_c(name):
    # the same token through the preset: null (the default) -> 4, algo.clip_ratio_c=3.0 -> 3 with no gradient
    # (VAPO adds μ·NTP over positive samples; the reward 0 makes none positive, so it adds 0)
    for over, expected in (([], (4.0, 4.0)), (["algo.clip_ratio_c=3.0"], (3.0, 0.0))):
        algo = rlx.build("algo", rlx.compose([f"algo={name}", *over]).algo)
        logp, mb = _one_token(4.0, -1.0)
        loss = algo.loss(logp, mb)[0]
        loss.backward()
        assert (loss.item(), logp.grad.item()) == pytest.approx(expected), over
    with pytest.raises(ConfigError, match="clip_ratio_c"):
        rlx.compose([f"algo={name}", "algo.clip_ratio_c=1.0"])


def test_token_sum_aggregation():
    # lengths 2 and 1 (the 100 is padding): token_sum = 1 + 3 + 6 = 10, no division; each valid token's
    # gradient is 1, padding's 0
    loss = torch.tensor([[1.0, 3.0], [6.0, 100.0]], requires_grad=True)
    mask = torch.tensor([[True, True], [True, False]])
    out = aggregate(loss, mask, "token_sum")
    out.backward()
    assert out.item() == 10.0 and loss.grad.tolist() == [[1.0, 1.0], [1.0, 0.0]]
    # micro-batches of one row add up to the mini-batch's value (1 + 3) + 6 = 10
    assert sum(aggregate(loss[i:i + 1], mask[i:i + 1], "token_sum") for i in range(2)).item() == 10.0
    # through a preset: GRPO on-policy with A = [[1, 1], [−1, pad]] -> −(1 + 1 − 1) = −1
    algo = rlx.build("algo", rlx.compose(["algo=grpo", "algo.loss_agg_mode=token_sum", "algo.beta=0"]).algo)
    z = torch.zeros(2, 2)
    assert algo.loss(z, loss_inputs(z, torch.tensor([[1.0, 1.0], [-1.0, 0.0]]), mask))[0].item() == -1.0


def test_abs_kl_estimator():
    # π_θ = 0.5, π_ref = 0.25: abs = |log 0.5 − log 0.25| = log 2; swapped the same (k1 would be −log 2);
    # d abs/d log π_θ = sign(log π_θ − log π_ref) = +1 (−1 swapped)
    log2 = math.log(2)
    for lp, ref, sign in ((0.5, 0.25, 1.0), (0.25, 0.5, -1.0)):
        logp = torch.tensor([math.log(lp)], requires_grad=True)
        kl = kl_penalty(logp, torch.tensor([math.log(ref)]), "abs")
        kl.sum().backward()
        assert kl.item() == pytest.approx(log2) and logp.grad.item() == pytest.approx(sign)
    assert kl_penalty(torch.tensor([math.log(0.25)]), torch.tensor([math.log(0.5)]), "k1").item() == pytest.approx(-log2)
    # abs+: the value of abs, the gradient of k2 (log π_θ − log π_ref = −log 2 here)
    logp = torch.tensor([math.log(0.25)], requires_grad=True)
    kl = kl_penalty(logp, torch.tensor([math.log(0.5)]), "abs+")
    kl.sum().backward()
    assert kl.item() == pytest.approx(log2) and logp.grad.item() == pytest.approx(-log2)
    # as GRPO's loss term: β·token_mean(abs) = 0.5·log 2; accepted by the preset checks
    term = kl_loss(torch.full((1, 2), math.log(0.5)), torch.full((1, 2), math.log(0.25)), torch.ones(1, 2) > 0,
                   beta=0.5, estimator="abs", loss_agg_mode="token_mean")[0]
    assert term.item() == pytest.approx(0.5 * log2)
    rlx.compose(["algo=grpo", "algo.kl_estimator=abs"])
    rlx.compose(["algo=ppo", "algo.reward_kl_estimator=abs"])


def _batch():
    torch.manual_seed(0)
    n, T = 4, 5
    logp = -torch.rand(n, T) - 0.1
    old = logp + 0.5 * torch.randn(n, T)   # ratios far from 1: some tokens clipped
    mask = torch.ones(n, T, dtype=torch.bool)
    mask[1, 3:] = False
    adv = torch.randn(n, 1).expand(n, T).contiguous()
    adv[0], old[0, 0] = -1.0, logp[0, 0] - 1.5   # one token with A < 0 and ratio e^1.5 = 4.5 > 3: dual-clipped at c = 3
    return logp, loss_inputs(old, adv, mask, rewards=torch.tensor([1.0, 0.0, 1.0, 0.0]))


@pytest.mark.parametrize("name", DUAL_CLIP_PRESETS)
def test_defaults_compute_what_they_did_before_the_new_keys(name, monkeypatch):
    # Before clip_ratio_c existed these presets called clipped_surrogate without it, i.e. with its defaults
    # (clip_ratio_c=None, clip_mode="standard"): the call must still be that one, and the loss and gradient
    # bit-identical to calling clipped_surrogate that way (no reference log-probs here, so no KL term; VAPO's NTP
    # term is switched off with μ = 0).
    calls = []

    def spy(*args, **kw):
        calls.append(kw)
        return clipped_surrogate(*args, **kw)

    monkeypatch.setattr(rlx.algos.ppo, "clipped_surrogate", spy)
    monkeypatch.setattr(rlx.algos.reinforce, "clipped_surrogate", spy)
    over = ["algo.mu=0"] if name == "vapo" else []
    algo = rlx.build("algo", rlx.compose([f"algo={name}", *over]).algo)
    logp, mb = _batch()
    a = logp.clone().requires_grad_(True)
    loss_a = algo.loss(a, mb)[0]
    loss_a.backward()
    assert len(calls) == 1 and calls[0].get("clip_ratio_c") is None and calls[0].get("clip_mode", "standard") == "standard"
    b = logp.clone().requires_grad_(True)
    loss_b = clipped_surrogate(b, mb.old_logp, mb.advantages, mb.response_mask, eps_low=algo.eps_low,
                               eps_high=algo.eps_high, loss_agg_mode=algo.loss_agg_mode, **mb.norm)[0]
    loss_b.backward()
    assert torch.equal(loss_a, loss_b.detach()) and torch.equal(a.grad, b.grad)
    # ... and the batch does reach the dual-clip: c = 3 changes the loss
    algo_c = rlx.build("algo", rlx.compose([f"algo={name}", *over, "algo.clip_ratio_c=3.0"]).algo)
    assert not torch.equal(algo_c.loss(logp, mb)[0], loss_a.detach())
