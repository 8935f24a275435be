"""SAPO (rlx/algos/sapo.py): the soft gate at a few ratios by hand, the loss and its gradient by hand, the on-policy
gradient equal to GRPO's, and the preset's keys."""

import math

import pytest
import torch
from conftest import loss_inputs

import rlx
from rlx.algos.grpo import grpo_loss
from rlx.algos.sapo import sapo_gate, sapo_loss
from rlx.config import ConfigError


def sig(x):
    return 1 / (1 + math.exp(-x))


def algo(*overrides):
    return rlx.build("algo", rlx.compose(["algo=sapo", *overrides]).algo)


def test_gate_values_by_hand():
    r = torch.tensor([0.5, 1.0, 2.0])
    # A > 0 -> tau_pos = 1: f(r) = 4·σ(r − 1)
    #   r = 0.5: 4·σ(−0.5) = 4·0.377541 = 1.510163;  r = 1: 4·σ(0) = 2;  r = 2: 4·σ(1) = 4·0.731059 = 2.924234
    f = sapo_gate(r, torch.ones(3), tau_pos=1.0, tau_neg=1.05)
    assert f.tolist() == pytest.approx([1.510163, 2.0, 2.924234], abs=1e-6)
    # A < 0 -> tau_neg = 1.05: f(r) = σ(1.05·(r − 1))·4/1.05 = σ(·)·3.809524
    #   r = 0.5: σ(−0.525) = 0.371685 -> 1.415938;  r = 1: 2/1.05 = 1.904762;  r = 2: σ(1.05) = 0.740775 -> 2.822000
    f = sapo_gate(r, -torch.ones(3), tau_pos=1.0, tau_neg=1.05)
    assert f.tolist() == pytest.approx([1.415938, 1.904762, 2.822000], abs=1e-6)
    # A = 0 takes tau_neg (verl: tau_pos only where A > 0): f(1) = 2/1.05
    assert sapo_gate(torch.ones(1), torch.zeros(1), tau_pos=1.0, tau_neg=1.05).item() == pytest.approx(2 / 1.05)


def test_loss_and_gradient_by_hand():
    # seq 1: two tokens, ratios 1 and 2, A = +1 (tau_pos = 1); seq 2: one token, ratio 0.5, A = −1 (tau_neg = 1.05)
    old = torch.zeros(2, 2)
    logp = torch.tensor([[0.0, math.log(2.0)], [math.log(0.5), 0.0]], requires_grad=True)
    adv = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    mask = torch.tensor([[True, True], [True, False]])
    loss, m = sapo_loss(logp, old, adv, mask)   # seq_mean_token_mean, the paper's 1/G Σ_i 1/|y_i| Σ_t
    # seq 1: (−2 − 2.924234)/2 = −2.462117;  seq 2: −1.415938·(−1) = 1.415938;  mean = (−2.462117 + 1.415938)/2
    assert loss.item() == pytest.approx((-2.462117 + 1.415938) / 2, abs=1e-6)   # −0.523089
    loss.backward()
    # d/dlogp of −f(r)·A = −A·w·r with w = 4σ(1−σ) (the 4/τ cancels τ), then / (|y_i|·n):
    #   seq 1, r = 1: w = 1 -> −1/(2·2) = −0.25;  r = 2: w = 4·0.731059·0.268941 = 0.786448 -> −0.786448·2/4 = −0.393224
    #   seq 2, r = 0.5: σ(−0.525) = 0.371685, w = 4·0.371685·0.628315 = 0.934140 -> +0.934140·0.5/(1·2) = 0.233535
    # (GRPO's clip would give the r = 2, A > 0 token no gradient at all)
    assert logp.grad.flatten().tolist() == pytest.approx([-0.25, -0.393224, 0.233535, 0.0], abs=1e-6)
    # the mean gradient weight over the 3 valid tokens: (1 + 0.786448 + 0.934140)/3 = 0.906863
    assert m["sapo/gate_weight"].item() == pytest.approx(0.906863, abs=1e-6)
    assert m["policy/ratio_max"].item() == pytest.approx(2.0) and m["policy/ratio_min"].item() == pytest.approx(0.5)


def test_on_policy_gradient_is_grpos():
    # r = 1: f'(1)·1 = 1 for any tau, so the gradient is GRPO's (whose clip is inactive at r = 1); the values differ
    # (−(2/τ)·A against −A)
    g = torch.Generator().manual_seed(0)
    old = -torch.rand(4, 3, generator=g)
    adv = torch.randn(4, 1, generator=g).expand(4, 3).contiguous()
    mask = torch.arange(3).unsqueeze(0) < torch.tensor([[3], [1], [2], [3]])
    grads = []
    for fn in (sapo_loss, grpo_loss):
        logp = old.clone().requires_grad_(True)
        fn(logp, old, adv, mask, loss_agg_mode="seq_mean_token_mean")[0].backward()
        grads.append(logp.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-7) and grads[0].abs().sum() > 0


def test_algorithm_uses_its_taus_and_aggregation():
    a = algo("algo.tau_pos=2.0", "algo.loss_agg_mode=token_mean")
    # one token, ratio 1, A = +1: f(1) = 2/tau_pos = 1 -> loss −1
    mb = loss_inputs(torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1, dtype=torch.bool))
    assert a.loss(torch.zeros(1, 1), mb)[0].item() == pytest.approx(-1.0)


def test_preset_builds_and_checks_its_keys():
    a = algo()
    assert (a.tau_pos, a.tau_neg, a.loss_agg_mode, a.beta) == (10.0, 10.5, "seq_mean_token_mean", 0.0)
    assert a.requires == frozenset()   # no reference model, no critic
    with pytest.raises(ConfigError, match="did you mean 'algo.tau_neg'"):
        rlx.compose(["algo=sapo", "algo.tau_ne=2.0"])
    with pytest.raises(ConfigError, match="algo.tau_neg=0.0"):
        algo("algo.tau_neg=0.0")
