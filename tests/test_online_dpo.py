"""Online / iterative DPO (rlx/algos/online_dpo.py) and SPO (rlx/algos/spo.py): pair selection, the DPO loss on the
pairs and SPO's win rates by hand; the invariants (π_θ = π_ref gives log 2, a group without a pair gives nothing,
win rates average ½, SPO on a binary reward is a multiple of Dr. GRPO); the reference refresh; 3-step runs of both
presets through rlx.run."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import FAST, algo_batch, loss_inputs, read_metrics
from omegaconf import OmegaConf

import rlx
from rlx.algos.dpo import dpo_loss
from rlx.algos.dr_grpo import dr_grpo_advantages
from rlx.algos.online_dpo import OnlineDPO, online_dpo_loss, pair_labels, select_pairs
from rlx.algos.spo import SPO, score_preferences, win_rates
from rlx.config import ConfigError
from rlx.trainers import reference

LOG2 = math.log(2.0)
T_, F_ = True, False


def build(name, *overrides, **keys):
    """The preset's algorithm (command-line ``overrides``), with ``keys`` set on the built node."""
    return rlx.build("algo", OmegaConf.merge(rlx.compose([f"algo={name}", *overrides]).algo, keys))


# ---------------------------------------------------------------- online DPO: pairs by hand


def test_pairs_from_group_rewards_with_ties():
    rewards = torch.tensor([[1.0, 0.0, 1.0, 0.5],      # best: 1 at 0 and 2 → the first (0); worst: 0 at 1
                            [0.3, 0.3, 0.3, 0.3],      # all equal: no pair
                            [0.0, 2.0, 2.0, -1.0]])    # best: 2 at 1 and 2 → 1; worst: −1 at 3
    mask, has_pair = select_pairs(rewards)
    assert mask.tolist() == [[T_, T_, F_, F_], [F_, F_, F_, F_], [F_, T_, F_, T_]]
    assert has_pair.tolist() == [T_, F_, T_]
    a = build("online_dpo", group_size=4)
    assert a.keep(rewards).tolist() == [T_, F_, T_]
    kept, m = a.keep_samples(rewards)
    assert torch.equal(kept, mask) and m["online_dpo/no_pair_frac"] == pytest.approx(1 / 3)   # 1 group of 3
    # the kept rows in sampling order: [1, 0 | 2, −1] → y_w is the second row of pair 1, the first of pair 2
    assert pair_labels(torch.tensor([1.0, 0.0, 2.0, -1.0])).tolist() == [T_, F_, T_, F_]
    assert pair_labels(torch.tensor([0.0, 1.0, 2.0, -1.0])).tolist() == [F_, T_, T_, F_]


def test_no_group_with_a_pair():
    # every group tied (a reward that cannot tell the samples apart): nothing is kept, the share without a pair is 1
    rewards = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    a = build("online_dpo", group_size=2)
    kept, m = a.keep_samples(rewards)
    assert not a.keep(rewards).any() and not kept.any() and m["online_dpo/no_pair_frac"] == 1.0
    with pytest.raises(ValueError, match="equal rewards"):   # a tied pair never reaches the advantages
        a.advantages(algo_batch(torch.tensor([1.0, 1.0]), torch.ones(2, 1, dtype=torch.bool)))


def _two_pairs():
    """Two pairs of two-token responses (rows 0–1, 2–3), β = 0.5. Sequence sums log π_θ − log π_ref:
    row 0 (rejected, r = 0): (−1 −1) − (−1.5 −1.5) = +1;  row 1 (chosen, r = 1): (−0.5 −0.5) − (−1 −2) = +2
    row 2 (chosen, r = 2):   (−1 −2) − (−1 −2) = 0;       row 3 (rejected, r = −1): (−0.5 −0.5) − (−1 −2) = +2"""
    logp = torch.tensor([[-1.0, -1.0], [-0.5, -0.5], [-1.0, -2.0], [-0.5, -0.5]])
    ref = torch.tensor([[-1.5, -1.5], [-1.0, -2.0], [-1.0, -2.0], [-1.0, -2.0]])
    return logp, ref, torch.ones(4, 2, dtype=torch.bool), torch.tensor([0.0, 1.0, 2.0, -1.0])


def test_dpo_loss_of_two_pairs_by_hand():
    logp, ref, mask, rewards = _two_pairs()
    logp.requires_grad_(True)
    loss, m = online_dpo_loss(logp, ref, mask, pair_labels(rewards), beta=0.5)
    # pair 1: h = 2 − 1 = 1, βh = 0.5: −log σ(0.5) = log(1 + e^−0.5) = 0.4740770
    # pair 2: h = 0 − 2 = −2, βh = −1: −log σ(−1) = log(1 + e) = 1.3132617;  mean = 0.8936693
    assert loss.item() == pytest.approx(0.8936693, abs=1e-6)
    loss.backward()
    # dL/dlogp on every token of y_w = −β·σ(−βh)/2 pairs: pair 1 −0.5·σ(−0.5)/2 = −0.5·0.3775407/2 = −0.0943852,
    # pair 2 −0.5·σ(1)/2 = −0.5·0.7310586/2 = −0.1827647; y_l gets the opposite
    g = [-0.0943852, -0.1827647]
    want = torch.tensor([[-g[0]] * 2, [g[0]] * 2, [g[1]] * 2, [-g[1]] * 2])
    torch.testing.assert_close(logp.grad, want, atol=1e-6, rtol=0)
    # implicit rewards β·(log π_θ − log π_ref): pair 1 chosen 1.0 > rejected 0.5; pair 2 chosen 0 < rejected 1.0
    assert m["pref/accuracy"] == 0.5 and m["pref/margin"] == pytest.approx(((1 - 0.5) + (0 - 1)) / 2)
    assert m["logps/chosen"] == pytest.approx((-1 - 3) / 2) and m["logps/rejected"] == pytest.approx((-2 - 1) / 2)


def test_the_algorithm_is_dpo_loss_on_its_pairs_and_micro_batches_add_up():
    logp, ref, mask, rewards = _two_pairs()
    a = build("online_dpo", "algo.beta=0.5")
    adv, m = a.advantages(algo_batch(rewards, mask))
    assert adv.tolist() == [[-1.0] * 2, [1.0] * 2, [1.0] * 2, [-1.0] * 2]   # +1 on y_w, −1 on y_l
    assert m["online_dpo/reward_gap"] == pytest.approx(((1 - 0) + (2 + 1)) / 2)
    whole, _ = a.loss(logp, loss_inputs(logp, adv, mask, ref_logp=ref))
    s, r = logp.sum(-1), ref.sum(-1)   # rlx.algos.dpo's loss on (chosen, rejected) = rows (1, 0) and (2, 3)
    want, _ = dpo_loss(s[[1, 2]], s[[0, 3]], r[[1, 2]], r[[0, 3]], beta=0.5)
    assert whole.item() == pytest.approx(want.item())
    # two micro-batches of one pair each, normalised by the mini-batch's 2 pairs: 0.4740770/2 + 1.3132617/2
    mb = loss_inputs(logp, adv, mask, ref_logp=ref)
    parts = [online_dpo_loss(logp[i:i + 2], ref[i:i + 2], mask[i:i + 2], adv[i:i + 2, 0] > 0, beta=0.5,
                             num_pairs=mb.num_seqs // 2)[0] for i in (0, 2)]
    assert sum(p.item() for p in parts) == pytest.approx(whole.item())


def test_policy_equal_to_reference_gives_log_2():
    g = torch.Generator().manual_seed(0)
    logp = -torch.rand(6, 3, generator=g) * 3
    mask = torch.arange(3).unsqueeze(0) < torch.randint(1, 4, (6, 1), generator=g)
    for beta in (0.1, 0.5, 2.0):   # h = 0 for every pair: −log σ(0) = log 2 whatever β
        loss, m = online_dpo_loss(logp, logp, mask, torch.tensor([T_, F_, F_, T_, T_, F_]), beta=beta)
        assert loss.item() == pytest.approx(LOG2) and m["pref/accuracy"] == 0.5   # ties count ½


def test_a_micro_batch_that_splits_a_pair_is_refused():
    logp, ref, mask, _ = _two_pairs()
    with pytest.raises(ValueError, match="whole pairs"):
        online_dpo_loss(logp[:3], ref[:3], mask[:3], torch.tensor([F_, T_, T_]), beta=0.5)
    with pytest.raises(ValueError, match="whole pairs"):   # rows 0 and 1 both chosen: not a pair
        online_dpo_loss(logp, ref, mask, torch.tensor([T_, T_, F_, F_]), beta=0.5)


def test_config_checks_name_the_key():
    a = build("online_dpo")
    assert a.requires == {"ref_logp"} and not a.takes_is_weights and (a.group_size, a.ref_update_every) == (8, 0)
    with pytest.raises(ConfigError, match="trainer.mini_batch_size=32: .* null or >= 64"):
        rlx.compose(["algo=online_dpo", "trainer.mini_batch_size=32"])   # 32 prompts: up to 64 rows of pairs
    with pytest.raises(ConfigError, match="trainer.micro_batch_size=3: must be even"):   # 3 divides N = 3·8
        rlx.compose(["algo=online_dpo", "trainer.micro_batch_size=3", "data.prompts_per_step=3"])
    with pytest.raises(ConfigError, match="hardware.strategy=ddp"):
        rlx.compose(["algo=online_dpo", "hardware=ddp"])
    with pytest.raises(ConfigError, match="algo.beta=0.0: must be > 0"):
        build("online_dpo", "algo.beta=0.0")
    with pytest.raises(ConfigError, match="algo.ref_update_every=-1"):
        build("online_dpo", "algo.ref_update_every=-1")


def test_reference_refresh_schedule():
    assert [s for s in range(1, 9) if build("online_dpo", "algo.ref_update_every=3").refresh_reference(s)] == [4, 7]
    assert not any(build("online_dpo").refresh_reference(s) for s in range(1, 9))   # 0: a fixed reference


def test_refresh_copies_the_policy_into_the_reference(tiny):
    from rlx.models import make_reference
    from rlx.runtime.speed import bf16_linear_reference

    model, _ = tiny
    for bf16 in (False, True):
        policy = make_reference(model).train()
        for p in policy.parameters():
            p.requires_grad_(True)
        ref = make_reference(policy)
        if bf16:
            assert bf16_linear_reference(ref, policy) > 0
        with torch.no_grad():
            for p in policy.parameters():
                p.add_(0.01)
        reference.refresh(ref, policy)
        weights = policy.state_dict()
        for k, r in ref.state_dict().items():
            assert torch.equal(r, weights[k].to(r.dtype)), k
        assert not any(p.requires_grad for p in ref.parameters())
    assert "LoRA" in reference.refreshable(object())


# ---------------------------------------------------------------- SPO: win rates by hand


def test_win_rates_of_a_group_with_ties():
    rewards = torch.tensor([[1.0, 0.0, 1.0, 0.5]])
    w = win_rates(score_preferences(rewards), torch.ones(1, 4, dtype=torch.bool))
    # sample 0: beats 0 (1), ties 1 (½), beats 0.5 (1) → 2.5/3; sample 1 loses all → 0; sample 2 as sample 0;
    # sample 3: loses to 1, beats 0, loses to 1 → 1/3. Σ = 5/6 + 0 + 5/6 + 1/3 = 2 = G/2
    torch.testing.assert_close(w, torch.tensor([[2.5 / 3, 0.0, 2.5 / 3, 1 / 3]]))
    adv, m = build("spo", group_size=4).advantages(algo_batch(rewards.view(-1), torch.ones(4, 2, dtype=torch.bool)))
    # A = w − ½ = [1/3, −½, 1/3, −1/6] on every token; 1 tied comparison of 6 unordered pairs (12 ordered: 2)
    torch.testing.assert_close(adv[:, 0], torch.tensor([1 / 3, -0.5, 1 / 3, -1 / 6]))
    assert m["spo/tie_frac"] == pytest.approx(2 / 12)


def test_a_failed_sample_is_neither_scored_nor_an_opponent():
    # rewards [1, x, 0, 0.5], the second failed: over the 3 scored, w = [(1 + 1)/2, 0, 0, (0 + 1)/2] = [1, 0, 0, ½]
    mask = torch.tensor([[T_], [F_], [T_], [T_]])
    adv, _ = build("spo", group_size=4).advantages(algo_batch(torch.tensor([1.0, 9.0, 0.0, 0.5]), mask))
    torch.testing.assert_close(adv[:, 0], torch.tensor([0.5, 0.0, -0.5, 0.0]))


def test_win_rates_average_one_half_and_binary_rewards_give_scaled_dr_grpo():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (5, 6), generator=g).float()
    w = win_rates(score_preferences(scores), torch.ones(5, 6, dtype=torch.bool))
    torch.testing.assert_close(w.mean(-1), torch.full((5,), 0.5))   # P(i, j) + P(j, i) = 1 for every pair
    # binary rewards, G = 4: A^SPO = G/(2(G−1))·(r − r̄) = (2/3)·A^DrGRPO, e.g. [1, 1, 1, 0]: winners (1 + ½ + ½)/3 − ½
    # = 1/6 = (2/3)(1 − 0.75), the loser 0 − ½ = (2/3)(0 − 0.75); an all-equal group gets 0
    r = torch.tensor([1.0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0])
    adv, _ = build("spo", group_size=4).advantages(algo_batch(r, torch.ones(12, 1, dtype=torch.bool)))
    torch.testing.assert_close(adv[:, 0], dr_grpo_advantages(r, 4) * 2 / 3)


def test_spo_preset_builds():
    a = build("spo")
    assert isinstance(a, SPO) and a.group_size == 8 and a.requires == frozenset()   # β = 0: no reference model
    assert a.takes_is_weights   # GRPO's per-token surrogate
    assert isinstance(build("online_dpo"), OnlineDPO)


# ---------------------------------------------------------------- runs through rlx.run

RUN = ["trainer.progress=false", "trainer.eval_every=0", "hardware.num_threads=1", "data.prompts_per_step=4",
       "data.eval_size=16"]


def _run(tmp_path, name, *overrides):
    rlx.run(rlx.compose([*RUN, *overrides]), run_dir=tmp_path / name)
    return read_metrics(tmp_path / name)


@pytest.fixture(scope="module")
def fixed_ref(tmp_path_factory, warm_tiny):
    """3 steps of the online_dpo preset on the default task, warm-started model (a reward signal), fixed reference."""
    return _run(tmp_path_factory.mktemp("online_dpo"), "fixed", "algo=online_dpo", f"model.path={warm_tiny}",
                "trainer.steps=3")


def test_online_dpo_runs_three_steps(fixed_ref):
    rows = fixed_ref
    assert [r["step"] for r in rows] == [0, 1, 2, 3] and "eval/arithmetic/accuracy" in rows[-1]
    updated = [r for r in rows[1:] if r["groups/kept_frac"] > 0]
    assert updated, "no step had a pair"
    for r in updated:
        assert {"pref/accuracy", "pref/margin", "logps/chosen", "policy/kl_ref", "online_dpo/reward_gap"} <= r.keys()
        assert r["online_dpo/no_pair_frac"] == pytest.approx(1 - r["groups/kept_frac"])
    if rows[1]["groups/kept_frac"] > 0:   # step 1: π_θ = π_ref (the initial model): log 2 and a tie on every pair
        assert rows[1]["loss/total"] == pytest.approx(LOG2, abs=1e-5) and rows[1]["pref/accuracy"] == 0.5


def test_a_step_without_pairs_makes_no_update(tmp_path):
    # a reward of 0 for every sample: no group has a pair; every step ends on the loop's empty-batch path
    rows = _run(tmp_path, "ties", "algo=online_dpo", "reward.terms.correct.weight=0", "reward.terms.format.weight=0",
                "trainer.steps=2", *FAST)
    for r in rows[1:]:
        assert r["groups/kept_frac"] == 0.0 and r["loss/total"] == 0.0 and r["optim/grad_norm"] == 0.0
        assert r.get("online_dpo/no_pair_frac", 1.0) == 1.0   # logged on such steps once the loop passes it on


def test_spo_runs_three_steps(tmp_path, warm_tiny):
    rows = _run(tmp_path, "spo", "algo=spo", f"model.path={warm_tiny}", "trainer.steps=3")
    assert [r["step"] for r in rows] == [0, 1, 2, 3] and "eval/arithmetic/accuracy" in rows[-1]
    for r in rows[1:]:
        assert 0.0 <= r["spo/tie_frac"] <= 1.0 and "loss/total" in r and "policy/clip_frac" in r


def test_a_reference_refreshed_every_step_gives_log_2_every_step(tmp_path, warm_tiny, fixed_ref):
    rows = _run(tmp_path, "every", "algo=online_dpo", f"model.path={warm_tiny}", "trainer.steps=3",
                "algo.ref_update_every=1")
    # π_ref ← π_θ before every step, and one on-policy update per step: the loss is taken at π_θ = π_ref
    updated = [r for r in rows[1:] if r["groups/kept_frac"] > 0]
    assert updated
    for r in updated:
        assert r["loss/total"] == pytest.approx(LOG2, abs=1e-5) and r["policy/kl_ref"] == pytest.approx(0, abs=1e-6)
    # the fixed reference drifts from the policy after its first update
    assert any(r["policy/kl_ref"] > 1e-6 for r in fixed_ref[2:] if r["groups/kept_frac"] > 0)


def test_resume_keeps_the_refreshed_reference(tmp_path, warm_tiny):
    args = ["algo=online_dpo", f"model.path={warm_tiny}", "algo.ref_update_every=2"]
    full = _run(tmp_path, "full", *args, "trainer.steps=4")
    assert full[3]["policy/kl_ref"] == pytest.approx(0, abs=1e-6)   # refreshed before step 3: π_ref = π_θ there
    _run(tmp_path, "cut", *args, "trainer.steps=3", "trainer.save_every=3")
    # step 4 uses the reference refreshed before step 3, which only the checkpoint holds
    cut = _run(tmp_path, "cut", *args, "trainer.steps=4", "trainer.resume=true")
    assert cut[-1]["step"] == 4 and "policy/kl_ref" in full[-1], "step 4 had no pair"
    for key in ("loss/total", "policy/kl_ref", "reward/mean"):
        assert cut[-1][key] == pytest.approx(full[-1][key], rel=1e-6, abs=1e-9), key
