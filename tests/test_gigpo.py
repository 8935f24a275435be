"""GiGPO (rlx/algos/gigpo.py): a guess-the-number group worked by hand, the failed-sample and prompt-group
boundaries, single-turn = GRPO, and the preset."""

import math
import statistics

import pytest
import torch
from conftest import algo_batch
from omegaconf import OmegaConf

import rlx
from rlx.algos.gigpo import GiGPO
from rlx.algos.grpo import GRPO
from rlx.config import CONF_DIR, ConfigError


def _preset(name):
    return OmegaConf.to_container(OmegaConf.load(CONF_DIR / "algo" / f"{name}.yaml").algo)


def gigpo(**over):
    return GiGPO.from_config({**_preset("gigpo"), **over})


# ---------------------------------------------------------------- the worked example
#
# Guess a secret in 1..7 (env=guess); the secret is 6. States are the interval still open (hash in brackets):
#   s0 = 1..7 [11]   s1 = 5..7 [22]   s2 = 6..7 [33]   s3 = 3..7 [44]
# Four episodes of one prompt (terminal reward 1 = found, 0 = out of turns) and one whose reward failed:
#   τ1: s0 "4" >  s1 "6" =                    K=2  R=1
#   τ2: s0 "4" >  s1 "5" >  s2 "6" =          K=3  R=1
#   τ3: s0 "2" >  s3 "4" >  s1 "7" <  (out)   K=3  R=0      (reaches s1 at turn 3, not 2)
#   τ4: s0 "6" =                              K=1  R=1
#   τ5: failed: all-False mask, reward 100 (a placeholder), turns at s0 and s1 as the layout leaves them.
# Layout: each turn 2 policy tokens, one observation token between turns (a hole in the mask), T = 8.
S0, S1, S2, S3 = 11, 22, 33, 44
EPISODES = [[S0, S1], [S0, S1, S2], [S0, S3, S1], [S0], [S0, S1]]
REWARDS = [1.0, 1.0, 0.0, 1.0, 100.0]
FAILED = 4
T = 8


def _layout(episodes, failed=(), T=T):
    n = len(episodes)
    mask = torch.zeros(n, T, dtype=torch.bool)
    turn = torch.zeros(n, T, dtype=torch.long)
    state = torch.zeros(n, T, dtype=torch.long)
    for i, states in enumerate(episodes):
        pos = 0
        for k, s in enumerate(states, 1):
            mask[i, pos:pos + 2] = i not in failed
            turn[i, pos:pos + 2], state[i, pos:pos + 2] = k, s
            pos += 3   # 2 policy tokens, then 1 observation token (turn 0, mask False)
    return mask, turn, state


def _batch(episodes=EPISODES, rewards=REWARDS, failed=(FAILED,)):
    mask, turn, state = _layout(episodes, failed)
    return algo_batch(torch.tensor(rewards), mask, turn=turn, turn_state=state)


def _per_turn(values, episodes=EPISODES):
    """Token tensor [N, T] from one value per (episode, turn): each turn's 2 tokens, 0 elsewhere."""
    out = torch.zeros(len(episodes), T)
    for i, vals in enumerate(values):
        for k, v in enumerate(vals):
            out[i, 3 * k:3 * k + 2] = v
    return out


# γ = 0.5: step returns R_{i,k} = 0.5^(K_i − k)·R_i
#   τ1: s0 0.5,  s1 1          τ2: s0 0.25, s1 0.5, s2 1      τ3: all 0      τ4: s0 1
# Episode level (F_norm = 1): R = [1, 1, 0, 1], mean 0.75 -> A^E = [0.25, 0.25, -0.75, 0.25] (τ5 left out)
# Step groups:
#   s0 {τ1 0.5, τ2 0.25, τ3 0, τ4 1}: mean 1.75/4 = 0.4375 -> A^S = 0.0625, -0.1875, -0.4375, 0.5625
#   s1 {τ1 t2 1, τ2 t2 0.5, τ3 t3 0}: mean 0.5 -> A^S = 0.5, 0, -0.5
#   s2 {τ2 t3}, s3 {τ3 t2}: groups of one -> 0
# Tokens, ω = 1: A = A^E + A^S
#   τ1: 0.25 + 0.0625 = 0.3125 | 0.25 + 0.5 = 0.75
#   τ2: 0.25 − 0.1875 = 0.0625 | 0.25 + 0 = 0.25 | 0.25 + 0 = 0.25
#   τ3: −0.75 − 0.4375 = −1.1875 | −0.75 + 0 = −0.75 | −0.75 − 0.5 = −1.25
#   τ4: 0.25 + 0.5625 = 0.8125
#   τ5: 0 everywhere
EXPECTED_MEAN_NORM = [[0.3125, 0.75], [0.0625, 0.25, 0.25], [-1.1875, -0.75, -1.25], [0.8125], [0.0, 0.0]]
STEP_ADV = [0.0625, 0.5, -0.1875, 0.0, 0.0, -0.4375, 0.0, -0.5, 0.5625]   # A^S of the 9 valid turns


def test_worked_example_by_hand():
    algo = gigpo(group_size=5, gamma=0.5, step_weight=1.0, scale_rewards=False)
    adv, m = algo.advantages(_batch())
    torch.testing.assert_close(adv, _per_turn(EXPECTED_MEAN_NORM), atol=1e-6, rtol=0)
    # step groups s0 (4 turns), s1 (3), s2 (1), s3 (1): two anchor states recur; 9 turns, 7 of them anchored
    assert m["gigpo/step_groups"] == 2
    assert m["gigpo/step_group_size"] == pytest.approx(9 / 4)
    assert m["gigpo/anchored_frac"] == pytest.approx(7 / 9)
    assert m["gigpo/step_adv_std"] == pytest.approx(statistics.stdev(STEP_ADV), abs=1e-6)


def test_worked_example_std_normalised():
    # F_norm = unbiased std (std_eps 0 so the numbers are exact):
    #   episode R = [1, 1, 0, 1]: std = sqrt((3·0.25² + 0.75²)/3) = 0.5 -> A^E = [0.5, 0.5, -1.5, 0.5]
    #   s0 returns [0.5, 0.25, 0, 1]: squared deviations sum 0.546875 -> std sqrt(0.546875/3)
    #   s1 returns [1, 0.5, 0]: std 0.5 -> A^S = [1, 0, -1]
    algo = gigpo(group_size=5, gamma=0.5, step_weight=1.0, scale_rewards=True, std_eps=0.0)
    adv, _ = algo.advantages(_batch())
    s0 = math.sqrt(0.546875 / 3)
    e1, e3 = 0.5, -1.5
    expected = [[e1 + 0.0625 / s0, e1 + 1.0], [e1 - 0.1875 / s0, e1 + 0.0, e1 + 0.0],
                [e3 - 0.4375 / s0, e3 + 0.0, e3 - 1.0], [e1 + 0.5625 / s0], [0.0, 0.0]]
    torch.testing.assert_close(adv, _per_turn(expected), atol=1e-6, rtol=0)


def test_step_weight_scales_only_the_step_part():
    # ω = 0: every policy token carries its episode's A^E (GRPO); ω = 2 doubles the step part
    base = gigpo(group_size=5, gamma=0.5, step_weight=0.0, scale_rewards=False).advantages(_batch())[0]
    episode = [[0.25] * 2, [0.25] * 3, [-0.75] * 3, [0.25], [0.0] * 2]
    torch.testing.assert_close(base, _per_turn(episode), atol=1e-6, rtol=0)
    double = gigpo(group_size=5, gamma=0.5, step_weight=2.0, scale_rewards=False).advantages(_batch())[0]
    one = gigpo(group_size=5, gamma=0.5, step_weight=1.0, scale_rewards=False).advantages(_batch())[0]
    torch.testing.assert_close(double - base, 2 * (one - base), atol=1e-6, rtol=0)


@pytest.mark.parametrize("scale", [False, True])
def test_failed_sample_moves_nothing(scale):
    algo = gigpo(group_size=5, gamma=0.5, step_weight=1.0, scale_rewards=scale)
    with_failed = algo.advantages(_batch())[0]
    # its placeholder reward and its states do not matter ...
    other = _batch(episodes=EPISODES[:4] + [[S1, S0]], rewards=REWARDS[:4] + [-7.0])
    torch.testing.assert_close(algo.advantages(other)[0], with_failed, atol=0, rtol=0)
    # ... and the four scored episodes get what they get in a group of four without it
    alone = GiGPO.from_config({**_preset("gigpo"), "gamma": 0.5, "step_weight": 1.0, "scale_rewards": scale,
                               "group_size": 4})
    torch.testing.assert_close(with_failed[:4], alone.advantages(_batch(EPISODES[:4], REWARDS[:4], ()))[0])
    assert with_failed[FAILED].abs().sum() == 0


def test_step_groups_stay_within_their_prompt_group():
    # two prompts with the same range (same state hashes: guess's state is (n, lo, hi)), different outcomes:
    # each half must equal the half computed alone
    algo = gigpo(group_size=4, gamma=0.5, step_weight=1.0, scale_rewards=False)
    eps_a, eps_b = EPISODES[:4], [[S0, S1], [S0], [S0, S1, S2], [S0, S3]]
    r_a, r_b = REWARDS[:4], [0.0, 1.0, 1.0, 0.0]
    both = algo.advantages(_batch(eps_a + eps_b, r_a + r_b, ()))[0]
    torch.testing.assert_close(both[:4], algo.advantages(_batch(eps_a, r_a, ()))[0], atol=0, rtol=0)
    torch.testing.assert_close(both[4:], algo.advantages(_batch(eps_b, r_b, ()))[0], atol=0, rtol=0)


# ---------------------------------------------------------------- single-turn = GRPO


@pytest.mark.parametrize("scale", [True, False])
def test_single_turn_is_grpo_bit_for_bit(scale):
    g = torch.Generator().manual_seed(0)
    n, T_ = 12, 6
    rewards = torch.randint(0, 3, (n,), generator=g).float() * 0.5
    lengths = torch.randint(1, T_ + 1, (n,), generator=g)
    mask = torch.arange(T_) < lengths.unsqueeze(-1)
    mask[5] = False   # a failed sample
    grpo = GRPO.from_config({**_preset("grpo"), "group_size": 4, "scale_rewards": scale})
    ours = gigpo(group_size=4, scale_rewards=scale)
    a_grpo, _ = grpo.advantages(algo_batch(rewards, mask))
    a_ours, _ = ours.advantages(algo_batch(rewards, mask))   # batch.turn is None
    assert torch.equal(a_ours, a_grpo) and a_ours.dtype == a_grpo.dtype


# ---------------------------------------------------------------- the preset


@pytest.mark.slow
def test_preset_composes_and_builds():
    cfg = rlx.compose(["algo=gigpo"])
    algo = rlx.build("algo", cfg.algo)
    assert isinstance(algo, GiGPO) and algo.name == "gigpo"
    assert (algo.step_weight, algo.gamma, algo.scale_rewards) == (1.0, 0.95, True)
    assert "ref_logp" in algo.requires   # beta 0.01 > 0 loads the reference model


@pytest.mark.slow
def test_unknown_key_names_the_closest():
    with pytest.raises(ConfigError) as e:
        rlx.compose(["algo=gigpo", "algo.stepweight=1"])
    first = str(e.value).splitlines()[0]
    assert "'algo.stepweight'" in first and "'algo.step_weight'" in first, first


@pytest.mark.parametrize("key, value", [("gamma", 1.5), ("gamma", -0.1), ("step_weight", -1.0)])
def test_bad_values_name_the_key(key, value):
    with pytest.raises(ConfigError, match=f"algo.{key}={value}"):
        gigpo(**{key: value})
