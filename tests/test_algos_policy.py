"""The GRPO family (Dr.GRPO, DAPO, GSPO, GSPO-token, GMPO, CISPO) and the shared loss options, on
examples a reader can check by hand, plus one invariant each against a sibling or a closed form."""

import math

import pytest
import torch
from conftest import FAST, algo_batch, loss_inputs, read_metrics, run_cli, run_main

import rlx
from rlx.algos.cispo import cispo_loss
from rlx.algos.dapo import dapo_loss, dynamic_sampling_keep
from rlx.algos.dr_grpo import dr_grpo_advantages, dr_grpo_loss
from rlx.algos.gmpo import gmpo_loss
from rlx.algos.grpo import grpo_advantages, grpo_loss
from rlx.algos.gspo import gspo_loss
from rlx.algos.gspo_token import gspo_token_loss
from rlx.algos.surrogate import clipped_surrogate, entropy_bonus
from rlx.ops import kl_penalty
from rlx.rewards.length import soft_overlong_punishment as overlong_penalty


def _leaf(x):
    return torch.tensor(x, dtype=torch.float32).requires_grad_(True)


def _loss_and_grad(fn, logp, *args, **kw):
    logp = logp.detach().clone().requires_grad_(True)
    loss, m = fn(logp, *args, **kw)
    loss.backward()
    return loss.detach(), logp.grad, m


def _random_batch(n=6, T=5, seed=0, one_token=False):
    """logp, old_logp [n, T], per-row advantages [n, T] and a ragged mask (rows of length 1..T)."""
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(n, T, generator=g) * 2
    logp = old + 0.3 * torch.randn(n, T, generator=g)
    adv = torch.randn(n, 1, generator=g).expand(n, T).contiguous()
    lengths = torch.ones(n, dtype=torch.long) if one_token else torch.randint(1, T + 1, (n,), generator=g)
    mask = torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)
    return logp, old, adv, mask


# ---------------------------------------------------------------- Dr. GRPO


def test_dr_grpo_advantages_and_relation_to_grpo():
    # [1, 0, 2]: mean 1 -> A = [0, −1, +1] (algorithms.md §8.1); no division by std
    assert dr_grpo_advantages(torch.tensor([1.0, 0, 2]), 3).tolist() == [0.0, -1.0, 1.0]
    # group [1, 0, 0, 0]: mean 0.25, unbiased std 0.5 -> Dr.GRPO [0.75, −0.25, ...] = (std + eps)·GRPO
    r = torch.tensor([1.0, 0, 0, 0])
    dr = dr_grpo_advantages(r, 4)
    assert dr.tolist() == pytest.approx([0.75, -0.25, -0.25, -0.25])
    assert dr.tolist() == pytest.approx((grpo_advantages(r, 4, std_eps=1e-4) * (0.5 + 1e-4)).tolist(), abs=1e-6)


def test_dr_grpo_constant_length_aggregation():
    # ratio 1, A = +1 on a 2-token response, −1 on a 1-token response, L_max = 4:
    # Dr.GRPO: Σ_t −A / (n·L_max) = (−1 −1 +1) / (2·4) = −0.125
    # GRPO (seq_mean_token_mean): ((−1 −1)/2 + 1/1) / 2 = 0
    adv = torch.tensor([[1.0, 1.0], [-1.0, 0.0]])
    mask = torch.tensor([[True, True], [True, False]])
    z = torch.zeros(2, 2)
    assert dr_grpo_loss(z, z, adv, mask, max_len=4)[0].item() == pytest.approx(-0.125)
    assert grpo_loss(z, z, adv, mask, loss_agg_mode="seq_mean_token_mean")[0].item() == pytest.approx(0.0)


def test_dr_grpo_equals_grpo_seq_mean_when_every_response_has_length_l_max():
    logp, old, adv, _ = _random_batch(T=4)
    mask = torch.ones(6, 4, dtype=torch.bool)   # every response is L_max = 4 tokens long
    a = _loss_and_grad(dr_grpo_loss, logp, old, adv, mask, max_len=4)
    b = _loss_and_grad(grpo_loss, logp, old, adv, mask, loss_agg_mode="seq_mean_token_mean")
    assert a[0].item() == pytest.approx(b[0].item(), abs=1e-6)
    assert torch.allclose(a[1], b[1], atol=1e-7)


# ---------------------------------------------------------------- DAPO


def test_overlong_penalty_paper_values_and_preset():
    # DAPO eq. 13 with L_max = 20480, L_cache = 4096 (algorithms.md §8.9): 16384 -> 0, 18432 -> −0.5,
    # 20480 -> −1, beyond -> −1; 10000 (short) -> 0
    lengths = torch.tensor([10000, 16384, 18432, 20480, 25000])
    assert overlong_penalty(lengths, 20480, 4096).tolist() == [0.0, 0.0, -0.5, -1.0, -1.0]
    # the preset: L_max = 6, L_cache = 2 -> a 3-digit answer + EOS (4 tokens) goes unpunished
    assert overlong_penalty(torch.tensor([3, 4, 5, 6]), 6, 2).tolist() == [0.0, 0.0, -0.5, -1.0]
    # penalty_factor scales it: 0.5 · (−0.5) = −0.25
    assert overlong_penalty(torch.tensor([5]), 6, 2, penalty_factor=0.5).tolist() == [-0.25]


def test_dynamic_sampling_drops_all_equal_groups():
    # algorithms.md §8.4: G = 10 all max-reward -> all advantages 0 -> group dropped; all wrong: dropped;
    # one right out of ten: kept
    rewards = torch.stack([torch.ones(10), torch.zeros(10), torch.tensor([1.0] + [0.0] * 9)])
    assert grpo_advantages(rewards[0], 10).abs().max().item() == 0.0
    assert dynamic_sampling_keep(rewards).tolist() == [False, False, True]
    dapo = rlx.build("algo", rlx.compose(["algo=dapo"]).algo)
    assert dapo.keep(rewards).tolist() == [False, False, True] and dapo.gen_rounds() == 3
    off = rlx.build("algo", rlx.compose(["algo=dapo", "algo.dynamic_sampling=false"]).algo)
    assert off.keep(rewards).tolist() == [True, True, True] and off.gen_rounds() == 1


def test_dapo_clip_higher_and_token_mean_by_hand():
    # ratio 1.25, A = +1: GRPO (ε = 0.2) clips to 1.2 -> −1.2; DAPO (ε_high = 0.28) does not -> −1.25
    logp, z, adv, mask = torch.log(torch.tensor([[1.25]])), torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1) > 0
    assert grpo_loss(logp, z, adv, mask)[0].item() == pytest.approx(-1.2)
    assert dapo_loss(logp, z, adv, mask)[0].item() == pytest.approx(-1.25)
    # algorithms.md §8.3: responses of 200 and 10 tokens, ratio 1, A = 1: DAPO gives every token
    # d loss / d logp = −1/210; GRPO (seq_mean_token_mean) −(1/200)/2 and −(1/10)/2
    mask = torch.arange(200).unsqueeze(0) < torch.tensor([[200], [10]])
    z, adv = torch.zeros(2, 200), torch.ones(2, 200)
    g = _loss_and_grad(dapo_loss, z, z, adv, mask)[1]
    assert g[0, 0].item() == pytest.approx(-1 / 210) and g[1, 9].item() == pytest.approx(-1 / 210)
    g = _loss_and_grad(grpo_loss, z, z, adv, mask, loss_agg_mode="seq_mean_token_mean")[1]
    assert g[0, 0].item() == pytest.approx(-1 / 400) and g[1, 9].item() == pytest.approx(-1 / 20)


def test_dapo_with_its_parts_off_equals_grpo_token_mean():
    # ε_low = ε_high, no filtering, no overlong term (and no KL) -> GRPO with token-mean aggregation
    dapo = rlx.build("algo", rlx.compose(["algo=dapo", "algo.eps_high=0.2", "algo.dynamic_sampling=false",
                                          "algo.overlong_shaping=false"]).algo)
    grpo = rlx.build("algo", rlx.compose(["algo=grpo", "algo.beta=0.0", "algo.loss_agg_mode=token_mean"]).algo)
    rewards = torch.tensor([1.0, 0, 0, 1, 0.1, 0.1, 0.1, 0.1])   # two groups of 4
    mask = torch.ones(8, 3, dtype=torch.bool)
    shaped, m = dapo.shape_rewards(rewards, mask, 4)
    assert torch.equal(shaped, rewards) and m == {} and dapo.keep(rewards.view(2, 4)).all()
    (a_dapo, _), (a_grpo, _) = dapo.advantages(algo_batch(rewards, mask)), grpo.advantages(algo_batch(rewards, mask))
    assert torch.equal(a_dapo, a_grpo)
    logp, old, _, mask = _random_batch(n=8, T=3, seed=1)
    a = _loss_and_grad(dapo.loss, logp, loss_inputs(old, a_dapo, mask))
    b = _loss_and_grad(grpo.loss, logp, loss_inputs(old, a_grpo, mask))
    assert a[0].item() == pytest.approx(b[0].item()) and torch.allclose(a[1], b[1])


def test_dapo_overlong_shaping_in_the_algorithm():
    dapo = rlx.build("algo", rlx.compose(["algo=dapo"]).algo)
    # lengths 3, 5, 6 with L_max = 6, L_cache = 2: rewards 1 + 0, 1 − 0.5, 0 − 1
    mask = torch.arange(6).unsqueeze(0) < torch.tensor([[3], [5], [6]])
    shaped, m = dapo.shape_rewards(torch.tensor([1.0, 1.0, 0.0]), mask, 6)
    assert shaped.tolist() == [1.0, 0.5, -1.0]
    assert m["dapo/overlong_penalty"] == pytest.approx(-0.5) and m["dapo/overlong_frac"] == pytest.approx(2 / 3)


# ---------------------------------------------------------------- GSPO, GSPO-token


def test_gspo_sequence_ratio_by_hand():
    # one 2-token response, token log-ratios 0.2 and −0.1: log s = 0.05, s = e^0.05 = 1.05127
    logp, old = torch.tensor([[0.2, -0.1]]), torch.zeros(1, 2)
    adv, mask = torch.ones(1, 2), torch.ones(1, 2, dtype=torch.bool)
    loss, m = gspo_loss(logp, old, adv, mask)   # paper clip (3e-4, 4e-4): min(1.05127, 1.0004) -> −1.0004
    assert loss.item() == pytest.approx(-1.0004) and m["policy/clip_frac_high"].item() == 1.0
    loss, m = gspo_loss(logp, old, adv, mask, eps_low=0.2, eps_high=0.2)   # inside 1 ± 0.2 -> −1.05127
    assert loss.item() == pytest.approx(-math.exp(0.05)) and m["policy/ratio_max"].item() == pytest.approx(math.exp(0.05))


def test_gspo_with_one_token_responses_equals_grpo():
    logp, old, adv, mask = _random_batch(one_token=True, seed=2)
    for eps in (3e-4, 0.2):   # with the tiny clip most rows are clipped, with 0.2 some are
        a = _loss_and_grad(gspo_loss, logp, old, adv, mask, eps_low=eps, eps_high=eps)
        b = _loss_and_grad(grpo_loss, logp, old, adv, mask, eps_low=eps, eps_high=eps)
        assert a[0].item() == pytest.approx(b[0].item(), abs=1e-6) and torch.allclose(a[1], b[1], atol=1e-7)


def test_gspo_identical_policies_gradient_is_length_averaged():
    # algorithms.md §8.7: π_θ = π_old -> s_i = 1 and d loss / d logp_{i,t} = −A_i / (n·|o_i|)
    _, _, adv, mask = _random_batch(seed=3)
    logp = -torch.rand(6, 5)
    loss, grad, m = _loss_and_grad(gspo_loss, logp, logp, adv, mask)
    expected = -adv / (6 * mask.sum(-1, keepdim=True)) * mask
    assert torch.allclose(grad, expected, atol=1e-7) and m["policy/ratio_max"].item() == pytest.approx(1.0)


def test_gspo_token_equals_gspo_with_sequence_advantages():
    logp, old, adv, mask = _random_batch(seed=4)
    for eps in (3e-4, 0.2):
        a = _loss_and_grad(gspo_token_loss, logp, old, adv, mask, eps_low=eps, eps_high=eps)
        b = _loss_and_grad(gspo_loss, logp, old, adv, mask, eps_low=eps, eps_high=eps)
        assert a[0].item() == pytest.approx(b[0].item(), abs=1e-6) and torch.allclose(a[1], b[1], atol=1e-6)


# ---------------------------------------------------------------- GMPO


def test_gmpo_log_space_clip_by_hand():
    mask = torch.ones(1, 2, dtype=torch.bool)
    # log-ratios [0.1, 0.3], A = +1, inside ±0.4: −exp(0.2) = −1.22140
    assert gmpo_loss(torch.tensor([[0.1, 0.3]]), torch.zeros(1, 2), torch.ones(1, 2), mask)[0].item() == \
        pytest.approx(-math.exp(0.2))
    # [0.1, 0.9], A = +1: 0.9 clipped to 0.4 -> −exp(0.25) = −1.28403
    loss, m = gmpo_loss(torch.tensor([[0.1, 0.9]]), torch.zeros(1, 2), torch.ones(1, 2), mask)
    assert loss.item() == pytest.approx(-math.exp(0.25)) and m["policy/clip_frac_high"].item() == 0.5
    # [0.1, −0.9], A = −1: pessimistic side -> −0.9 clipped to −0.4 -> +exp(−0.15) = 0.86071
    loss, m = gmpo_loss(torch.tensor([[0.1, -0.9]]), torch.zeros(1, 2), -torch.ones(1, 2), mask)
    assert loss.item() == pytest.approx(math.exp(-0.15)) and m["policy/clip_frac_low"].item() == 0.5
    # [0.1, 0.9], A = −1: raising the ratio is the pessimistic side, not clipped -> +exp(0.5)
    assert gmpo_loss(torch.tensor([[0.1, 0.9]]), torch.zeros(1, 2), -torch.ones(1, 2), mask)[0].item() == \
        pytest.approx(math.exp(0.5))


def test_gmpo_inside_clip_is_exp_mean_log_ratio_times_advantage():
    logp, old, adv, mask = _random_batch(seed=5)
    logp = old + (logp - old).clamp(-0.39, 0.39)   # every token ratio inside (e^−0.4, e^0.4)
    loss, grad, _ = _loss_and_grad(gmpo_loss, logp, old, adv, mask)
    L = mask.sum(-1)
    ratio = (((logp - old) * mask).sum(-1) / L).exp()
    A = adv[:, 0]
    assert loss.item() == pytest.approx((-A * ratio).mean().item(), abs=1e-6)
    # gradient −A_i·ratio_i/(n·|o_i|) on each valid token (GSPO's form)
    assert torch.allclose(grad, (-A * ratio / (6 * L)).unsqueeze(-1) * mask, atol=1e-7)
    # and the same as GSPO with a clip range that does not bind
    g = _loss_and_grad(gspo_loss, logp, old, adv, mask, eps_low=10.0, eps_high=10.0)
    assert g[0].item() == pytest.approx(loss.item(), abs=1e-6) and torch.allclose(g[1], grad, atol=1e-7)


# ---------------------------------------------------------------- CISPO


def test_cispo_gradient_form_by_hand():
    # ratios [1.5, 0.5], A = [+1, −1], ε_high^IS = 0.28, no lower bound: weights sg([1.28, 0.5]);
    # value −(1.28·1 + 0.5·(−1))/2 = −0.39; d/dlogp = −w·A/2 = [−0.64, +0.25]: both tokens keep a gradient
    logp, old = torch.log(torch.tensor([[1.5, 0.5]])), torch.zeros(1, 2)
    adv, mask = torch.tensor([[1.0, -1.0]]), torch.ones(1, 2, dtype=torch.bool)
    loss, grad, m = _loss_and_grad(cispo_loss, logp, old, adv, mask)
    assert loss.item() == pytest.approx(-0.39) and grad[0].tolist() == pytest.approx([-0.64, 0.25])
    assert m["policy/clip_frac_high"].item() == 0.5 and m["policy/clip_frac_low"].item() == 0.0
    # the same tokens under GRPO's clip (ε = 0.2): both clipped, no gradient at all
    assert _loss_and_grad(grpo_loss, logp, old, adv, mask)[1].abs().sum().item() == 0.0


def test_cispo_gradient_is_clipped_weight_times_reinforce():
    # d loss / d logp_t = −clip(r_t, 0, 1.28)·A_t / Σ|o| for every valid token, inside or outside the clip
    logp, old, adv, mask = _random_batch(seed=6)
    loss, grad, _ = _loss_and_grad(cispo_loss, logp, old, adv, mask)
    w = (logp - old).exp().clamp(0.0, 1.28)
    assert torch.allclose(grad, -w * adv * mask / mask.sum(), atol=1e-7)
    # at ratio 1 it is GRPO with token-mean: loss −mean(A), the same gradient
    a = _loss_and_grad(cispo_loss, old, old, adv, mask)
    b = _loss_and_grad(grpo_loss, old, old, adv, mask)
    assert a[0].item() == pytest.approx(-(adv * mask).sum().item() / mask.sum().item(), abs=1e-6)
    assert a[0].item() == pytest.approx(b[0].item(), abs=1e-6) and torch.allclose(a[1], b[1], atol=1e-7)


# ---------------------------------------------------------------- shared options


def test_kl_straight_through_value_k3_gradient_k2():
    # logp = log 0.5, ref = log 0.25: k3 = 0.5 − 1 + log 2 = 0.19315 forward; k2's gradient
    # d/dlogp ½(logp − ref)² = logp − ref = log 2 = 0.69315 backward (k3's own would be 1 − 0.5 = 0.5)
    logp, ref = _leaf([math.log(0.5)]), torch.tensor([math.log(0.25)])
    kl = kl_penalty(logp, ref, "k3+")
    kl.sum().backward()
    assert kl.item() == pytest.approx(0.5 - 1 + math.log(2)) and logp.grad.item() == pytest.approx(math.log(2))
    logp3 = _leaf([math.log(0.5)])
    kl_penalty(logp3, ref, "k3").sum().backward()
    assert logp3.grad.item() == pytest.approx(0.5)


def test_entropy_bonus():
    # H = [1.0, 0.5], coef 0.1, token_mean: term = −0.1·0.75 = −0.075, d term / dH = −0.05 each
    ent, mask = _leaf([[1.0, 0.5]]), torch.ones(1, 2, dtype=torch.bool)
    term, m = entropy_bonus(ent, mask, entropy_coef=0.1, loss_agg_mode="token_mean")
    term.backward()
    assert term.item() == pytest.approx(-0.075) and m["loss/entropy"].item() == pytest.approx(-0.075)
    assert ent.grad[0].tolist() == pytest.approx([-0.05, -0.05])
    # through grpo_loss: added to the loss and logged; entropy_coef > 0 without entropies is an error
    z = torch.zeros(1, 2)
    loss, m = grpo_loss(z, z, torch.ones(1, 2), mask, entropy=ent.detach(), entropy_coef=0.1)
    assert loss.item() == pytest.approx(-1 - 0.075) and m["loss/entropy"].item() == pytest.approx(-0.075)
    with pytest.raises(ValueError):
        grpo_loss(z, z, torch.ones(1, 2), mask, entropy_coef=0.1)


def _surrogate(ratio, adv, **kw):
    logp = _leaf([[math.log(ratio)]])
    loss, m = clipped_surrogate(logp, torch.zeros(1, 1), torch.tensor([[adv]]), torch.ones(1, 1) > 0,
                                eps_low=0.2, eps_high=0.2, loss_agg_mode="token_mean", **kw)
    loss.backward()
    return loss.item(), logp.grad.item(), m


def test_dual_clip_caps_negative_advantage_loss():
    # ratio 4, A = −1: PPO loss max(4·1, 1.2·1) = 4; dual-clip c = 3 caps it at 3, no gradient
    assert _surrogate(4.0, -1.0)[:2] == pytest.approx((4.0, 4.0))
    loss, grad, m = _surrogate(4.0, -1.0, clip_ratio_c=3.0)
    assert (loss, grad) == pytest.approx((3.0, 0.0)) and m["policy/clip_frac"].item() == 1.0
    # ratio 2 < c: unchanged (loss 2, gradient 2); A > 0 is never dual-clipped (ratio 4 -> −1.2)
    assert _surrogate(2.0, -1.0, clip_ratio_c=3.0)[:2] == pytest.approx((2.0, 2.0))
    assert _surrogate(4.0, 1.0, clip_ratio_c=3.0)[:2] == pytest.approx((-1.2, 0.0))


def test_stop_gradient_clip_mode_keeps_gradient_of_clipped_tokens():
    # ratio 1.5, A = +1, ε = 0.2: value −1.2 in both modes; gradient 0 (standard) vs −1.2 (stop_gradient)
    assert _surrogate(1.5, 1.0)[:2] == pytest.approx((-1.2, 0.0))
    assert _surrogate(1.5, 1.0, clip_mode="stop_gradient")[:2] == pytest.approx((-1.2, -1.2))
    # the lower side is clipped as PPO (ratio 0.5, A = −1: loss 0.8, no gradient); inside: unchanged
    assert _surrogate(0.5, -1.0, clip_mode="stop_gradient")[:2] == pytest.approx((0.8, 0.0))
    assert _surrogate(1.1, 1.0, clip_mode="stop_gradient")[:2] == pytest.approx((-1.1, -1.1))


# ---------------------------------------------------------------- the loop's hooks


@pytest.mark.slow
def test_concat_batches_keeps_log_probs(tiny):
    # two generation rounds with different prompt and response widths: padding to one batch must not
    # change any valid token's log-prob
    from rlx.batch import Batch, concat_batches
    from rlx.models.logprobs import token_logprobs
    from rlx.rollout.hf import HFEngine

    model, tok = tiny
    cfg = rlx.compose(FAST).rollout
    engine = HFEngine(model, tok, cfg)
    torch.manual_seed(0)
    parts = []
    for prompts in (["1+2=", "3+4="], ["12+34=", "56+78=", "9+99="]):
        out = engine.generate(prompts, n=2)
        ids = torch.cat([out.prompt_ids, out.completion_ids], 1)
        am = torch.cat([out.prompt_mask, out.response_mask.long()], 1)
        parts.append(Batch(ids, am, out.response_mask, torch.zeros(len(ids))))
    parts[0] = Batch(parts[0].input_ids[:, :-1], parts[0].attention_mask[:, :-1], parts[0].response_mask[:, :-1],
                     parts[0].rewards)   # a narrower round (T − 1)
    both = concat_batches(parts, tok.pad_token_id)
    assert len(both) == 10 and both.T == max(p.T for p in parts)
    with torch.no_grad():
        lp = token_logprobs(model, both.input_ids, both.attention_mask, both.T)[0]
        row = 0
        for p in parts:
            lp_p = token_logprobs(model, p.input_ids, p.attention_mask, p.T)[0]
            got = lp[row:row + len(p), :p.T]
            assert torch.allclose(got[p.response_mask], lp_p[p.response_mask], atol=1e-5)
            assert not both.response_mask[row:row + len(p), p.T:].any()
            row += len(p)


@pytest.mark.slow
def test_dapo_cli_logs_its_extras(tmp_path):
    run_cli(["algo=dapo", "trainer.steps=2", "data.prompts_per_step=2", *FAST], run_dir=tmp_path)
    row = read_metrics(tmp_path)[1]
    assert 1 <= row["dapo/gen_rounds"] <= 3 and 0 <= row["dapo/batch_fill"] <= 1
    for key in ("dapo/overlong_penalty", "groups/kept_frac", "groups/frac_zero_std", "reward/mean", "perf/gen_s"):
        assert key in row, key


@pytest.mark.slow
def test_dapo_step_where_every_group_is_filtered_ends_cleanly(tmp_path):
    # every reward 0 (both terms weighted 0, no overlong term): every group of every generation round has zero
    # variance and is filtered. Each step stops after max_gen_rounds rounds, trains on nothing, is counted, and the
    # run goes on to its last step
    run_main(["algo=dapo", "trainer.steps=2", "data.prompts_per_step=2", "algo.overlong_shaping=false",
              "reward.terms.correct.weight=0", "reward.terms.format.weight=0", *FAST], tmp_path / "run")
    rows = read_metrics(tmp_path / "run")
    assert [r["step"] for r in rows[1:]] == [1, 2]
    for r in rows[1:]:
        assert r["dapo/gen_rounds"] == 3.0 and r["dapo/batch_fill"] == 0.0 and r["groups/kept_frac"] == 0.0, r
        assert r["loss/total"] == 0.0 and r["optim/grad_norm"] == 0.0 and r["reward/mean"] == 0.0, r
