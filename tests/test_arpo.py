"""ARPO (rlx/algos/arpo.py): the entropy estimate, ΔH and branch probability by hand, the budget and fill rules
with a scripted engine, entropy-based branching with a real EpisodeRunner on env=guess, and the preset's checks."""

import math
from types import SimpleNamespace

import pytest
import torch
from conftest import algo_batch, episode_runner

import rlx
from rlx.algos.arpo import (
    adaptive_rollout,
    branch_probability,
    branches,
    entropy_changes,
    turn_entropy,
    turn_logprobs,
)
from rlx.config import ConfigError
from rlx.envs.base import Episode
from rlx.rollout.base import Rollout
from rlx.rollout.episodes import EpisodeRunner, Trajectory


def algo(*overrides):
    return rlx.build("algo", rlx.compose(["algo=arpo", *overrides]).algo)


# ---------------------------------------------------------------- entropy and branch probability by hand

def hand_trajectory():
    # turn 1 | observation | turn 2 | observation | turn 3, with the engine's log-probs of each policy token
    return Trajectory(episode=None, prompt_ids=[1, 2], segments=[
        ([3, 4, 5], True, [-1.0, -2.0, -6.0]),
        ([9], False, None),
        ([3, 4], True, [-4.0, -2.0]),
        ([9, 9], False, None),
        ([3], True, [-0.5]),
    ], turns=3)


def test_entropy_and_branch_probability_by_hand():
    tr = hand_trajectory()
    assert turn_logprobs(tr) == [[-1.0, -2.0, -6.0], [-4.0, -2.0], [-0.5]]
    # k = 2: H̄ = mean surprisal of the first 2 tokens (all of them when the turn is shorter)
    assert turn_entropy([-1.0, -2.0, -6.0], 2) == 1.5     # (1 + 2) / 2
    assert turn_entropy([-4.0, -2.0], 2) == 3.0           # (4 + 2) / 2
    assert turn_entropy([-0.5], 2) == 0.5                 # one token
    assert turn_entropy([-1.0, -2.0, -6.0], 20) == 3.0    # (1 + 2 + 6) / 3
    # ΔH_t = (H̄_t − H̄_1) / ln V, V = 100, for the turns after an observation (2 and 3, never turn 1)
    ln_v = math.log(100)                                  # 4.60517...
    d = entropy_changes(tr, 2, 100)
    assert d.keys() == {2, 3}
    assert d[2] == pytest.approx(1.5 / ln_v) and d[2] == pytest.approx(0.325721, abs=1e-6)    # (3.0 − 1.5) / ln 100
    assert d[3] == pytest.approx(-1.0 / ln_v) and d[3] == pytest.approx(-0.217147, abs=1e-6)  # (0.5 − 1.5) / ln 100
    # k = 20: H̄_1 = 3.0, so turn 2's rise is 0 and turn 3 fell by 2.5
    d20 = entropy_changes(tr, 20, 100)
    assert d20[2] == 0.0 and d20[3] == pytest.approx(-2.5 / ln_v)
    # P_t = α + β·ΔH_t (eq. 5) with the paper's α = 0.5, β = 0.2, clipped to [0, 1]
    assert branch_probability(d[2], 0.5, 0.2) == pytest.approx(0.5 + 0.2 * 0.325721, abs=1e-6)   # 0.565144
    assert branch_probability(d[3], 0.5, 0.2) == pytest.approx(0.5 - 0.2 * 0.217147, abs=1e-6)   # 0.456571
    assert branch_probability(d[2], 0.5, 10.0) == 1.0 and branch_probability(d[3], 0.5, 10.0) == 0.0
    # without the engine's log-probs there is nothing to measure: the error names the setting
    tr.segments[2] = ([3, 4], True, None)
    with pytest.raises(ValueError, match="rollout.engine_logprobs=true"):
        entropy_changes(tr, 2, 100)


def test_which_turns_branch_under_a_seeded_generator():
    d = entropy_changes(hand_trajectory(), 2, 100)
    # α = 0.5, β = 10: P_2 = clip(0.5 + 3.26) = 1 (the entropy rose), P_3 = clip(0.5 − 2.17) = 0 (it fell)
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        assert branches(branch_probability(d[2], 0.5, 10.0), g)
        assert not branches(branch_probability(d[3], 0.5, 10.0), g)
    # in between, a node branches with probability P: P_2 = 0.565 with the paper's α, β
    p = branch_probability(d[2], 0.5, 0.2)
    g = torch.Generator().manual_seed(0)
    share = sum(branches(p, g) for _ in range(4000)) / 4000
    assert abs(share - p) < 0.03
    # the same seed, the same decisions (a resumed run restores torch's generator)
    draws = []
    for _ in range(2):
        g = torch.Generator().manual_seed(7)
        draws.append([branches(p, g) for _ in range(50)])
    assert draws[0] == draws[1] and 0 < sum(draws[0]) < 50


# ---------------------------------------------------------------- budget, order and fill with a scripted engine


class Tok:
    """One token per character (id 2), EOS = 1, a 100-token vocabulary."""

    pad_token_id, eos_token_id = 0, 1

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [2] * len(text)}

    def __len__(self):
        return 100


class ThreeTurns(Episode):
    """Answers "o" (one token) to the first two turns; the third ends the episode."""

    def __init__(self, record):
        super().__init__(record)
        self.n = 0

    def observe(self, text):
        self.n += 1
        return "o" if self.n < 3 else None


class ScriptedEngine:
    """Every turn is [7, EOS]; each token's log-prob is LOGP[turn], the turn read off the context length
    (prompt 2 tokens, then 3 per earlier turn: the turn's 2 and the observation's 1)."""

    LOGP = {1: -1.0, 2: -3.0, 3: -1.0}

    def generate_ids(self, ids, am, n=1, greedy=False):
        turns = [(int(a.sum()) - 2) // 3 + 1 for a in am for _ in range(n)]
        N = len(turns)
        comp = torch.tensor([[7, 1]] * N)
        logp = torch.tensor([[self.LOGP[t]] * 2 for t in turns])
        mask = torch.ones(N, 2, dtype=torch.bool)
        return Rollout(ids.repeat_interleave(n, 0), am.repeat_interleave(n, 0), comp, mask,
                       torch.zeros(N, dtype=torch.bool), ["a"] * N, gen_tokens=2 * N, engine_logp=logp)


def scripted_runner(episode=ThreeTurns):
    env = SimpleNamespace(start=episode, max_turns=5, max_context_tokens=1000, tool_timeout_s=10.0)
    return EpisodeRunner(env, ScriptedEngine(), Tok(), 2)


class OneTurn(Episode):
    """The first turn is the answer: no tool turn, nothing to branch at."""

    def observe(self, text):
        return None


RECORDS = [{"prompt": "pq"}, {"prompt": "rs"}]


def test_budget_order_and_fill():
    # H̄_1 = 1, H̄_2 = 3, H̄_3 = 1: ΔH_2 = 2/ln 100 > 0, ΔH_3 = 0. α = 0, β = 10: P_2 = 1, P_3 = 0.
    # M = 8, N = 2, Z = 2: each root branches twice at turn 2 (forks at boundary 1, budget 6 → 2); no fork
    # branches at its turn 3 (P = 0); 2 fillers (trees 2, 3) complete each group.
    a = algo("algo.group_size=8", "algo.global_rollouts=2", "algo.branch_factor=2", "algo.base_prob=0.0",
             "algo.entropy_weight=10.0", "algo.entropy_tokens=2")
    runner = scripted_runner()
    out = a.sample_episodes(runner, RECORDS, 8)
    assert out.tree.tolist() == [0, 1, 0, 0, 1, 1, 2, 3] * 2
    # every row: turn 1 (2 tokens), "o", turn 2, "o", turn 3 = 8 columns; a fork shares turn 1 and the observation
    assert out.completion_ids.shape == (16, 8) and out.attention.all()
    assert torch.equal(out.response_mask[0], torch.tensor([1, 1, 0, 1, 1, 0, 1, 1], dtype=torch.bool))
    m = out.extra_metrics
    assert m["arpo/branches_per_prompt_mean"] == 4 and m["arpo/filler_frac"] == 0.25
    # examined per group: the roots' turns 2 and 3 (4), each fork's turn 3 (4); branched at 2 of the 8
    assert m["arpo/tool_turns_branched_frac"] == 0.25
    assert m["arpo/delta_entropy_mean"] == pytest.approx(2 * (2 / math.log(100)) / 8)
    assert m["arpo/fork_turn_mean"] == 1 and m["arpo/shared_prefix_frac"] == pytest.approx(8 * 3 / 128)
    # Z = 3 with M = 7: root 0 takes 3 branches, root 1 the 2 left; no filler
    groups, stats = adaptive_rollout(runner, RECORDS[:1], 7, 2, 2, 0.0, 10.0, 3)
    assert [leaf.tree for leaf in groups[0]] == [0, 1, 0, 0, 0, 1, 1] and stats["fillers"] == 0
    # α = 1 (every node branches, Z = 1), M = 8: level 2 forks both roots, level 3 both roots and then the two
    # level-2 forks (their own turn 3), in group order; the level-3 forks have no turn of their own left
    groups, stats = adaptive_rollout(runner, RECORDS[:1], 8, 2, 2, 1.0, 0.0, 1)
    assert [leaf.tree for leaf in groups[0]] == [0, 1, 0, 1, 0, 1, 0, 1]
    assert [leaf.turn for leaf in groups[0][2:]] == [1, 1, 2, 2, 2, 2] and stats["branched"] == 6
    assert [groups[0].index(leaf.parent) for leaf in groups[0][2:]] == [0, 1, 0, 1, 2, 3]
    # N = M: no budget, no branching, trajectory-level sampling only (GRPO's rollout)
    groups, stats = adaptive_rollout(runner, RECORDS[:1], 4, 4, 2, 1.0, 0.0, 1)
    assert [leaf.tree for leaf in groups[0]] == [0, 1, 2, 3] and stats["branched"] == 0


def test_no_tool_turn_fills_the_group_with_global_rollouts():
    # every episode ends at turn 1 (a random-init model's usual episode): the M − N budget goes to fillers
    a = algo("algo.group_size=6", "algo.global_rollouts=2", "algo.base_prob=1.0")
    out = a.sample_episodes(scripted_runner(OneTurn), RECORDS, 6)
    assert out.tree.tolist() == [0, 1, 2, 3, 4, 5] * 2 and out.completion_ids.shape == (12, 2)
    m = out.extra_metrics
    assert m["arpo/filler_frac"] == 4 / 6 and m["arpo/branches_per_prompt_mean"] == 0
    assert m["arpo/tool_turns_branched_frac"] == 0 and m["arpo/delta_entropy_mean"] == 0


def test_advantage_is_grpo_over_the_group():
    rewards = torch.tensor([0.0, 1.0, 1.0, 0.0, 2.0, 0.0, 1.0, 1.0])
    mask = torch.ones(8, 3, dtype=torch.bool)
    mask[4] = False   # a failed reward: out of the statistics, advantage 0
    grpo = rlx.build("algo", rlx.compose(["algo=grpo"]).algo)
    adv, _ = algo().advantages(algo_batch(rewards, mask, tree=torch.tensor([0, 1, 2, 3, 0, 0, 1, 1])))
    assert torch.equal(adv, grpo.advantages(algo_batch(rewards, mask))[0])
    # valid rewards 0 1 1 0 0 1 1: mean 4/7; every token of a row gets its row's value
    assert adv[0, 0] < 0 < adv[1, 0] and adv[4].abs().sum() == 0 and torch.equal(adv[:, 0:1].expand(8, 3), adv)


# ---------------------------------------------------------------- a real runner on env=guess


@pytest.fixture(scope="module")
def guess_runner(guess_model):
    """An EpisodeRunner on env=guess (conftest.guess_model) whose engine records log-probs, three records, the
    tokenizer."""
    return episode_runner(guess_model, record_logp=True), guess_model[1].train_batch(0, 3), guess_model[3]


@pytest.mark.slow
def test_branching_with_a_real_runner(guess_runner):
    runner, records, tok = guess_runner
    M, N = 8, 2
    torch.manual_seed(1)
    # α = 1: every examined node branches (Z = 1) until the budget M − N = 6 is spent
    groups, stats = adaptive_rollout(runner, records, M, N, 2, 1.0, 0.0, 1)
    from rlx.algos.arpo import arpo_rollout
    out = arpo_rollout(runner, groups, stats)
    assert [len(g) for g in groups] == [M] * 3 and out.completion_ids.shape[0] == 3 * M
    for b in range(3):   # G contiguous rows per prompt
        assert (out.prompt_ids[b * M:(b + 1) * M] == out.prompt_ids[b * M]).all()
    rows = {id(leaf): i for i, leaf in enumerate(leaf for g in groups for leaf in g)}
    leaves = [leaf for g in groups for leaf in g]
    forks = [leaf for leaf in leaves if leaf.parent is not None]
    assert forks and all(f.turn >= 1 for f in forks), "no fork after a tool turn: nothing would be checked"
    assert out.tree.tolist() == [leaf.tree for leaf in leaves]
    for f in forks:
        i, p = rows[id(f)], rows[id(f.parent)]
        assert f.tree == f.parent.tree and 1 <= f.turn < f.parent.traj.turns
        # the parent's turns 1..f.turn and their observations are the fork's, token for token (log-probs too);
        # the fork's own turn f.turn + 1, re-sampled from the same context, starts right there
        cut = int((out.turn[p] == f.turn + 1).nonzero()[0])
        assert cut == f.shared_tokens
        assert torch.equal(out.completion_ids[i, :cut], out.completion_ids[p, :cut])
        assert torch.equal(out.engine_logp[i, :cut], out.engine_logp[p, :cut])
        assert out.attention[i, :cut].all() and int(out.turn[i, cut]) == f.turn + 1
    # observation tokens (attended, turn 0) are ">" / "<" and never in response_mask
    obs = (out.attention == 1) & (out.turn == 0)
    assert obs.any() and not out.response_mask[obs].any()
    assert set(out.completion_ids[obs].tolist()) <= set(tok(">", add_special_tokens=False)["input_ids"]
                                                          + tok("<", add_special_tokens=False)["input_ids"])
    # ΔH of a row from its Rollout columns: −mean of the first 2 engine log-probs of turn t minus turn 1's, / ln V
    r = next(rows[id(leaf)] for leaf in leaves if leaf.traj.turns >= 2)
    h = [-out.engine_logp[r][out.turn[r] == t][:2].mean() for t in (1, 2)]
    assert entropy_changes(leaves[r].traj, 2, len(tok))[2] == pytest.approx(float(h[1] - h[0]) / math.log(len(tok)),
                                                                            abs=1e-5)
    # the algorithm's sample_episodes, default α and β: G rows, same draws from the same seed
    a = algo("algo.group_size=8", "algo.global_rollouts=2")
    torch.manual_seed(2)
    first = a.sample_episodes(runner, records, M)
    torch.manual_seed(2)
    again = a.sample_episodes(runner, records, M)
    assert first.completion_ids.shape[0] == 3 * M and torch.equal(first.tree, again.tree)
    assert torch.equal(first.completion_ids, again.completion_ids)
    assert 0 <= first.extra_metrics["arpo/tool_turns_branched_frac"] <= 1


# ---------------------------------------------------------------- preset


def test_preset_composes_and_builds():
    cfg = rlx.compose(["env=calculator", "algo=arpo"])
    a = rlx.build("algo", cfg.algo)
    assert a.name == "arpo" and cfg.rollout.engine_logprobs is True
    assert (a.group_size, a.global_rollouts, a.entropy_tokens, a.branch_factor) == (8, 4, 20, 1)
    assert (a.base_prob, a.entropy_weight, a.beta) == (0.5, 0.2, 0.0)
    assert "ref_logp" not in a.requires   # KL weight 0 (App. C.2): no reference model


@pytest.mark.parametrize("setting", ["false", "null"])
def test_engine_logprobs_off_raises(setting):
    with pytest.raises(ConfigError) as e:
        rlx.compose(["env=calculator", "algo=arpo", f"rollout.engine_logprobs={setting}"])
    first = str(e.value).splitlines()[0]
    assert first.startswith("rollout.engine_logprobs=") and "set rollout.engine_logprobs=true" in first


@pytest.mark.parametrize("overrides, key", [(["algo.global_rollouts=9"], "algo.global_rollouts=9"),
                                            (["algo.global_rollouts=0"], "algo.global_rollouts=0"),
                                            (["algo.entropy_tokens=0"], "algo.entropy_tokens=0"),
                                            (["algo.base_prob=1.5"], "algo.base_prob=1.5"),
                                            (["algo.branch_factor=0"], "algo.branch_factor=0")])
def test_bad_values_raise(overrides, key):
    with pytest.raises(ConfigError) as e:
        rlx.compose(["algo=arpo", *overrides])
    assert str(e.value).splitlines()[0].startswith(key + ":")
