"""The critic-free REINFORCE family: KL in the reward, RLOO, REINFORCE++(-baseline), ReMax, REINFORCE,
Reinforce-Rej, RAFT, RAFT++. Hand-computed examples (arithmetic in the comments) and invariants."""

import math

import pytest
import torch
from conftest import algo_batch, loss_inputs

import rlx
from rlx.algos.kl_control import (
    KLController,
    adaptive_kl_coef,
    kl_penalized_token_rewards,
    last_token_mask,
    returns_to_go,
    sequence_kl,
)
from rlx.algos.raft import best_of_group, raft_loss
from rlx.algos.reinforce import pg_loss
from rlx.algos.reinforce_pp import batch_normalize, reinforce_pp_advantages
from rlx.algos.reinforce_pp_baseline import reinforce_pp_baseline_advantages
from rlx.algos.reinforce_rej import non_uniform_groups
from rlx.algos.remax import remax_advantages
from rlx.algos.rloo import rloo_advantages, rloo_baseline
from rlx.ops import group_normalize

FAMILY = ["reinforce", "reinforce_rej", "rloo", "reinforce_pp", "reinforce_pp_baseline", "remax", "raft", "raft_pp"]
T_, F_ = True, False


def algo(name, *overrides):
    return rlx.build("algo", rlx.compose([f"algo={name}", *overrides]).algo)


# ---------------------------------------------------------------- KL inside the reward (kl_control)

MASK = torch.tensor([[T_, T_, T_, F_], [T_, F_, F_, F_], [F_, F_, F_, F_]])


def test_last_token_mask():
    # lengths 3, 1, 0 -> last valid index 2, 0, none
    assert last_token_mask(MASK).tolist() == [[F_, F_, T_, F_], [T_, F_, F_, F_], [F_, F_, F_, F_]]


def test_kl_in_reward_placement():
    # algorithms.md §8.6: -beta*KL at every valid token, the score only at the last valid one, padding 0
    scores = torch.tensor([1.0, 0.5, 7.0])
    kl = torch.tensor([[0.1, 0.2, 0.3, 9.0], [0.4, 9.0, 9.0, 9.0], [9.0, 9.0, 9.0, 9.0]])  # 9 = junk at padding
    r = kl_penalized_token_rewards(scores, kl, MASK, kl_coef=0.5)
    # row 0: -0.05, -0.10, -0.15 + 1 = 0.85, pad 0;  row 1: -0.2 + 0.5 = 0.3;  row 2 (empty): all 0
    expected = torch.tensor([[-0.05, -0.10, 0.85, 0.0], [0.3, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(r, expected)
    # without KL the reward is 0 before T and the score at T (algorithms.md §2.1)
    r0 = kl_penalized_token_rewards(scores, kl, MASK, kl_coef=0.0)
    assert r0[0].tolist() == [0.0, 0.0, 1.0, 0.0] and r0[1].tolist() == [0.5, 0.0, 0.0, 0.0]


def test_returns_to_go_by_hand_and_sequence_identity():
    r = torch.tensor([[-0.05, -0.10, 0.85, 0.0], [0.3, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    # gamma 1: G2 = 0.85, G1 = 0.85 - 0.10 = 0.75, G0 = 0.75 - 0.05 = 0.70
    torch.testing.assert_close(returns_to_go(r, MASK)[0], torch.tensor([0.70, 0.75, 0.85, 0.0]))
    # gamma 0.5: G1 = -0.1 + 0.5*0.85 = 0.325, G0 = -0.05 + 0.5*0.325 = 0.1125
    torch.testing.assert_close(returns_to_go(r, MASK, 0.5)[0], torch.tensor([0.1125, 0.325, 0.85, 0.0]))
    # invariant (gamma 1): G_0 = score - beta * sum_t KL_t, the KL-penalised sequence reward RLOO uses
    g = torch.Generator().manual_seed(0)
    mask = torch.arange(5).expand(6, 5) < torch.randint(1, 6, (6, 1), generator=g)   # lengths 1..5
    kl, scores = torch.rand(6, 5, generator=g), torch.rand(6, generator=g)
    g0 = returns_to_go(kl_penalized_token_rewards(scores, kl, mask, 0.3), mask)[:, 0]
    torch.testing.assert_close(g0, scores - 0.3 * sequence_kl(kl, mask))


def test_adaptive_kl_controller_by_hand():
    # Ziegler et al.: e = clip(KL/target - 1, -0.2, 0.2); beta *= 1 + e * n_steps / horizon
    assert adaptive_kl_coef(0.1, 9.0, 6.0, 1000, 100) == pytest.approx(0.1 * (1 + 0.2 * 0.1))    # e = 0.5 -> 0.2
    assert adaptive_kl_coef(0.1, 3.0, 6.0, 1000, 100) == pytest.approx(0.1 * (1 - 0.2 * 0.1))    # e = -0.5 -> -0.2
    assert adaptive_kl_coef(0.1, 6.6, 6.0, 1000, 100) == pytest.approx(0.1 * (1 + 0.1 * 0.1))    # e = 0.1
    assert adaptive_kl_coef(0.1, 6.0, 6.0, 1000, 100) == pytest.approx(0.1)                      # on target
    fixed = KLController(0.05)
    assert fixed.update(100.0, 256) == 0.05


def test_kl_controller_resume_is_exact():
    a = KLController(0.1, adaptive=True, target=2.0, horizon=50.0)
    for kl in (5.0, 3.0, 0.5):
        a.update(kl, 10)
    b = KLController(0.1, adaptive=True, target=2.0, horizon=50.0)
    b.load_state_dict(a.state_dict())
    assert b.value == a.value != 0.1
    assert b.update(4.0, 10) == a.update(4.0, 10)


# ---------------------------------------------------------------- RLOO

def test_rloo_by_hand():
    # rewards [1, 0, 2]: baselines (0+2)/2 = 1, (1+2)/2 = 1.5, (1+0)/2 = 0.5 -> A = [0, -1.5, +1.5]
    r = torch.tensor([1.0, 0.0, 2.0])
    torch.testing.assert_close(rloo_baseline(r, 3), torch.tensor([1.0, 1.5, 0.5]))
    torch.testing.assert_close(rloo_advantages(r, 3), torch.tensor([0.0, -1.5, 1.5]))
    # subtracted, not divided (algorithms.md §7): dividing would give 1/1 = 1, not 0, for the first sample


def test_rloo_invariants():
    g = torch.Generator().manual_seed(1)
    G, r = 4, torch.rand(5 * 4, generator=g)
    groups = r.view(-1, G)
    loo = torch.stack([torch.stack([torch.cat([grp[:i], grp[i + 1:]]).mean() for i in range(G)]) for grp in groups])
    torch.testing.assert_close(rloo_baseline(r, G), loo.reshape(-1))   # baseline = mean of the *other* samples
    # A = G/(G-1) * (r - group mean): a rescaled Dr.GRPO advantage
    torch.testing.assert_close(rloo_advantages(r, G), G / (G - 1) * group_normalize(r, G, scale=False))


# ---------------------------------------------------------------- REINFORCE++ and its baseline variant

def test_reinforce_pp_batch_normalisation_by_hand():
    # scores [1, 0]; row 0 has 2 tokens, row 1 one; no KL -> returns [1, 1 | 0]
    # valid values 1, 1, 0: mean 2/3, unbiased var ((1/3)^2*2 + (2/3)^2)/2 = 1/3, std 0.57735
    # -> (1 - 2/3)/0.57735 = 0.57735, (0 - 2/3)/0.57735 = -1.1547; padding stays 0
    mask = torch.tensor([[T_, T_], [T_, F_]])
    adv = reinforce_pp_advantages(torch.tensor([1.0, 0.0]), mask)
    torch.testing.assert_close(adv, torch.tensor([[0.57735, 0.57735], [-1.15470, 0.0]]), atol=1e-4, rtol=0)


def test_reinforce_pp_kl_returns_by_hand():
    # one sample, KL [0.2, 0.4], beta 0.5: token rewards [-0.1, -0.2 + 1] -> returns [0.7, 0.8]
    # mean 0.75, unbiased std sqrt(2 * 0.05^2 / 1) = 0.070711 -> [-0.70711, +0.70711]
    mask = torch.tensor([[T_, T_]])
    adv = reinforce_pp_advantages(torch.tensor([1.0]), mask, torch.tensor([[0.2, 0.4]]), kl_coef=0.5)
    torch.testing.assert_close(adv, torch.tensor([[-0.70711, 0.70711]]), atol=1e-4, rtol=0)


def test_batch_normalize_closed_form():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(7, 5, generator=g) * 3 + 2
    mask = torch.arange(5).expand(7, 5) < torch.randint(1, 6, (7, 1), generator=g)
    out = batch_normalize(x, mask)
    v = x[mask]
    torch.testing.assert_close(out[mask], (v - v.mean()) / v.std(), atol=1e-5, rtol=1e-5)
    assert out[mask].mean().abs() < 1e-5 and abs(out[mask].std().item() - 1) < 1e-5
    assert (out[~mask] == 0).all()


def test_reinforce_pp_baseline_by_hand():
    # G = 2, scores [1, 0 | 1, 1], one token each: centred [0.5, -0.5 | 0, 0]
    # batch mean 0, unbiased var (0.25 + 0.25)/3 = 1/6, std 0.40825 -> [1.2247, -1.2247, 0, 0]
    mask = torch.ones(4, 1, dtype=torch.bool)
    adv = reinforce_pp_baseline_advantages(torch.tensor([1.0, 0.0, 1.0, 1.0]), mask, group_size=2)
    torch.testing.assert_close(adv.squeeze(-1), torch.tensor([1.2247, -1.2247, 0.0, 0.0]), atol=1e-4, rtol=0)
    # invariant: with one token per sample and no KL it is GRPO's centring with the *batch* std
    r = torch.tensor([0.0, 1.0, 1.1, 0.1, 1.0, 1.0, 0.0, 1.1])
    centred = group_normalize(r, 4, scale=False)
    torch.testing.assert_close(reinforce_pp_baseline_advantages(r, torch.ones(8, 1, dtype=torch.bool), 4).squeeze(-1),
                               centred / centred.std(), atol=1e-5, rtol=1e-5)


def test_reinforce_pp_algorithm_reads_old_and_ref_logprobs():
    # through the Algorithm: KL_t = log pi_old - log pi_ref (k1), beta = kl_coef, metrics under its prefix
    a = algo("reinforce_pp", "algo.kl_coef=0.5", "algo.adaptive_kl=true", "algo.kl_target=1.0", "algo.kl_horizon=10")
    assert {"ref_logp", "old_logp"} <= a.requires and a.group_size == 1
    mask = torch.tensor([[T_, T_]])
    batch = algo_batch(torch.tensor([1.0]), mask, old_logp=torch.tensor([[-1.0, -1.0]]),
                       ref_logp=torch.tensor([[-1.2, -1.4]]))
    adv, metrics = a.advantages(batch)
    # KL = [0.2, 0.4] as in test_reinforce_pp_kl_returns_by_hand
    torch.testing.assert_close(adv, torch.tensor([[-0.70711, 0.70711]]), atol=1e-4, rtol=0)
    assert metrics["reinforce_pp/kl_coef"] == 0.5 and metrics["reinforce_pp/kl_reward"] == pytest.approx(0.6)
    # sequence KL 0.6 < target 1: e = -0.4 -> -0.2, beta = 0.5 * (1 - 0.2 * 1/10) = 0.49; it round-trips
    assert a.kl_ctl.value == pytest.approx(0.49)
    b = algo("reinforce_pp", "algo.kl_coef=0.5", "algo.adaptive_kl=true", "algo.kl_target=1.0", "algo.kl_horizon=10")
    b.load_state_dict(a.state_dict())
    assert b.kl_ctl.value == a.kl_ctl.value


def test_reinforce_pp_preset_keeps_n_comparable():
    grpo, rpp = rlx.compose(["algo=grpo"]), rlx.compose(["algo=reinforce_pp"])
    assert rpp.algo.group_size == 1
    assert rpp.data.prompts_per_step * 1 == grpo.data.prompts_per_step * grpo.algo.group_size   # 256 = 32 * 8


# ---------------------------------------------------------------- ReMax

def test_remax_by_hand():
    # r [1, 0, 1.1], greedy [1, 1, NaN] -> A = [1-1, 0-1, 0 (unscorable greedy: no signal)]
    adv = remax_advantages(torch.tensor([1.0, 0.0, 1.1]), torch.tensor([1.0, 1.0, math.nan]))
    torch.testing.assert_close(adv, torch.tensor([0.0, -1.0, 0.0]))


def test_remax_algorithm_uses_the_batch_greedy_reward():
    a = algo("remax")
    assert a.requires == {"greedy_baseline"} and a.group_size == 1
    g = torch.Generator().manual_seed(3)
    r, rg = torch.rand(6, generator=g), torch.rand(6, generator=g)
    mask = torch.tensor([[T_, T_, F_]] * 6)
    adv, metrics = a.advantages(algo_batch(r, mask, greedy_rewards=rg))
    torch.testing.assert_close(adv[:, 0], r - rg)                    # A = r - r_greedy on every valid token
    torch.testing.assert_close(adv[:, 1], r - rg)
    assert (adv[:, 2] == 0).all()
    assert metrics["remax/greedy_reward"] == pytest.approx(rg.mean().item())


def test_loop_scores_one_greedy_decode_per_prompt(tmp_path):
    # the online loop: batch.greedy_rewards = reward of the greedy decode of each sample's prompt
    from rlx.trainers.online import OnlineTrainer

    cfg = rlx.compose(["algo=remax", "data.prompts_per_step=6", "model.init=random", "trainer.progress=false",
                       "trainer.eval_every=0"])
    trainer = OnlineTrainer(cfg, tmp_path)
    records = trainer.data.train_batch(0, 6)
    batch, _, _ = trainer.rollout()
    out = trainer.engine.generate([r["prompt"] for r in records], n=1, greedy=True)
    fields = {k: [r[k] for r in records] for k in records[0] if k != "prompt"}
    expected = trainer.reward.score([r["prompt"] for r in records], out.texts, **fields)["total"]
    assert batch.greedy_rewards.tolist() == pytest.approx(expected)


# ---------------------------------------------------------------- REINFORCE, Reinforce-Rej

def test_reinforce_rej_drops_exactly_the_uniform_groups():
    # all correct, all wrong, mixed, shaped-but-wrong (format term differs) -> drop, drop, keep, keep
    r = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.1, 0.0, 0.0]])
    assert algo("reinforce_rej").keep(r).tolist() == [F_, F_, T_, T_]
    # invariant: kept <=> the group's rewards have non-zero std (GRPO's frac_zero_std complement)
    g = torch.Generator().manual_seed(4)
    rb = (torch.rand(50, 4, generator=g) < 0.5).float()
    assert torch.equal(non_uniform_groups(rb), rb.std(-1) > 0)
    assert algo("reinforce").keep(r).all()                              # vanilla REINFORCE keeps everything


def test_reinforce_advantage_is_the_reward():
    mask = torch.tensor([[T_, T_], [T_, F_]])
    adv, _ = algo("reinforce").advantages(algo_batch(torch.tensor([1.1, 0.0]), mask))
    torch.testing.assert_close(adv, torch.tensor([[1.1, 1.1], [0.0, 0.0]]))   # A = r, no baseline


# ---------------------------------------------------------------- the shared surrogate

def test_ratio_one_gives_minus_mean_advantage():
    logp = torch.log(torch.tensor([[0.5, 0.25], [0.8, 0.9]])).requires_grad_()
    mask = torch.tensor([[T_, T_], [T_, F_]])
    A = torch.tensor([[1.0, 2.0], [3.0, 99.0]])   # 99 at padding must not count
    loss, _ = pg_loss(logp, logp.detach(), A, mask, loss_agg_mode="token_mean")
    assert loss.item() == pytest.approx(-(1 + 2 + 3) / 3)             # -mean(A) over valid tokens = -2
    loss.backward()
    # REINFORCE gradient: d/dlogp = -A / n_tokens on valid tokens, 0 at padding
    torch.testing.assert_close(logp.grad, torch.tensor([[-1 / 3, -2 / 3], [-1.0, 0.0]]))
    loss_s, _ = pg_loss(logp, logp.detach(), A, mask, loss_agg_mode="seq_mean_token_sum")
    assert loss_s.item() == pytest.approx(-((1 + 2) + 3) / 2)        # sum per sample, mean over samples = -3


# ---------------------------------------------------------------- RAFT, RAFT++

def test_raft_keeps_the_argmax_sample_per_group():
    # min_reward 1.0: group 2's best (0.1) is wrong -> nothing; ties -> first argmax (RAFT) / all (RAFT++)
    r = torch.tensor([[0.0, 1.0, 1.0], [0.1, 0.0, 0.0], [1.1, 1.0, 0.0]])
    assert best_of_group(r, 1.0).tolist() == [[F_, T_, F_], [F_, F_, F_], [T_, F_, F_]]
    assert best_of_group(r, 1.0, keep_ties=True).tolist() == [[F_, T_, T_], [F_, F_, F_], [T_, F_, F_]]
    kept, m = algo("raft").keep_samples(r)
    assert kept.tolist() == best_of_group(r, 1.0).tolist() and m == {"raft/kept_frac": pytest.approx(2 / 9)}
    assert algo("raft_pp").keep_samples(r)[0].tolist() == best_of_group(r, 1.0, keep_ties=True).tolist()
    assert algo("raft").keep(r).tolist() == [T_, F_, T_]
    # invariant: with no threshold, exactly one sample per group and it has the group's max reward
    g = torch.Generator().manual_seed(5)
    rr = torch.rand(20, 8, generator=g)
    m = best_of_group(rr, -math.inf)
    assert (m.sum(-1) == 1).all() and torch.equal(rr[m], rr.max(-1).values)


def test_raft_loss_is_the_nll_and_raft_pp_is_minus_one_at_ratio_one():
    logp = torch.log(torch.tensor([[0.5, 0.25], [0.8, 0.9]]))
    mask = torch.tensor([[T_, T_], [T_, F_]])
    loss, _ = raft_loss(logp, mask, "token_mean")
    # (ln 2 + ln 4 + -ln 0.8) / 3 = (0.6931 + 1.3863 + 0.2231) / 3 = 0.7675
    assert loss.item() == pytest.approx((math.log(2) + math.log(4) - math.log(0.8)) / 3, rel=1e-5)
    a = algo("raft_pp")
    adv, _ = a.advantages(algo_batch(torch.tensor([1.0, 1.1]), mask))
    assert adv[mask].eq(1).all() and adv[~mask].eq(0).all()           # A = 1 on every kept token
    loss_pp, _ = a.loss(logp, loss_inputs(logp, adv, mask))
    assert loss_pp.item() == pytest.approx(-1.0)                       # ratio 1: -mean(A) = -1


def test_raft_pp_clips_the_ratio():
    # A = 1, ratio 1.5 > 1 + 0.2 -> min(1.5, 1.2) = 1.2 and no gradient through the clipped token
    mask = torch.tensor([[T_]])
    logp = torch.log(torch.tensor([[0.6]])).requires_grad_()
    old = torch.log(torch.tensor([[0.4]]))
    loss, m = algo("raft_pp").loss(logp, loss_inputs(old, torch.ones(1, 1), mask))
    assert loss.item() == pytest.approx(-1.2) and m["policy/clip_frac_high"] == 1.0
    loss.backward()
    assert logp.grad.abs().sum() == 0


# ---------------------------------------------------------------- presets

@pytest.mark.parametrize("name", FAMILY)
@pytest.mark.slow
def test_presets_compose_and_build(name):
    a = algo(name)
    assert a.name == name and rlx.compose([f"algo={name}"]).algo.name == name
