"""R-DPO and QRPO: each loss on a hand-computed example (arithmetic in the comments), invariants tied to a sibling
or a closed form (R-DPO with α = 0 = DPO; the sign of R-DPO's length margin; QRPO's minimiser and its partition
function against numeric integration; quantiles that depend on the order of the scores only), the keys' own
checks, and a 2-step run of each preset through ``rlx.run``."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import FAST, read_metrics

import rlx
from rlx.algos.dpo import dpo_loss
from rlx.algos.qrpo import log_partition, qrpo_loss, quantile_rewards
from rlx.algos.rdpo import rdpo_loss

T = torch.tensor


# ---------------------------------------------------------------- R-DPO


def test_rdpo_hand_computed():
    # h = (-1 - -2) - (-3 - -2) = 1 - (-1) = 2; β h = 0.5 * 2 = 1; |y_w| - |y_l| = 3 - 5 = -2; α (…) = 0.25 * -2 = -0.5
    # L = -log σ(1 - 0.5) = log(1 + e^-0.5) = log(1.606531) = 0.474077
    loss, m = rdpo_loss(T([-1.0]), T([-3.0]), T([-2.0]), T([-2.0]), T([3.0]), T([5.0]), beta=0.5, alpha=0.25)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-0.5)), abs=1e-6)
    assert loss.item() == pytest.approx(0.474077, abs=1e-6)
    assert m["rdpo/length_gap"].item() == -2.0


def test_rdpo_with_alpha_zero_is_dpo_loss_and_gradient():
    torch.manual_seed(0)
    lp = torch.randn(2, 6, dtype=torch.float64)
    ref = torch.randn(2, 6, dtype=torch.float64)
    n = torch.randint(1, 9, (2, 6)).double()  # lengths differ: α = 0 must ignore them
    a, b = lp.clone().requires_grad_(True), lp.clone().requires_grad_(True)
    ours, _ = rdpo_loss(a[0], a[1], ref[0], ref[1], n[0], n[1], beta=0.3, alpha=0.0)
    theirs, _ = dpo_loss(b[0], b[1], ref[0], ref[1], beta=0.3)
    ours.backward()
    theirs.backward()
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-12)
    torch.testing.assert_close(a.grad, b.grad)
    assert (n[0] != n[1]).any()


def test_rdpo_length_margin_sign():
    # eq. 9: L = -log σ(β h + α (|y_w| - |y_l|)). With h fixed, a longer chosen response lowers the loss (length
    # explains part of the preference) and a shorter one raises it; equal lengths give DPO for any α.
    lp, zero = T([0.4]), T([0.0])
    dpo = dpo_loss(lp, zero, zero, zero, beta=0.5)[0].item()
    losses = [
        rdpo_loss(lp, zero, zero, zero, T([5.0 + g]), T([5.0]), beta=0.5, alpha=0.2)[0].item()
        for g in (-3, -1, 0, 1, 3)
    ]
    assert losses == sorted(losses, reverse=True) and len(set(losses)) == 5
    assert losses[2] == pytest.approx(dpo, abs=1e-7)
    # -log σ(0.5 * 0.4 + 0.2 * 3) = -log σ(0.8) = log(1 + e^-0.8) = 0.371101
    assert losses[4] == pytest.approx(0.371101, abs=1e-6)
    # the pull on h is weaker where length already explains the preference: dL/dh = -β σ(-(β h + α gap))
    grads = []
    for gap in (-2.0, 2.0):
        h = T([0.4], requires_grad=True)
        rdpo_loss(h, zero, zero, zero, T([5.0 + gap]), T([5.0]), beta=0.5, alpha=0.2)[0].backward()
        grads.append(h.grad.item())
    assert grads[0] < grads[1] < 0  # longer rejected (gap -2): stronger push on h than longer chosen (gap +2)
    assert grads[1] == pytest.approx(-0.5 * (1 - 1 / (1 + math.exp(-(0.2 + 0.4)))), abs=1e-7)


@pytest.mark.parametrize(
    "bad, needle",
    [
        (["algo=rdpo", "algo.alpha=-0.1"], "algo.alpha=-0.1: must be >= 0"),
        (["algo=rdpo", "algo.beta=0"], "algo.beta=0: must be > 0"),
        (["algo=qrpo", "algo.beta=-1"], "algo.beta=-1: must be > 0"),
    ],
)
def test_keys_are_checked_by_name(bad, needle):
    with pytest.raises(rlx.ConfigError) as err:
        rlx.compose(bad)
    assert needle in str(err.value), str(err.value)


# ---------------------------------------------------------------- QRPO


def test_quantile_rewards_leave_one_out_with_ties():
    # K = 4, scores 1, .5, .5, -.5: each against the other three, ties counted as below (≤)
    # 1 → {.5, .5, -.5} all ≤ 1: 3/3; .5 → {1, .5, -.5}: .5 and -.5 ≤ .5: 2/3 (twice); -.5 → none: 0
    r = quantile_rewards(T([[1.0, 0.5, 0.5, -0.5]]))
    torch.testing.assert_close(r, T([[1.0, 2 / 3, 2 / 3, 0.0]]))
    # a pair: chosen 1, rejected 0; a tied pair: 1 and 1
    torch.testing.assert_close(quantile_rewards(T([[2.0, -1.0], [0.3, 0.3]])), T([[1.0, 0.0], [1.0, 1.0]]))
    with pytest.raises(ValueError, match="at least 2 responses"):
        quantile_rewards(T([[1.0]]))


def test_qrpo_hand_computed():
    # β = 0.5: Z_q = 0.5 (e^2 - 1) = 0.5 * 6.389056 = 3.194528; β log Z_q = 0.5 * 1.161439 = 0.580720
    # pair scores (1, 0) → r_q = (1, 0); log-ratios (1, -1) → β log-ratio = (0.5, -0.5)
    # residuals: 1 - 0.580720 - 0.5 = -0.080720; 0 - 0.580720 + 0.5 = -0.080720; L = 0.080720² = 0.006516
    loss, m = qrpo_loss(T([[-1.0, -4.0]]), T([[-2.0, -3.0]]), T([[1.0, 0.0]]), beta=0.5)
    assert log_partition(0.5) == pytest.approx(math.log(0.5 * (math.e**2 - 1)), abs=1e-12)
    assert loss.item() == pytest.approx((0.5 - 0.5 * math.log(0.5 * (math.e**2 - 1))) ** 2, abs=1e-7)
    assert loss.item() == pytest.approx(0.006516, abs=1e-6)
    assert m["qrpo/quantile_reward"].item() == 0.5 and m["qrpo/residual"].item() == pytest.approx(
        -0.080720, abs=1e-6
    )


def test_qrpo_minimiser_is_the_closed_form_log_ratio():
    # the loss is zero, with zero gradient, at log π/π_ref = (r_q - β log Z_q)/β, and only there
    beta = 0.2
    scores = T([[3.0, 1.0, 2.0, 0.0]], dtype=torch.float64)  # r_q = (1, 1/3, 2/3, 0)
    ref = T([[-5.0, -2.0, -7.5, -1.0]], dtype=torch.float64)
    r_q = T([[1.0, 1 / 3, 2 / 3, 0.0]], dtype=torch.float64)
    target = (r_q - beta * log_partition(beta)) / beta
    lp = (ref + target).requires_grad_(True)
    loss, _ = qrpo_loss(lp, ref, scores, beta=beta)
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-20)
    assert lp.grad.abs().max().item() < 1e-12
    # (1 - 0.2 log(0.2 (e^5 - 1)))/0.2 = (1 - 0.2 * 3.383801)/0.2 = 1.616199 nats above the reference for the best
    assert target[0, 0].item() == pytest.approx(1.616199, abs=1e-6)
    for shift in (0.05, -0.05):  # moving one response off the target costs (β shift)² / K
        off, _ = qrpo_loss(
            lp.detach() + T([[0.0, shift, 0.0, 0.0]], dtype=torch.float64), ref, scores, beta=beta
        )
        assert off.item() == pytest.approx((beta * shift) ** 2 / 4, rel=1e-9)


@pytest.mark.parametrize("beta", [0.05, 0.1, 0.5, 1.0, 3.0])
def test_partition_function_against_numeric_integration(beta):
    # Z_q = E_{r_q ~ U[0,1]}[e^{r_q/β}] = ∫_0^1 e^{t/β} dt (the MGF of the uniform quantile reward at 1/β; no extra β
    # factor: the β of β (e^{1/β} - 1) is the integral's), by Simpson's rule on 2000 intervals
    n = 2000
    t = torch.linspace(0, 1, n + 1, dtype=torch.float64)
    w = torch.ones(n + 1, dtype=torch.float64)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    numeric = (w * torch.exp(t / beta)).sum().item() / (3 * n)
    assert math.exp(log_partition(beta)) == pytest.approx(numeric, rel=1e-9)
    # and as the mean over empirical quantiles: n + 1 distinct scores give r_q = 0, 1/n, …, 1 (a trapezoid rule)
    r_q = quantile_rewards(torch.randperm(n + 1, generator=torch.Generator().manual_seed(0)).double()[None])
    assert torch.exp(r_q / beta).mean().item() == pytest.approx(numeric, rel=2e-3 / beta)


def test_algorithm_1_simplification_of_log_z():
    # Algorithm 1 / the authors' code use β log Z_q ≈ β log β + 1; the dropped β log(1 - e^{-1/β}) is below 5e-6 for
    # β ≤ 0.1 (β = 0.1: 0.1 * log(1 - e^-10) = -4.54e-6) but not at β = 1 (log(e - 1) = 0.541 against 1)
    for beta in (1e-3, 0.03, 0.1):
        assert abs(beta * log_partition(beta) - (beta * math.log(beta) + 1)) < 5e-6
    assert log_partition(1.0) == pytest.approx(math.log(math.e - 1), abs=1e-12)


def test_qrpo_depends_on_the_order_of_the_scores_only():
    torch.manual_seed(1)
    lp, ref = torch.randn(3, 4), torch.randn(3, 4)
    scores = torch.randn(3, 4)
    base, _ = qrpo_loss(lp, ref, scores, beta=0.3)
    for transform in (lambda s: 7 * s - 2, torch.exp, lambda s: torch.sign(s) * s**2):  # strictly increasing
        assert qrpo_loss(lp, ref, transform(scores), beta=0.3)[0].item() == pytest.approx(
            base.item(), abs=1e-6
        )
    flipped, _ = qrpo_loss(lp, ref, -scores, beta=0.3)  # a decreasing map reverses the quantiles
    assert abs(flipped.item() - base.item()) > 1e-3


# ---------------------------------------------------------------- the presets, 2 steps each


def run_preset(tmp_path, *overrides) -> list[dict]:
    run_dir = tmp_path / "run"
    rlx.run(
        rlx.compose(
            [*overrides, "trainer.steps=2", "data.prompts_per_step=4", *FAST, "hardware.num_threads=1"]
        ),
        run_dir=run_dir,
    )
    rows = read_metrics(run_dir)
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert "eval/arithmetic_pref/pref_accuracy" in rows[0] and "eval/arithmetic/accuracy" in rows[-1]
    return rows


@pytest.mark.slow
def test_rdpo_preset_two_steps(tmp_path):
    rows = run_preset(tmp_path, "algo=rdpo")
    first = rows[1]
    assert math.isfinite(first["loss/total"]) and "rdpo/length_gap" in first
    assert first["pref/margin"] == pytest.approx(0.0, abs=1e-5)  # policy = reference at the first step


@pytest.mark.slow
def test_qrpo_preset_two_steps(tmp_path):
    # K = 4 responses in one row (layout "ranked"): distinct scores give r_q = 1, 2/3, 1/3, 0 (mean 1/2); at the first
    # step π = π_ref, so L = mean (r_q - β log Z_q)² with β = 0.1, β log Z_q = 0.769737:
    # (0.230263² + 0.103070² + 0.436404² + 0.769737²)/4 = (0.053021 + 0.010623 + 0.190448 + 0.592495)/4 = 0.211647
    rows = run_preset(tmp_path, "algo=qrpo", "data.responses_per_prompt=4")
    first = rows[1]
    assert first["qrpo/quantile_reward"] == pytest.approx(0.5, abs=1e-7)
    assert first["loss/total"] == pytest.approx(0.211647, abs=1e-5)
    assert first["pref/margin"] == pytest.approx(0.0, abs=1e-5) and math.isfinite(rows[2]["loss/total"])
