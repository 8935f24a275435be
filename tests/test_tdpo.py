"""TDPO (algo=tdpo): TDPO1 and TDPO2 on a hand-computed example (arithmetic and gradients in the comments); the
invariants tied to DPO (log 2 at initialisation; TDPO2 with α = 0 is DPO; TDPO2 with α = 1 has TDPO1's value but
not its gradient: the stop-gradient on the chosen KL); the keys' checks; the trainer's sequential KL against a
direct torch.distributions computation on the tiny model's logits for a real batch, with gradient through π_θ only;
the two-pass micro-batch gradient with the KL terms; and a 2-step run of the preset through ``rlx.run``."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from conftest import FAST, read_metrics
from torch.distributions import Categorical, kl_divergence

import rlx
import rlx.algos.tdpo  # noqa: F401  (registers algo=tdpo until rlx/algos/__init__.py imports it)
from rlx.algos.dpo import dpo_loss
from rlx.algos.preference import PrefBatch
from rlx.algos.tdpo import tdpo_loss
from rlx.config import ConfigError
from rlx.registry import TRAINERS
from rlx.trainers.offline import layout_rows

T = torch.tensor


def tdpo(*overrides):
    return rlx.build("algo", rlx.compose(["algo=tdpo", *overrides]).algo)


# ---------------------------------------------------------------- the loss by hand


def test_tdpo1_and_tdpo2_hand_computed():
    # chosen: logp -1, ref -2; rejected: logp -3, ref -2; β = 0.5 → u = 0.5 * ((-1 - -2) - (-3 - -2)) = 0.5 * 2 = 1
    # SeqKL chosen 0.4, rejected 1.2 → δ = 0.5 * (1.2 - 0.4) = 0.4
    lp_w, lp_l = T([-1.0], requires_grad=True), T([-3.0], requires_grad=True)
    kl_w, kl_l = T([0.4], requires_grad=True), T([1.2], requires_grad=True)
    # TDPO1: z = u - δ = 0.6; L = -log σ(0.6) = log(1 + e^-0.6) = log(1.548812) = 0.437488
    loss, m = tdpo_loss(lp_w, lp_l, T([-2.0]), T([-2.0]), kl_w, kl_l, beta=0.5)
    assert loss.item() == pytest.approx(0.437488, abs=1e-6)
    assert m["tdpo/delta"].item() == pytest.approx(0.4) and m["tdpo/seq_kl_rejected"].item() == pytest.approx(1.2)
    loss.backward()
    # dL/dz = -σ(-0.6) = -0.354344; dz/dKL_w = +β, dz/dKL_l = -β, dz/dlogp_w = +β:
    # dL/dKL_w = -0.177172, dL/dKL_l = +0.177172, dL/dlogp_w = -0.177172
    assert kl_w.grad.item() == pytest.approx(-0.177172, abs=1e-6)
    assert kl_l.grad.item() == pytest.approx(0.177172, abs=1e-6)
    assert lp_w.grad.item() == pytest.approx(-0.177172, abs=1e-6)
    for x in (lp_w, lp_l, kl_w, kl_l):
        x.grad = None
    # TDPO2, α = 0.5: z = u - α δ₂ = 1 - 0.5 * 0.4 = 0.8; L = log(1 + e^-0.8) = log(1.449329) = 0.371101
    loss, _ = tdpo_loss(lp_w, lp_l, T([-2.0]), T([-2.0]), kl_w, kl_l, beta=0.5, alpha=0.5, stop_gradient=True)
    assert loss.item() == pytest.approx(0.371101, abs=1e-6)
    loss.backward()
    # dL/dz = -σ(-0.8) = -0.310026; dL/dKL_l = 0.310026 * α β = 0.310026 * 0.25 = 0.077506;
    # dL/dKL_w = 0 (sg on the chosen KL); dL/dlogp_w = -0.310026 * 0.5 = -0.155013
    assert kl_l.grad.item() == pytest.approx(0.077506, abs=1e-6)
    assert kl_w.grad is None or kl_w.grad.item() == 0.0
    assert lp_w.grad.item() == pytest.approx(-0.155013, abs=1e-6)


def test_the_algorithm_reads_the_batch_and_its_implicit_rewards_give_the_logit():
    # the same pair through the dataclass (K = 2 columns: chosen, rejected); rewards β (log-ratio + α SeqKL):
    # chosen 0.5 * (1 + 0.5 * 0.4) = 0.6, rejected 0.5 * (-1 + 0.5 * 1.2) = -0.2; margin 0.8 = TDPO2's logit z
    batch = PrefBatch(logps=T([[-1.0, -3.0]]), n_tokens=T([[2.0, 3.0]]), scores=T([[1.0, 0.0]]),
                      ref_logps=T([[-2.0, -2.0]]), seq_kl=T([[0.4, 1.2]]))
    algo = tdpo("algo.beta=0.5")
    assert algo.variant == "tdpo2" and algo.alpha == 0.5   # the preset: the authors' default
    assert algo.loss(batch)[0].item() == pytest.approx(0.371101, abs=1e-6)
    torch.testing.assert_close(algo.implicit_rewards(batch), T([[0.6, -0.2]]))
    one = tdpo("algo.beta=0.5", "algo.variant=tdpo1", "algo.alpha=1")
    assert one.loss(batch)[0].item() == pytest.approx(0.437488, abs=1e-6)
    # TDPO1: 0.5 * (1 + 0.4) = 0.7, 0.5 * (-1 + 1.2) = 0.1; margin 0.6 = TDPO1's logit
    torch.testing.assert_close(one.implicit_rewards(batch), T([[0.7, 0.1]]))
    assert {"ref_logp", "seq_kl"} <= algo.requires


# ---------------------------------------------------------------- invariants


def test_at_initialisation_both_variants_are_log2():
    # π_θ = π_ref: every log-ratio is 0 and every KL(π_ref ‖ π_θ) is 0, so u = δ = 0 and L = -log σ(0) = log 2
    lp, zero = T([-1.0, -7.5, -3.2]), torch.zeros(3)
    for kw in ({}, {"alpha": 0.5, "stop_gradient": True}):
        loss, _ = tdpo_loss(lp, lp - 1, lp, lp - 1, zero, zero, beta=0.1, **kw)
        assert loss.item() == pytest.approx(math.log(2), abs=1e-7)


def test_tdpo2_with_alpha_zero_is_dpo_loss_and_gradient():
    torch.manual_seed(0)
    lp, ref, kl = torch.randn(2, 5, dtype=torch.float64), torch.randn(2, 5, dtype=torch.float64), torch.rand(2, 5)
    a, b = lp.clone().requires_grad_(True), lp.clone().requires_grad_(True)
    ours, _ = tdpo_loss(a[0], a[1], ref[0], ref[1], kl[0].double(), kl[1].double(), beta=0.3, alpha=0.0,
                        stop_gradient=True)
    theirs, _ = dpo_loss(b[0], b[1], ref[0], ref[1], beta=0.3)
    ours.backward()
    theirs.backward()
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-12)
    torch.testing.assert_close(a.grad, b.grad)


def test_tdpo2_alpha_one_has_tdpo1_value_but_stops_the_chosen_kl_gradient():
    torch.manual_seed(1)
    lp, ref, kl0 = torch.randn(2, 4), torch.randn(2, 4), torch.rand(2, 4) + 0.1
    grads = []
    for sg in (False, True):
        kl = kl0.clone().requires_grad_(True)
        loss, _ = tdpo_loss(lp[0], lp[1], ref[0], ref[1], kl[0], kl[1], beta=0.2, alpha=1.0, stop_gradient=sg)
        loss.backward()
        grads.append((loss.item(), kl.grad.clone()))
    (v1, g1), (v2, g2) = grads
    assert v2 == pytest.approx(v1, abs=1e-7)                    # sg changes no value
    assert (g1[0] < 0).all() and (g1[1] > 0).all()              # TDPO1: raise the chosen KL, lower the rejected
    assert (g2[0] == 0).all()                                   # TDPO2: no gradient through the chosen KL
    torch.testing.assert_close(g2[1], g1[1])                    # the rejected KL's gradient is TDPO1's


def test_keys_are_checked():
    with pytest.raises(ConfigError, match="algo.variant"):
        tdpo("algo.variant=tdpo3")
    with pytest.raises(ConfigError, match="algo.alpha=0.5: algo.variant=tdpo1 has no α"):
        tdpo("algo.variant=tdpo1")
    with pytest.raises(ConfigError, match="algo.beta=0"):
        tdpo("algo.beta=0")
    assert rlx.compose(["algo=tdpo"]).data.name == "arithmetic_pref"


# ---------------------------------------------------------------- the trainer's sequential KL


def make_trainer(tmp_path, *overrides):
    cfg = rlx.compose([*FAST, "hardware.num_threads=1", "algo=tdpo", "data.prompts_per_step=3",
                       "data.responses_per_prompt=3", *overrides])
    tr = TRAINERS.get("offline")(cfg, tmp_path)
    torch.manual_seed(1)
    with torch.no_grad():   # move the policy away from the reference so that the KLs are not 0
        for p in tr.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return tr


def one_batch(tr):
    records = tr.data.train_batch(0, tr.cfg.data.prompts_per_step)
    rows = layout_rows(records, tr.algo.layout)
    return records, rows, *tr.sequences("train", records, rows)


def test_sequential_kl_matches_torch_distributions(tmp_path):
    tr = make_trainer(tmp_path)
    _, _, main, _, _, _ = one_batch(tr)
    logps, _, seq_kl = tr.seq_logps(tr.model, main.seqs, tr.kl_ref)
    assert seq_kl.requires_grad and seq_kl.shape == logps.shape == (len(main.seqs),)
    want_kl, want_lp = [], []
    with torch.no_grad():
        for prompt, response in main.seqs:   # one unpadded sequence at a time, transformers' own forward
            ids = torch.tensor([prompt + response])
            P, R = len(prompt), len(response)
            pol = Categorical(logits=tr.model(input_ids=ids).logits[0, P - 1:P + R - 1].float())
            ref = Categorical(logits=tr.ref(input_ids=ids).logits[0, P - 1:P + R - 1].float())
            want_kl.append(kl_divergence(ref, pol).sum())   # KL(π_ref ‖ π_θ), summed over the response tokens
            want_lp.append(pol.log_prob(torch.tensor(response)).sum())
    torch.testing.assert_close(seq_kl.detach(), torch.stack(want_kl), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(logps.detach(), torch.stack(want_lp), atol=1e-5, rtol=1e-4)
    assert (seq_kl > 0).all()
    seq_kl.sum().backward()   # gradient through π_θ only: the reference forward ran without it
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tr.model.parameters())
    assert all(p.grad is None for p in tr.ref.parameters())


@pytest.mark.parametrize("variant", ["tdpo2", "tdpo1"])
def test_gradient_does_not_depend_on_micro_batch(tmp_path, variant):
    tr = make_trainer(tmp_path, f"algo.variant={variant}", f"algo.alpha={0.5 if variant == 'tdpo2' else 1}")
    records, rows, main, index, kl, kl_index = one_batch(tr)
    grads = []
    for micro in (64, 4):   # 9 sequences: one pass, then 3 micro-batches with the two-pass accumulation
        tr.cfg.trainer.micro_batch_size = micro
        tr.update(main, index, records, rows, tr.reference(main), None, kl, kl_index)
        grads.append(torch.cat([p.grad.flatten() for p in tr.model.parameters()]))
        tr.optim.zero_grad(set_to_none=True)
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[1], grads[0], atol=1e-6, rtol=1e-5)
    # the KL terms carry gradient: without them (α = 0, TDPO2 = DPO) the gradient differs
    if variant == "tdpo2":
        tr.algo = dataclasses.replace(tr.algo, alpha=0.0)
        tr.update(main, index, records, rows, tr.reference(main), None, kl, kl_index)
        dpo = torch.cat([p.grad.flatten() for p in tr.model.parameters()])
        assert (dpo - grads[0]).abs().max() > 1e-6


# ---------------------------------------------------------------- a real run


@pytest.mark.slow
def test_tdpo_preset_two_steps(tmp_path):
    run_dir = tmp_path / "run"
    rlx.run(rlx.compose(["algo=tdpo", "trainer.steps=2", "data.prompts_per_step=4", *FAST, "hardware.num_threads=1"]),
            run_dir=run_dir)
    rows = read_metrics(run_dir)
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert "eval/arithmetic_pref/pref_accuracy" in rows[0] and "eval/arithmetic/accuracy" in rows[-1]
    first, second = rows[1], rows[2]
    # first step: π_θ = π_ref, so both sequential KLs are 0, u = δ = 0 and L = log 2, with no reward margin
    assert first["loss/total"] == pytest.approx(math.log(2), abs=1e-5)
    assert first["tdpo/seq_kl_chosen"] == pytest.approx(0.0, abs=1e-6)
    assert first["tdpo/seq_kl_rejected"] == pytest.approx(0.0, abs=1e-6)
    assert first["pref/margin"] == pytest.approx(0.0, abs=1e-5)
    # the update moved the policy: the second step sees positive KLs and a loss other than log 2
    assert second["tdpo/seq_kl_chosen"] > 0 and second["tdpo/seq_kl_rejected"] > 0
    assert abs(second["loss/total"] - math.log(2)) > 1e-6
