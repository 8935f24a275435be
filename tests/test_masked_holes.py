"""Interior holes in ``response_mask`` (multi-turn episodes: observation tokens between two policy turns are
False): every estimator that discounts over token positions must treat a hole as if its columns were deleted.
Hand-computed examples (γ = 0.5 keeps the arithmetic exact; γ = 0.99 is where the old returns_to_go was
9.9e-3 off), the same estimator on the rows with the hole columns removed, and for returns_to_go (the one
that changed) bit-identity with its pre-hole implementation on contiguous (padding-only) masks."""

import math

import pytest
import torch
from conftest import algo_batch

import rlx
from rlx.algos.kl_control import returns_to_go
from rlx.algos.ppo import PPO, gae
from rlx.algos.reinforce_pp import reinforce_pp_advantages
from rlx.algos.reinforce_pp_baseline import reinforce_pp_baseline_advantages
from rlx.algos.vapo import VAPO

T_, F_ = True, False
J = 9.0   # junk at masked positions: a reward or value that must not leak in


def close(x, expected, atol=1e-6):
    torch.testing.assert_close(x.float(), torch.tensor(expected, dtype=torch.float32), atol=atol, rtol=0)


# ---------------------------------------------------------------- references


def old_returns_to_go(token_rewards, response_mask, gamma=1.0):
    """rlx.algos.kl_control.returns_to_go before holes were carried through (commit ada5a5c), verbatim."""
    r = torch.where(response_mask, token_rewards, torch.zeros_like(token_rewards))
    out = torch.zeros_like(r)
    running = torch.zeros_like(r[:, 0])
    for t in range(r.shape[1] - 1, -1, -1):
        running = r[:, t] + gamma * running
        out[:, t] = running
    return torch.where(response_mask, out, torch.zeros_like(out))


def compact_order(mask):
    """(order [N, T], right-padded mask [N, T]): each row's valid columns first, in their order — the row with
    its hole (and padding) columns deleted, right-padded back to T so the batch stays rectangular."""
    order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices
    return order, torch.arange(mask.shape[1]) < mask.sum(1, keepdim=True)


def compact(x, order):
    return torch.gather(x, 1, order)


def scatter_back(x, order, mask):
    """Inverse of ``compact`` on the valid entries; 0 at masked positions."""
    out = torch.zeros_like(x).scatter(1, order, x)
    return torch.where(mask, out, torch.zeros_like(out))


def random_holes(n, T, seed, p_valid=0.6):
    """A random mask with interior holes, leading masked columns and right padding; at least one row with a
    hole, one right-padded only and one empty row."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(n, T, generator=g) < p_valid
    mask[0] = torch.tensor([T_, F_, F_, T_, T_, F_, T_] + [F_] * (T - 7))
    mask[1] = torch.arange(T) < 4
    mask[2] = False
    return mask, g


# ---------------------------------------------------------------- returns-to-go (REINFORCE++ and its baseline variant)


def test_returns_to_go_hole_by_hand():
    # γ = 0.5, r = [1, J, J, 2, 4], mask [T, F, F, T, T]: the hole is deleted, so the row is [1, 2, 4]
    #   G = [1 + 0.5·(2 + 0.5·4), 2 + 0.5·4, 4] = [3, 4, 4]   (the old code discounted the hole: G0 = 1 + 0.5³·4 = 1.5)
    r = torch.tensor([[1.0, J, J, 2.0, 4.0]])
    mask = torch.tensor([[T_, F_, F_, T_, T_]])
    g = returns_to_go(r, mask, 0.5)
    assert g.tolist() == [[3.0, 0.0, 0.0, 4.0, 4.0]]
    keep = mask[0]
    assert torch.equal(g[:, keep], returns_to_go(r[:, keep], mask[:, keep], 0.5))


def test_returns_to_go_hole_gamma_099():
    # one hole, r = [0, J, 1]: G0 = 0.99·1 = 0.99 (the old code: 0.99²·1 = 0.9801, 9.9e-3 off)
    # two holes, r = [−0.01, J, J, −0.02, J, 1] -> deleted [−0.01, −0.02, 1]:
    #   G = [−0.01 + 0.99·0.97, −0.02 + 0.99·1, 1] = [0.9503, 0.97, 1]
    r = torch.tensor([[0.0, J, 1.0, 0.0, 0.0, 0.0], [-0.01, J, J, -0.02, J, 1.0]])
    mask = torch.tensor([[T_, F_, T_, F_, F_, F_], [T_, F_, F_, T_, F_, T_]])
    g = returns_to_go(r, mask, 0.99)
    close(g, [[0.99, 0.0, 1.0, 0.0, 0.0, 0.0], [0.9503, 0.0, 0.0, 0.97, 0.0, 1.0]])
    for i in range(2):
        keep = mask[i]
        assert torch.equal(g[i, keep], returns_to_go(r[i:i + 1, keep], mask[i:i + 1, keep], 0.99)[0])
    # the defect this fixes: the old code is 9.9e-3 off on the one-hole row
    assert abs(old_returns_to_go(r, mask, 0.99)[0, 0].item() - 0.9801) < 1e-6


@pytest.mark.parametrize("gamma", [0.0, 0.5, 0.9, 0.99, 1.0])
def test_returns_to_go_equals_deleted_columns(gamma):
    mask, g = random_holes(8, 12, seed=1)
    r = torch.randn(8, 12, generator=g)
    order, cmask = compact_order(mask)
    expected = scatter_back(returns_to_go(compact(r, order), cmask, gamma), order, mask)
    assert torch.equal(returns_to_go(r, mask, gamma), expected)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 0.99, 1.0])
def test_returns_to_go_contiguous_mask_bit_identical(gamma):
    # right padding only (and a left-padded row, a full row, an empty row): the floats of the old code exactly
    g = torch.Generator().manual_seed(2)
    N, T = 7, 10
    r = torch.randn(N, T, generator=g) * 3
    mask = torch.arange(T) < torch.tensor([10, 1, 4, 7, 0, 5, 9]).unsqueeze(1)
    assert torch.equal(returns_to_go(r, mask, gamma), old_returns_to_go(r, mask, gamma))
    lead = mask.flip(1)   # a contiguous block at the end of the row
    assert torch.equal(returns_to_go(r, lead, gamma), old_returns_to_go(r, lead, gamma))


def test_reinforce_pp_advantages_hole_by_hand():
    # γ = 0.5, score 1, no KL. Row 0 [T, F, T]: G = [0.5·1, -, 1]; row 1 [T, T, F]: G = [0.5, 1, -].
    # batch normalisation over the four valid returns [0.5, 1, 0.5, 1]: mean 0.75, unbiased var 4·0.25²/3 = 1/12
    #   -> Â = ±0.25·√12 = ±√3/2. (the old code: row 0 G0 = 0.25, and the four values are no longer symmetric)
    mask = torch.tensor([[T_, F_, T_], [T_, T_, F_]])
    adv = reinforce_pp_advantages(torch.tensor([1.0, 1.0]), mask, gamma=0.5)
    h = math.sqrt(3) / 2
    close(adv, [[-h, 0.0, h], [-h, h, 0.0]])


def test_reinforce_pp_baseline_advantages_hole_by_hand():
    # γ = 0.5, group of 2, scores [1, 0] -> centred [0.5, −0.5]; both rows [T, F, T]:
    #   G = [0.25, -, 0.5] and [−0.25, -, −0.5]; mean 0, unbiased var = 2·(0.25² + 0.5²)/3 = 0.625/3
    #   -> Â = 0.25/√(0.625/3) = √0.3 and 0.5/√(0.625/3) = √1.2   (the old code: G0 = ±0.125)
    mask = torch.tensor([[T_, F_, T_], [T_, F_, T_]])
    adv = reinforce_pp_baseline_advantages(torch.tensor([1.0, 0.0]), mask, group_size=2, gamma=0.5)
    a, b = math.sqrt(0.3), math.sqrt(1.2)
    close(adv, [[a, 0.0, b], [-a, 0.0, -b]])


@pytest.mark.parametrize("gamma", [0.5, 0.99])
def test_reinforce_pp_family_equals_deleted_columns(gamma):
    mask, g = random_holes(8, 12, seed=3)
    scores, kl = torch.randn(8, generator=g), torch.rand(8, 12, generator=g)
    order, cmask = compact_order(mask)
    adv = reinforce_pp_advantages(scores, mask, kl, 0.3, gamma)
    ref = scatter_back(reinforce_pp_advantages(scores, cmask, compact(kl, order), 0.3, gamma), order, mask)
    torch.testing.assert_close(adv, ref, atol=1e-6, rtol=1e-6)
    adv = reinforce_pp_baseline_advantages(scores, mask, 4, kl, 0.3, gamma)
    ref = scatter_back(reinforce_pp_baseline_advantages(scores, cmask, 4, compact(kl, order), 0.3, gamma), order, mask)
    torch.testing.assert_close(adv, ref, atol=1e-6, rtol=1e-6)


def test_reinforce_pp_algorithm_hole_gamma_099():
    # the algorithm (KL in the reward from old/ref log-probs) through the same path: holes = deleted columns
    mask, g = random_holes(6, 10, seed=4)
    old, ref = -torch.rand(6, 10, generator=g), -torch.rand(6, 10, generator=g)
    rewards = torch.randn(6, generator=g)
    order, cmask = compact_order(mask)

    def run(m, o, r):
        a = rlx.build("algo", rlx.compose(["algo=reinforce_pp", "algo.kl_coef=0.1", "algo.gamma=0.99"]).algo)
        return a.advantages(algo_batch(rewards, m, old_logp=o, ref_logp=r))[0]

    expected = scatter_back(run(cmask, compact(old, order), compact(ref, order)), order, mask)
    torch.testing.assert_close(run(mask, old, ref), expected, atol=1e-6, rtol=1e-6)


# ---------------------------------------------------------------- GAE (PPO, PPO-ptx, VAPO)


def test_gae_hole_by_hand():
    # γ = 0.5, λ = 0.5, r = [0, J, J, 1], V = [0.5, J, J, 0.25], mask [T, F, F, T]: deleted, r = [0, 1], V = [0.5, 0.25]
    #   t=3: δ = 1 + 0.5·0 − 0.25 = 0.75                      A = 0.75
    #   t=0: δ = 0 + 0.5·0.25 − 0.5 = −0.375 (V of t=3, not of the hole; no γ for the hole)
    #        A = −0.375 + 0.5·0.5·0.75 = −0.1875 (one γλ, not γλ³)
    #   returns = A + V = [0.3125, 0, 0, 1.0]
    r = torch.tensor([[0.0, J, J, 1.0]])
    v = torch.tensor([[0.5, J, J, 0.25]])
    mask = torch.tensor([[T_, F_, F_, T_]])
    adv, ret = gae(r, v, mask, gamma=0.5, lam=0.5)
    assert adv.tolist() == [[-0.1875, 0.0, 0.0, 0.75]]
    assert ret.tolist() == [[0.3125, 0.0, 0.0, 1.0]]
    keep = mask[0]
    adv_d, ret_d = gae(r[:, keep], v[:, keep], mask[:, keep], gamma=0.5, lam=0.5)
    assert torch.equal(adv[:, keep], adv_d) and torch.equal(ret[:, keep], ret_d)


def test_gae_hole_gamma_099():
    # γ = 0.99, λ = 0.95, r = [0, J, 1], V = [0.5, J, 0.25], mask [T, F, T]:
    #   t=2: δ = 1 − 0.25 = 0.75, A = 0.75
    #   t=0: δ = 0.99·0.25 − 0.5 = −0.2525, A = −0.2525 + 0.99·0.95·0.75 = 0.452875;  returns = [0.952875, 0, 1]
    r = torch.tensor([[0.0, J, 1.0]])
    v = torch.tensor([[0.5, J, 0.25]])
    mask = torch.tensor([[T_, F_, T_]])
    adv, ret = gae(r, v, mask, gamma=0.99, lam=0.95)
    close(adv, [[0.452875, 0.0, 0.75]])
    close(ret, [[0.952875, 0.0, 1.0]])
    keep = mask[0]
    adv_d, ret_d = gae(r[:, keep], v[:, keep], mask[:, keep], gamma=0.99, lam=0.95)
    assert torch.equal(adv[:, keep], adv_d) and torch.equal(ret[:, keep], ret_d)


@pytest.mark.parametrize("gamma", [0.5, 0.99, 1.0])
def test_gae_equals_deleted_columns(gamma):
    mask, g = random_holes(8, 12, seed=5)
    r, v = torch.randn(8, 12, generator=g), torch.randn(8, 12, generator=g)
    lam = torch.rand(8, generator=g)   # per-row λ (VAPO's length-adaptive case)
    order, cmask = compact_order(mask)
    adv, ret = gae(r, v, mask, gamma=gamma, lam=lam)
    adv_c, ret_c = gae(compact(r, order), compact(v, order), cmask, gamma=gamma, lam=lam)
    assert torch.equal(adv, scatter_back(adv_c, order, mask))
    assert torch.equal(ret, scatter_back(ret_c, order, mask))


@pytest.mark.parametrize("name", ["ppo", "vapo"])
def test_ppo_and_vapo_advantages_and_targets_equal_deleted_columns(name):
    # through the algorithm: the score at the last valid token, −β·KL per valid token, GAE with λ_critic for
    # the targets and λ_actor for the advantages (VAPO: length-adaptive from the valid-token count), whitening
    mask, g = random_holes(6, 10, seed=7)
    old, ref = -torch.rand(6, 10, generator=g), -torch.rand(6, 10, generator=g)
    values, rewards = torch.randn(6, 10, generator=g), torch.randn(6, generator=g)
    order, cmask = compact_order(mask)
    cls = {"ppo": PPO, "vapo": VAPO}[name]
    over = ["algo.gamma=0.99", "algo.beta=0.05"] + (["algo.length_adaptive_alpha=0.5"] if name == "vapo" else [])

    def run(m, o, r, v):
        a = cls.from_config(rlx.compose([f"algo={name}", *over]).algo)
        b = algo_batch(rewards, m, old_logp=o, ref_logp=r, values=v)
        return a.value_targets(b), a.advantages(b)[0]

    targets, adv = run(mask, old, ref, values)
    targets_c, adv_c = run(cmask, *(compact(x, order) for x in (old, ref, values)))
    torch.testing.assert_close(targets, scatter_back(targets_c, order, mask), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(adv, scatter_back(adv_c, order, mask), atol=1e-6, rtol=1e-6)
