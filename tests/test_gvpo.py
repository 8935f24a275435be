"""GVPO (rlx/algos/gvpo.py): the zero-sum weights and the loss of a 3-sample group by hand, the loop's split of
the group mean (weights at the behaviour policy, the policy's move in the loss) against the loss written out
with autograd, and the preset."""

from __future__ import annotations

import pytest
import torch
from conftest import algo_batch, loss_inputs
from omegaconf import OmegaConf

import rlx
from rlx.algos.gvpo import GVPO, gvpo_loss, gvpo_weights
from rlx.config import ConfigError

T_, F_ = True, False


def gvpo(*overrides, **keys):
    """The preset's algorithm (command-line ``overrides``), with ``keys`` set on the built node (group sizes the
    default batch units would refuse)."""
    return rlx.build("algo", OmegaConf.merge(rlx.compose(["algo=gvpo", *overrides]).algo, keys))


def _group():
    """One group of G = 3 two-token responses: rewards [1, 0, 2], log π_old − log π_ref = [0.5, 0.5], [0, 0],
    [1, 1] per token, so the sequence log-ratios are s = [1, 0, 2]."""
    rewards = torch.tensor([1.0, 0.0, 2.0])
    ref = torch.tensor([[-1.0, -2.0], [-0.5, -1.5], [-3.0, -1.0]])
    old = ref + torch.tensor([[0.5, 0.5], [0.0, 0.0], [1.0, 1.0]])
    return rewards, old, ref, torch.ones(3, 2, dtype=torch.bool)


# ---------------------------------------------------------------- by hand


def test_weights_of_a_three_sample_group_by_hand():
    rewards, old, ref, mask = _group()
    # R − R̄ = [1, 0, 2] − 1 = [0, −1, 1]; s − s̄ = [1, 0, 2] − 1 = [0, −1, 1]; β = 0.5:
    # w = [0 − 0, −1 + 0.5, 1 − 0.5] = [0, −0.5, 0.5]; the weights sum to zero
    w = gvpo_weights(rewards, mask, 3, beta=0.5, old_logp=old, anchor_logp=ref)
    torch.testing.assert_close(w, torch.tensor([0.0, -0.5, 0.5]))
    # anchor=old: s ≡ 0 at the behaviour policy, w = R − R̄ (no std)
    torch.testing.assert_close(gvpo_weights(rewards, mask, 3, beta=0.5), torch.tensor([0.0, -1.0, 1.0]))
    # through the algorithm: the same weight on every valid token
    adv, m = gvpo(group_size=3, beta=0.5).advantages(algo_batch(rewards, mask, old_logp=old,
                                                                               ref_logp=ref))
    torch.testing.assert_close(adv, torch.tensor([[0.0, 0.0], [-0.5, -0.5], [0.5, 0.5]]))
    assert m["gvpo/seq_log_ratio"] == pytest.approx(1.0)   # mean s = (1 + 0 + 2) / 3


def test_loss_value_and_gradient_sign_of_a_three_sample_group():
    rewards, old, ref, mask = _group()
    w = gvpo_weights(rewards, mask, 3, beta=0.5, old_logp=old, anchor_logp=ref)      # [0, −0.5, 0.5]
    logp = old.clone().requires_grad_(True)                                           # on-policy: Δ = 0
    loss, m = gvpo_loss(logp, old, w.unsqueeze(-1).expand(3, 2), mask, beta=0.5, group_size=3, num_seqs=3)
    # e = w − β·Δ = [0, −0.5, 0.5]; Σ ½e² = ½(0 + 0.25 + 0.25) = 0.25; × G / ((G−1)·n_seq) = 3 / (2·3):
    # L = 0.125, the per-prompt 1/(G−1)·Σ ½e² = 0.25 / 2 of the one prompt
    assert loss.item() == pytest.approx(0.125) and m["loss/total"].item() == pytest.approx(0.125)
    loss.backward()
    # dL/dlogp_{k,t} = −β·e_k·G/((G−1)·n_seq) = −0.5·e_k·0.5 = −0.25·e_k → rows [0, +0.125, −0.125] on every token:
    # gradient descent raises the response whose reward beats its implicit reward (row 2) and lowers row 1
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, 0.0], [0.125, 0.125], [-0.125, -0.125]]))
    assert logp.grad[2].lt(0).all() and logp.grad[1].gt(0).all()


def test_implicit_reward_equal_to_the_reward_is_the_optimum():
    # s − s̄ = (R − R̄)/β: R = [1, 0, 2], β = 0.5 → s = [0, −2, 2] (+ any constant) gives w = 0, loss 0, no gradient
    rewards, mask = torch.tensor([1.0, 0.0, 2.0]), torch.ones(3, 1, dtype=torch.bool)
    ref = torch.zeros(3, 1)
    old = torch.tensor([[3.0], [1.0], [5.0]])                 # s = [3, 1, 5] = [0, −2, 2] + 3
    w = gvpo_weights(rewards, mask, 3, beta=0.5, old_logp=old, anchor_logp=ref)
    assert w.abs().max().item() == 0.0
    logp = old.clone().requires_grad_(True)
    loss, _ = gvpo_loss(logp, old, w.unsqueeze(-1), mask, beta=0.5, group_size=3)
    loss.backward()
    assert loss.item() == 0.0 and logp.grad.abs().max().item() == 0.0


# ---------------------------------------------------------------- the loop's split against the written-out loss


def _exact_loss(logp, ref, rewards, mask, beta, G):
    """Σ_groups 1/(G−1) Σ_i ½[(R_i − R̄) − β(s_i − s̄)]², s_i = Σ_t (logp − ref), s̄ with its gradient, averaged
    over the groups: the paper's loss written out directly."""
    s = ((logp - ref) * mask).sum(-1).view(-1, G)
    a = rewards.view(-1, G) - rewards.view(-1, G).mean(-1, keepdim=True)
    e = a - beta * (s - s.mean(-1, keepdim=True))
    return (0.5 * e.square()).sum(-1).div(G - 1).mean()


@pytest.mark.parametrize("anchor", ["ref", "old"])
def test_on_policy_the_loop_gives_the_exact_loss_and_gradient(anchor):
    g = torch.Generator().manual_seed(0)
    G, n, T, beta = 4, 8, 3, 0.3
    old = -torch.rand(n, T, generator=g) * 2
    ref = old + 0.4 * torch.randn(n, T, generator=g) if anchor == "ref" else old
    mask = torch.arange(T).unsqueeze(0) < torch.randint(1, T + 1, (n, 1), generator=g)
    rewards = torch.randint(0, 3, (n,), generator=g).float()
    a = GVPO(name="gvpo", group_size=G, beta=beta, anchor=anchor)
    adv, _ = a.advantages(algo_batch(rewards, mask, old_logp=old, ref_logp=ref))
    logp = old.clone().requires_grad_(True)
    loss, _ = a.loss(logp, loss_inputs(old, adv, mask, ref_logp=ref))
    loss.backward()
    exact = old.clone().requires_grad_(True)
    want = _exact_loss(exact, ref, rewards, mask, beta, G)
    want.backward()
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    torch.testing.assert_close(logp.grad, exact.grad, rtol=1e-5, atol=1e-7)


def test_micro_batches_sum_to_the_mini_batch_loss():
    rewards, old, ref, mask = _group()
    w = gvpo_weights(rewards, mask, 3, beta=0.5, old_logp=old, anchor_logp=ref).unsqueeze(-1).expand(3, 2)
    logp = old - 0.1                                          # off-policy: Δ = −0.2 per response
    kw = dict(beta=0.5, group_size=3, num_seqs=3)
    whole = gvpo_loss(logp, old, w, mask, **kw)[0]
    parts = gvpo_loss(logp[:2], old[:2], w[:2], mask[:2], **kw)[0] + gvpo_loss(logp[2:], old[2:], w[2:], mask[2:],
                                                                               **kw)[0]
    # e = w + 0.1 = [0.1, −0.4, 0.6]: ½(0.01 + 0.16 + 0.36)·3/(2·3) = 0.1325
    assert whole.item() == pytest.approx(0.1325) and parts.item() == pytest.approx(whole.item())


def test_a_failed_sample_stays_out_of_the_group_means():
    # rewards [1, 7, 0, 2] with the second failed (all-False mask, 7 a placeholder): R − R̄ over the scored three
    # = [0, −1, 1], the failed one 0; its log-ratio (99) must not move s̄ either
    mask = torch.tensor([[T_], [F_], [T_], [T_]])
    ref, old = torch.zeros(4, 1), torch.tensor([[1.0], [99.0], [0.0], [2.0]])
    w = gvpo_weights(torch.tensor([1.0, 7.0, 0.0, 2.0]), mask, 4, beta=0.5, old_logp=old, anchor_logp=ref)
    torch.testing.assert_close(w, torch.tensor([0.0, 0.0, -0.5, 0.5]))
    loss, _ = gvpo_loss(old, old, w.unsqueeze(-1), mask, beta=0.5, group_size=4, num_seqs=3)
    assert loss.item() == pytest.approx(0.5 * (0.25 + 0.25) * 4 / (3 * 3))


# ---------------------------------------------------------------- preset


def test_preset_composes_and_builds():
    a = gvpo()
    assert isinstance(a, GVPO) and (a.group_size, a.beta, a.anchor) == (8, 0.1, "ref")
    assert a.requires == {"ref_logp", "old_logp"} and not a.takes_is_weights
    assert gvpo("algo.anchor=old").requires == frozenset()     # the released recipe's anchor: no reference model


def test_unknown_key_names_the_closest():
    with pytest.raises(ConfigError) as e:
        rlx.compose(["algo=gvpo", "algo.bta=0.2"])
    first = str(e.value).splitlines()[0]
    assert "'algo.bta'" in first and "did you mean 'algo.beta'" in first, first


def test_bad_values_name_the_key():
    with pytest.raises(ConfigError, match="algo.anchor='reff'.*did you mean 'ref'"):
        gvpo("algo.anchor=reff")
    with pytest.raises(ConfigError, match="algo.beta=0.0: must be > 0"):
        gvpo("algo.beta=0.0")
