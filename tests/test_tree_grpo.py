"""Tree-GRPO (rlx/algos/tree_grpo.py): the intra- plus inter-tree advantage by hand, tree sampling with a real
EpisodeRunner on env=guess, and the preset's group_size check."""

import math
from types import SimpleNamespace

import pytest
import torch
from conftest import algo_batch, episode_runner

import rlx
from rlx.algos.tree_grpo import Leaf, expandable, grow_trees, tree_rollout
from rlx.config import ConfigError

T_, F_ = True, False


def algo(*overrides):
    return rlx.build("algo", rlx.compose(["algo=tree_grpo", *overrides]).algo)


# ---------------------------------------------------------------- advantage by hand

def test_advantage_by_hand_with_a_failed_leaf():
    a = algo("algo.std_eps=0")   # M = 2 trees of 1 + 1·2 = 3 leaves, G = 6; no eps: exact arithmetic
    # prompt 0: tree 0 = [0, 1, 2]; tree 1 = [2, failed, 0] (7.0 is the failed leaf's placeholder reward)
    # prompt 1: every reward 1 (no signal at either level); same tree ids 0/1 as prompt 0
    rewards = torch.tensor([0.0, 1.0, 2.0, 2.0, 7.0, 0.0] + [1.0] * 6)
    tree = torch.tensor([0, 0, 0, 1, 1, 1] * 2)
    mask = torch.ones(12, 3, dtype=torch.bool)
    mask[4] = False       # the failed leaf: all-False response mask
    mask[0, 2:] = False   # a shorter response: its advantage is still the same on every column
    adv, m = a.advantages(algo_batch(rewards, mask, tree=tree))
    # inter (prompt 0, valid leaves 0 1 2 2 0): mean (0+1+2+2+0)/5 = 1; squared deviations
    #   1+0+1+1+1 = 4, unbiased var 4/4 = 1, std 1  ->  A_inter = [-1, 0, 1, 1, 0 (failed), -1]
    # intra tree 0 (0 1 2): mean 1, var (1+0+1)/2 = 1, std 1  ->  [-1, 0, 1]
    # intra tree 1 (2 _ 0): mean 1, var (1+1)/1 = 2, std √2  ->  [1/√2, 0 (failed), -1/√2]
    # A = A_intra + A_inter = [-2, 0, 2, 1 + 1/√2, 0, -1 - 1/√2]; prompt 1: all 0
    r = 1 / math.sqrt(2)
    expected = torch.tensor([-2.0, 0.0, 2.0, 1 + r, 0.0, -1 - r] + [0.0] * 6)
    torch.testing.assert_close(adv, expected.unsqueeze(-1).expand(12, 3))
    assert adv.dtype == torch.float32
    # prompt 1's two trees have no signal, prompt 0's two do
    assert m["tree_grpo/tree_zero_signal_frac"] == 0.5
    # the failed leaf's placeholder changes nothing
    rewards[4] = -100.0
    torch.testing.assert_close(a.advantages(algo_batch(rewards, mask, tree=tree))[0], adv)
    # leaves in another order within the group: the same advantage follows each leaf
    perm = torch.tensor([3, 0, 4, 1, 5, 2] + list(range(6, 12)))
    torch.testing.assert_close(a.advantages(algo_batch(rewards[perm], mask[perm], tree=tree[perm]))[0], adv[perm])


def test_default_eps_and_no_scaling():
    rewards = torch.tensor([0.0, 1.0, 2.0, 2.0, 1.0, 0.0])
    tree = torch.tensor([0, 0, 0, 1, 1, 1])
    mask = torch.ones(6, 2, dtype=torch.bool)
    # every mean is 1 and dev = [-1, 0, 1, 1, 0, -1]; std_eps = 1e-4 joins each std:
    # trees: var (1+0+1)/2 = 1 -> dev / (1 + 1e-4); group: var 4/5 = 0.8 -> dev / (√0.8 + 1e-4)
    dev = torch.tensor([-1.0, 0.0, 1.0, 1.0, 0.0, -1.0])
    adv = algo().advantages(algo_batch(rewards, mask, tree=tree))[0][:, 0]
    torch.testing.assert_close(adv, dev / (1 + 1e-4) + dev / (math.sqrt(0.8) + 1e-4))
    # scale_rewards=false: centred only, (r − 1) twice
    adv = algo("algo.scale_rewards=false").advantages(algo_batch(rewards, mask, tree=tree))[0][:, 0]
    torch.testing.assert_close(adv, torch.tensor([-2.0, 0.0, 2.0, 2.0, 0.0, -2.0]))


def test_without_trees_it_is_grpo():
    # a single-turn env leaves batch.tree None: GRPO over the group of 6, the inter-tree term alone
    rewards = torch.tensor([0.0, 1.0, 2.0, 2.0, 7.0, 0.0])
    mask = torch.ones(6, 2, dtype=torch.bool)
    mask[4] = False
    adv, _ = algo("algo.std_eps=0").advantages(algo_batch(rewards, mask))
    torch.testing.assert_close(adv[:, 0], torch.tensor([-1.0, 0.0, 1.0, 1.0, 0.0, -1.0]))
    grpo = rlx.build("algo", rlx.compose(["algo=grpo", "algo.group_size=6"]).algo)
    assert torch.equal(algo().advantages(algo_batch(rewards, mask))[0], grpo.advantages(algo_batch(rewards, mask))[0])


def test_expandable_nodes_are_distinct():
    # tree: first episode of 3 turns; a fork of it at turn 1 that went on to 4 turns
    first = Leaf(SimpleNamespace(turns=3), 0)
    fork = Leaf(SimpleNamespace(turns=4), 0, first, 1)
    # the prompt once; the first episode's inner boundaries 1, 2; the fork's own 2, 3 (its 0 and 1 are first's)
    assert [(id(leaf), t) for leaf, t in expandable([first, fork])] == [
        (id(first), 0), (id(first), 1), (id(first), 2), (id(fork), 2), (id(fork), 3)]
    # a one-turn episode has only the prompt to expand from
    assert [t for _, t in expandable([Leaf(SimpleNamespace(turns=1), 0)])] == [0]


# ---------------------------------------------------------------- tree sampling with a real runner


@pytest.fixture(scope="module")
def guess_runner(guess_model):
    """An EpisodeRunner on env=guess (conftest.guess_model), three training records, the tokenizer."""
    return episode_runner(guess_model), guess_model[1].train_batch(0, 3), guess_model[3]


@pytest.mark.slow
def test_tree_sampling_with_a_real_runner(guess_runner):
    runner, records, tok = guess_runner
    M, N, L = 2, 3, 2
    G = M * (1 + L * N)   # 14 leaves per prompt
    torch.manual_seed(1)
    forest = grow_trees(runner, records, M, N, L)
    out = tree_rollout(runner, forest)
    assert [len(leaves) for leaves in forest] == [G] * 3 and out.completion_ids.shape[0] == 3 * G
    # G contiguous rows per prompt, tree by tree: 7 leaves of tree 0, then 7 of tree 1
    assert out.tree.tolist() == ([0] * 7 + [1] * 7) * 3
    for b in range(3):
        assert (out.prompt_ids[b * G:(b + 1) * G] == out.prompt_ids[b * G]).all()
    rows = {id(leaf): i for i, leaf in enumerate(leaf for leaves in forest for leaf in leaves)}
    leaves = [leaf for per_record in forest for leaf in per_record]
    forks = [leaf for leaf in leaves if leaf.parent is not None]
    assert len(forks) == 3 * M * L * N
    assert any(f.turn >= 1 for f in forks), "no fork after a turn: the test would not check a shared prefix"
    for f in forks:
        i, p = rows[id(f)], rows[id(f.parent)]
        assert f.tree == f.parent.tree and 0 <= f.turn < f.parent.traj.turns
        # the parent's columns up to the start of its policy turn f.turn + 1 (its turns 1..f.turn and their
        # observations) are the fork's, token for token; the fork's own turn f.turn + 1 starts right there
        cut = int((out.turn[p] == f.turn + 1).nonzero()[0])
        assert cut == f.shared_tokens
        assert torch.equal(out.completion_ids[i, :cut], out.completion_ids[p, :cut])
        assert torch.equal(out.turn[i, :cut], out.turn[p, :cut])
        assert out.attention[i, :cut].all() and int(out.turn[i, cut]) == f.turn + 1
    # observation tokens (attended, turn 0) are ">" / "<" and never in response_mask
    obs = (out.attention == 1) & (out.turn == 0)
    assert obs.any() and not out.response_mask[obs].any()
    assert set(out.completion_ids[obs].tolist()) <= set(tok(">", add_special_tokens=False)["input_ids"]
                                                          + tok("<", add_special_tokens=False)["input_ids"])
    assert torch.equal(out.response_mask, out.turn > 0)
    m = out.extra_metrics
    assert m["tree_grpo/leaves_per_tree_mean"] == 7 and 0 < m["tree_grpo/shared_prefix_frac"] < 1
    assert m["tree_grpo/fork_turn_mean"] == pytest.approx(sum(f.turn for f in forks) / len(forks))
    # the algorithm's sample_episodes is the same draw: node picks come from torch's generator (exact resume)
    a = algo("algo.expand_nodes=3", "algo.expand_iters=2", f"algo.group_size={G}")
    torch.manual_seed(1)
    again = a.sample_episodes(runner, records, G)
    assert torch.equal(again.completion_ids, out.completion_ids) and torch.equal(again.tree, out.tree)


# ---------------------------------------------------------------- preset


def test_preset_composes_and_builds():
    a = rlx.build("algo", rlx.compose(["env=guess", "algo=tree_grpo"]).algo)
    assert a.name == "tree_grpo" and (a.trees, a.expand_nodes, a.expand_iters, a.group_size) == (2, 2, 1, 6)
    assert "ref_logp" in a.requires   # beta = 0.001 > 0: the KL term needs the reference model


@pytest.mark.parametrize("overrides, size", [(["algo.group_size=8"], 8), (["algo.trees=3"], 6),
                                             (["algo.expand_nodes=4"], 6)])
def test_inconsistent_group_size_raises(overrides, size):
    with pytest.raises(ConfigError) as e:
        rlx.compose(["algo=tree_grpo", *overrides])
    first = str(e.value).splitlines()[0]
    assert first.startswith(f"algo.group_size={size}:") and "algo.trees·(1 + algo.expand_iters·algo.expand_nodes)" \
        in first and "set algo.group_size=" in first
