"""AEPO, agentic (rlx/algos/aepo.py): the budget split and the branch-point choice with the consecutive-branch
penalty by hand on constructed trajectories, the entropy-balanced loss by hand, entropy-balanced sampling with a
real EpisodeRunner on env=guess, and the preset's engine_logprobs check."""

import math

import pytest
import torch
from conftest import episode_runner

import rlx
from rlx.algos.aepo import (
    Path,
    budget_split,
    choose_branch_points,
    consecutive_branches,
    entropy_aware_advantages,
    groups_rollout,
    grow_groups,
    turn_entropies,
)
from rlx.batch import LossInputs
from rlx.config import ConfigError
from rlx.rollout.episodes import Trajectory


def algo(*overrides):
    return rlx.build("algo", rlx.compose(["algo=aepo", *overrides]).algo)


def traj(*turns, shared=None):
    """A Trajectory built by hand: one policy turn per list of engine log-probs, an observation between turns;
    ``shared`` = the segments of a parent's first turns (a fork's prefix), before these turns."""
    segments = list(shared or [])
    for lp in turns:
        if segments:
            segments.append(([9], False, None))   # the observation after the previous turn (a tool result)
        segments.append(([10 + len(segments)] * len(lp), True, list(lp)))
    return Trajectory(episode=None, prompt_ids=[5], segments=segments,
                      turns=sum(1 for s in segments if s[1]))


def path(t, parent=None, turn=0):
    p = Path(t, parent, turn)
    p.entropy = turn_entropies(t, tokens=1)   # first token only, no log|V| scaling: H = −logp of it
    return p


# ---------------------------------------------------------------- by hand: entropies and the budget split


def test_turn_entropies_and_budget_split_by_hand():
    # a probe of three turns: its first two tokens' −log-probs average to H (the third token is past entropy_tokens)
    probe = traj([-1.0, -3.0, -100.0], [-0.5], [-0.2, -0.4])
    h = turn_entropies(probe, tokens=2)
    assert h == pytest.approx([2.0, 0.5, 0.3])
    # units of log|V|: every value divided by the scale
    assert turn_entropies(probe, tokens=2, scale=2.0) == pytest.approx([1.0, 0.25, 0.15])
    # H_root = 2.0; H_tool = mean(0.5, 0.3) = 0.4; β = 0.5: σ(0.5·1.6) = σ(0.8) = 0.68997
    #   k = 8: 8·0.68997 = 5.5198 -> ⌊⌋ + 1 = 6 global, 2 branch samples
    assert budget_split(2.0, 0.4, 8, 0.5) == 6
    # H_root − H_tool = 0.8: σ(0.4) = 0.59869, 8·σ = 4.7895 -> 5;  −0.8: σ(−0.4) = 0.40131, 8·σ = 3.2105 -> 4
    assert budget_split(0.9, 0.1, 8, 0.5) == 5 and budget_split(0.1, 0.9, 8, 0.5) == 4
    # equal entropies (or β = 0): σ = 1/2, 8·1/2 = 4 -> 5 (the reference code's int(k·σ) + 1)
    assert budget_split(0.5, 0.5, 8, 0.5) == 5 and budget_split(2.0, 0.4, 8, 0.0) == 5
    # steep β: σ(8) = 0.99966 -> 7.997 -> 8 = k (no branch); σ(−8) = 0.00034 -> 0.003 -> 1 (the probe alone)
    assert budget_split(0.9, 0.1, 8, 10.0) == 8 and budget_split(0.1, 0.9, 8, 10.0) == 1
    # the split never leaves [1, k]
    assert budget_split(100.0, 0.0, 4, 10.0) == 4 and budget_split(0.0, 100.0, 4, 10.0) == 1
    # without the engine's log-probs there is nothing to estimate from
    with pytest.raises(ValueError, match="engine_logprobs"):
        turn_entropies(Trajectory(episode=None, prompt_ids=[5], segments=[([3], True, None)], turns=1), 1)


# ---------------------------------------------------------------- by hand: branch points and the penalty


def constructed():
    """Three global samples: A of four turns (H = 0.5, 2.5, 2.0, 1.5), B of two (H = 1.0, 0.5), C of one."""
    A = path(traj([-0.5], [-2.5], [-2.0], [-1.5]))
    B = path(traj([-1.0], [-0.5]))
    C = path(traj([-0.7]))
    return A, B, C


def test_branch_points_with_consecutive_penalty_by_hand():
    A, B, C = constructed()
    tried, branched = set(), set()
    kw = dict(weight=0.2, penalty=0.5, threshold=0.5)
    # round 1 visits turn boundaries turn by turn: (A,1) (B,1) (A,2) (A,3); C answered at once, no tool call
    # (A,1): ΔH = H2 − H1 = 2.5 − 0.5 = 2.0, l = 0: P = 0.3 + 0.2·2.0 = 0.7 >= 0.5  -> branch
    # (B,1): ΔH = 0.5 − 1.0 = −0.5, l = 0:         P = 0.7 − 0.1 = 0.6 >= 0.5      -> branch
    # (A,2): ΔH = 2.0 − 0.5 = 1.5, l = 1 ((A,1) was just branched): P = (0.3 + 0.3)·(1 − 0.5) = 0.3 -> no
    # (A,3): ΔH = 1.5 − 0.5 = 1.0, l = 0 ((A,2) was not: not consecutive): P = 0.35 + 0.2 = 0.55 -> branch
    d = choose_branch_points([A, B, C], tried, branched, 5, uniforms=[0.3, 0.7, 0.3, 0.35], **kw)
    assert [(x.path, x.turn) for x in d] == [(A, 1), (B, 1), (A, 2), (A, 3)]
    assert [x.consecutive for x in d] == [0, 0, 1, 0]
    assert [x.prob for x in d] == pytest.approx([0.7, 0.6, 0.3, 0.55])
    assert [x.branch for x in d] == [True, True, False, True]
    assert branched == {(A, 1), (B, 1), (A, 3)} and tried == {(A, 1), (B, 1), (A, 2), (A, 3)}
    # without the penalty (λ = 0) the same draws branch (A,2) too: P = 0.6
    d0 = choose_branch_points([A, B, C], set(), set(), 5, uniforms=[0.3, 0.7, 0.3, 0.35],
                              weight=0.2, penalty=0.0, threshold=0.5)
    assert [x.branch for x in d0] == [True, True, True, True] and d0[2].prob == pytest.approx(0.6)
    # round 2: A1, the branch forked at (A,1), shares A's turn 1 and re-sampled turns 2-3 (H = 3.0, 1.0); its own
    # node (A1,2): ΔH = 1.0 − 0.5 = 0.5, l = 1 (turn 1 on its path is (A,1), branched): P = (0.95 + 0.1)·0.5 = 0.525
    A1 = path(traj([-3.0], [-1.0], shared=A.traj.segments[:1]), A, 1)
    assert A1.entropy == pytest.approx([0.5, 3.0, 1.0])
    d = choose_branch_points([A, B, C, A1], tried, branched, 5, uniforms=[0.95], **kw)
    assert [(x.path, x.turn, x.consecutive, x.branch) for x in d] == [(A1, 2, 1, True)]
    assert d[0].prob == pytest.approx(0.525)
    # round 3: A2 forked at (A1,2), four turns (H = 0.5, 3.0 shared; 2.0, 0.1 its own): node (A2,3) has
    # ΔH = H4 − H1 = 0.1 − 0.5 = −0.4 and l = 2, both boundaries before it branched ((A1,2), then (A,1) through
    # A1's parent): 1 − 0.5·2 = 0 -> P = 0
    A2 = path(traj([-2.0], [-0.1], shared=A1.traj.segments[:3]), A1, 2)
    assert A2.entropy == pytest.approx([0.5, 3.0, 2.0, 0.1])
    assert consecutive_branches(A2, 3, branched) == 2
    d = choose_branch_points([A, B, C, A1, A2], tried, branched, 5, uniforms=[0.99], **kw)
    assert [(x.turn, x.consecutive, x.prob, x.branch) for x in d] == [(3, 2, 0.0, False)]
    assert d[0].delta_h == pytest.approx(-0.4)
    # with the preset's λ = 0.05 the factor is 1 − 0.1 = 0.9: P = (0.99 − 0.08)·0.9 = 0.819 -> branch
    d = choose_branch_points([A2], set(), set(branched), 5, uniforms=[0.99],
                             weight=0.2, penalty=0.05, threshold=0.5)
    assert d[0].consecutive == 2 and d[0].prob == pytest.approx(0.819) and d[0].branch
    # P is clipped to [0, 1]: (0.9 + 0.2·2.0)·1 = 1.3 -> 1 at (A,1) of a fresh visit
    assert choose_branch_points([A], set(), set(), 1, uniforms=[0.9], **kw)[0].prob == 1.0
    # nothing left to visit: no draw, no decision
    assert choose_branch_points([A, B, C, A1], tried, branched, 5, **kw) == []


def test_branch_budget_stops_the_round():
    A, B, C = constructed()
    tried = set()
    d = choose_branch_points([A, B, C], tried, set(), 2, uniforms=[0.3, 0.7, 0.3, 0.35],
                             weight=0.2, penalty=0.5, threshold=0.5)
    # two branches taken at (A,1) and (B,1): the later nodes are not visited (still untried)
    assert [(x.path, x.turn, x.branch) for x in d] == [(A, 1, True), (B, 1, True)]
    assert tried == {(A, 1), (B, 1)}
    assert choose_branch_points([A, B, C], set(), set(), 0, weight=0.2, penalty=0.5, threshold=0.5) == []


# ---------------------------------------------------------------- by hand: the entropy-balanced loss


def test_entropy_aware_advantage_by_hand():
    adv = torch.tensor([[1.0, 1.0, 1.0], [-2.0, -2.0, -2.0]])
    mask = torch.tensor([[True, True, False], [True, True, False]])
    ent = torch.tensor([[1.0, 3.0, 50.0], [1.0, 3.0, 70.0]], requires_grad=True)
    # valid H = 1, 3, 1, 3: mean 2, unbiased var 4/3, std 2/√3; Ĥ = ∓√3/2; α = 0.2 -> factor 1 ∓ 0.1·√3
    out = entropy_aware_advantages(adv, ent, mask, 0.2)
    f = 0.1 * math.sqrt(3)
    torch.testing.assert_close(out[:, :2], torch.tensor([[1 - f, 1 + f], [-2 * (1 - f), -2 * (1 + f)]]))
    torch.testing.assert_close(out[:, 2], adv[:, 2])   # padding untouched
    assert not out.requires_grad   # sg(Ĥ): no gradient into the entropy
    # all-equal entropies: std 0 -> 1, Ĥ = 0, A unchanged
    torch.testing.assert_close(entropy_aware_advantages(adv, torch.ones(2, 3), mask, 0.2), adv)


def test_loss_keeps_the_gradient_of_upper_clipped_tokens():
    # one token, A = 1, ratio e^0.5 = 1.65 > 1 + 0.2: the value is the clipped −1.2·A; stop-gradient clipping
    # keeps d/dlogp = −1.2 where standard clipping gives 0
    def grad(*overrides):
        a = algo("algo.entropy_adv_alpha=0", *overrides)
        logp = torch.zeros(1, 1, requires_grad=True)
        mb = LossInputs(old_logp=torch.full((1, 1), -0.5), advantages=torch.ones(1, 1),
                        response_mask=torch.ones(1, 1, dtype=torch.bool), rewards=torch.ones(1),
                        num_tokens=torch.tensor(1.0), num_seqs=1, max_len=1)
        loss, _ = a.loss(logp, mb)
        loss.backward()
        return float(loss.detach()), float(logp.grad)

    assert grad() == pytest.approx((-1.2, -1.2))   # the preset: clip_mode stop_gradient
    assert grad("algo.clip_mode=standard") == pytest.approx((-1.2, 0.0))


def test_loss_reads_the_entropies():
    a = algo()
    assert "entropy" in a.requires and "ref_logp" not in a.requires   # α = 0.2 > 0; β = 0: no reference model
    logp = torch.zeros(2, 2, requires_grad=True)
    mask = torch.ones(2, 2, dtype=torch.bool)
    ent = torch.tensor([[1.0, 3.0], [1.0, 3.0]])
    mb = LossInputs(old_logp=torch.zeros(2, 2), advantages=torch.tensor([[1.0, 1.0], [-1.0, -1.0]]),
                    response_mask=mask, rewards=torch.zeros(2), num_tokens=torch.tensor(4.0), num_seqs=2,
                    max_len=2, entropy=ent)
    loss, _ = a.loss(logp, mb)
    loss.backward()
    # ratio 1: loss = −mean(Ã), d/dlogp_t = −Ã_t/4 with Ã = A·(1 ∓ 0.1·√3)
    f = 0.1 * math.sqrt(3)
    torch.testing.assert_close(logp.grad, -torch.tensor([[1 - f, 1 + f], [-(1 - f), -(1 + f)]]) / 4)
    with pytest.raises(ValueError, match="entropies"):
        a.loss(logp, LossInputs(**{**vars(mb), "entropy": None}))


# ---------------------------------------------------------------- sampling with a real runner


@pytest.fixture(scope="module")
def guess_runner(guess_model):
    """An EpisodeRunner on env=guess (conftest.guess_model) whose engine records log-probs, three records, the
    tokenizer: every guess but the last is followed by an observation, a fork point."""
    return episode_runner(guess_model, record_logp=True), guess_model[1].train_batch(0, 3), guess_model[3]


@pytest.mark.slow
def test_sampling_with_a_real_runner(guess_runner):
    runner, records, tok = guess_runner
    G = 8
    kw = dict(entropy_tokens=20, split_beta=0.5, weight=0.2, penalty=0.05, threshold=0.0)   # τ = 0: every node
    torch.manual_seed(1)
    groups = grow_groups(runner, records, G, **kw)
    out = groups_rollout(runner, groups)
    assert [len(g.paths) for g in groups] == [G] * 3 and out.completion_ids.shape[0] == 3 * G
    for b in range(3):   # G contiguous rows per prompt
        assert (out.prompt_ids[b * G:(b + 1) * G] == out.prompt_ids[b * G]).all()
    scale = math.log(len(tok))
    for g in groups:
        probe = g.paths[0]
        assert probe.parent is None and not probe.refill
        # the split from the probe's engine log-probs: H_root its first turn, H_tool the turns after a tool call
        h = [-sum(s[2][:20]) / len(s[2][:20]) / scale for s in probe.traj.segments if s[1]]
        assert g.h_root == pytest.approx(h[0]) and g.probe_tool == (len(h) > 1)
        assert g.h_tool == pytest.approx(sum(h[1:]) / len(h[1:]) if len(h) > 1 else h[0])
        assert g.m == budget_split(g.h_root, g.h_tool, G, 0.5)
        # rows: the m global samples, then branches, then refills (none here: τ = 0 takes every node it visits)
        kinds = ["branch" if p.parent is not None else "refill" if p.refill else "global" for p in g.paths]
        assert kinds[:g.m] == ["global"] * g.m and "global" not in kinds[g.m:]
    rows = {id(p): i for i, p in enumerate(p for g in groups for p in g.paths)}
    forks = [p for g in groups for p in g.paths if p.parent is not None]
    assert forks, "no branch: the test would not check a shared prefix"
    assert out.extra_metrics["aepo/branch_mean"] == len(forks) / 3
    assert out.extra_metrics["aepo/global_mean"] + out.extra_metrics["aepo/branch_mean"] == G
    for f in forks:
        i, p = rows[id(f)], rows[id(f.parent)]
        # branches start at a tool-call turn boundary of their parent, never at the prompt
        assert 1 <= f.turn < f.parent.traj.turns
        # the parent's columns up to its policy turn f.turn + 1 (turns 1..f.turn and their observations) are the
        # fork's, token for token; the fork's own turn f.turn + 1 starts right there
        cut = int((out.turn[p] == f.turn + 1).nonzero()[0])
        assert torch.equal(out.completion_ids[i, :cut], out.completion_ids[p, :cut])
        assert torch.equal(out.turn[i, :cut], out.turn[p, :cut]) and int(out.turn[i, cut]) == f.turn + 1
        assert f.entropy[:f.turn] == f.parent.entropy[:f.turn]   # the shared turns came with their log-probs
    # observation tokens (attended, turn 0) are ">" / "<" and never in response_mask
    obs = (out.attention == 1) & (out.turn == 0)
    assert obs.any() and not out.response_mask[obs].any()
    assert set(out.completion_ids[obs].tolist()) <= set(tok(">", add_special_tokens=False)["input_ids"]
                                                          + tok("<", add_special_tokens=False)["input_ids"])
    assert torch.equal(out.response_mask, out.turn > 0)
    # the algorithm's sample_episodes is the same draw: torch's generator decides (exact resume)
    a = algo("algo.branch_threshold=0")
    torch.manual_seed(1)
    again = a.sample_episodes(runner, records, G)
    assert torch.equal(again.completion_ids, out.completion_ids)
    # the preset's τ = 0.5: still G rows per prompt, whatever the draws left to refills
    torch.manual_seed(2)
    preset = algo().sample_episodes(runner, records, G)
    assert preset.completion_ids.shape[0] == 3 * G
    m = preset.extra_metrics
    assert m["aepo/global_mean"] + m["aepo/branch_mean"] == G and 1 <= m["aepo/m_mean"] <= G


# ---------------------------------------------------------------- preset


def test_preset_composes_and_builds():
    cfg = rlx.compose(["env=calculator", "algo=aepo"])
    assert cfg.rollout.engine_logprobs is True   # the preset sets it at top level
    a = rlx.build("algo", cfg.algo)
    assert a.name == "aepo" and a.group_size == 8 and a.clip_mode == "stop_gradient"
    assert (a.split_beta, a.branch_weight, a.branch_threshold, a.branch_penalty, a.entropy_adv_alpha) == \
        (0.5, 0.2, 0.5, 0.05, 0.2)


@pytest.mark.parametrize("value, shown", [("false", "false"), ("null", "null")])
def test_engine_logprobs_off_raises(value, shown):
    # null = auto, which the hf engine leaves off without rollout.is_correction
    with pytest.raises(ConfigError) as e:
        rlx.compose(["env=calculator", "algo=aepo", f"rollout.engine_logprobs={value}"])
    first = str(e.value).splitlines()[0]
    assert first.startswith(f"rollout.engine_logprobs={shown}:") and "set rollout.engine_logprobs=true" in first


@pytest.mark.parametrize("override, key", [("algo.branch_threshold=1.5", "branch_threshold"),
                                           ("algo.entropy_tokens=0", "entropy_tokens"),
                                           ("algo.branch_penalty=-1", "branch_penalty")])
def test_bad_values_raise(override, key):
    with pytest.raises(ConfigError) as e:
        rlx.compose(["algo=aepo", override])
    assert str(e.value).splitlines()[0].startswith(f"algo.{key}=")
