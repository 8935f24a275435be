"""ARPO — Agentic Reinforced Policy Optimization (Dong et al. 2025, arXiv:2507.19849: §3.1 the entropy-based
adaptive rollout, §3.2 the advantage attribution, App. C.2 the settings, App. E Algorithm 1; reference code:
github.com/dongguanting/ARPO, ``vllm_rollout_with_tools.py``). Equation numbers as in the paper's current text.

Sampling (§3.1, Algorithm 1), for each prompt with a global rollout size M = ``group_size``:

1. Rollout initialisation: N = ``global_rollouts`` full episodes (trajectory-level samples); the other M − N
   are the partial-sampling budget. H_initial of an episode is the entropy of the first k = ``entropy_tokens``
   tokens of its first turn (the answer to the prompt).
2. Entropy variation monitoring: for every policy turn t that follows an observation (a tool result), H_t is the
   entropy of the first k tokens of that turn, and (eq. 4)

       ΔH_t = Normalize(H_t − H_initial) = (H̄_t − H̄_initial) / ln V

   with H̄ the mean over the (at most k) tokens and V the tokenizer's vocabulary size. The paper sums over the
   k tokens and divides "by the vocab size"; the reference code sums over 20 tokens and divides by ln V, the
   entropy of the uniform distribution. Here the per-token mean over ln V: turns shorter than k (a calculator
   answer is ~5 tokens, a call ~15) compare on equal footing, and ΔH ∈ [−1, 1] when both are true entropies.
   Entropy estimate: eq. 3's H = −Σ_j p_j log p_j needs the whole distribution; the engine records the
   log-prob of each sampled token (``rollout.engine_logprobs``), and −log p(x) with x ~ p is a one-sample
   unbiased estimate of H (E_x[−log p(x)] = H), so H̄ is the mean surprisal of the first k sampled tokens. The
   engine's log-probs are of the raw logits (rollout/base.py); with ``rollout.temperature`` = 1 and top-k/p
   off (the defaults) they are the sampling distribution's, otherwise the estimate is a cross-entropy.
3. Entropy-based adaptive beaming (eq. 5): P_t = α + β·ΔH_t, α = ``base_prob``, β = ``entropy_weight``; the
   node branches Z = ``branch_factor`` partial rollouts: forks of the episode at the turn boundary before turn t
   (the same context and environment state, rollout/episodes.py ``fork``), each re-sampling turn t and playing
   on. Eq. 5 compares P_t with a threshold τ; the reference code draws u ~ U(0, 1) and branches iff
   u − β·ΔH ≤ τ, i.e. with probability clip(τ + β·ΔH, 0, 1) = P_t with α = τ (App. C.2: α = τ = 0.5,
   "entropy weight" β = 0.2); here likewise: branch iff u < clip(P_t, 0, 1), u from torch's global generator
   (saved in checkpoints, so a resumed run draws the same). One draw per node; Z = 1 is the reference
   scripts' beam size 2 (the node's own continuation plus one branch).
4. Termination: branching stops once the prompt's forks Ẑ reach M − N; if every path ends first, M − N − Ẑ
   more trajectory-level samples fill the group (Algorithm 1 lines 24-25).

rlx plays whole episodes (``runner.play``), so the monitoring runs turn level by turn level after the fact:
level t = 2, 3, ... examines turn t of every episode of the group whose own turn it is (a fork's own turns
start after the one it re-sampled), in group order, spending the budget in that order; the level's forks are
played in one batched call before level t + 1. A fork repeats its parent's turns before t token for token (and
their log-probs), so H_initial of a fork is its root's. Rows: G = M per prompt, contiguous, in creation order
(the N global rollouts, the forks level by level, the fillers); ``rollout.tree`` is the global rollout each row
descends from (0..N−1, fillers N...).

Advantage (§3.2): the soft advantage attribution the paper adopts, i.e. GRPO over the M rows of the group
(eqs. 6-7): a token shared by d rows appears in each with that row's advantage and, the prefixes being equal,
the same ratio r_{i,t}, so while no copy is clipped its gradient is Σ_i Â_i ∇r = d·Â^shared ∇r, the hard
attribution's (each copy carrying Â^shared, the mean of the d advantages). No separate advantage code.
Loss: GRPO's clipped surrogate (eq. 6) with its options (rlx/algos/grpo.py); App. C.2 sets the KL weight to 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from rlx.algos.base import check
from rlx.algos.grpo import GRPO
from rlx.algos.tree_grpo import Leaf, tree_rollout
from rlx.registry import ALGOS


def turn_logprobs(traj) -> list[list[float]]:
    """The engine's log-probs of each policy turn of ``traj`` (rollout/episodes.py ``Trajectory``), in order."""
    out = []
    for _, is_policy, logp in traj.segments:
        if is_policy:
            if logp is None:
                raise ValueError("arpo measures each turn's entropy from the engine's log-probs, and this episode has "
                                 "none: set rollout.engine_logprobs=true")
            out.append(list(logp))
    return out


def turn_entropy(logp: list[float], k: int) -> float:
    """H̄: the mean surprisal −log p of the first ``k`` sampled tokens of a turn (all of them if fewer)."""
    head = logp[:k]
    return -sum(head) / len(head)


def entropy_changes(traj, k: int, vocab_size: int) -> dict[int, float]:
    """{t: ΔH_t} (eq. 4, module docstring) for every policy turn t ≥ 2 of ``traj`` that follows an observation."""
    turns = turn_logprobs(traj)
    if not turns:
        return {}
    h_initial, norm = turn_entropy(turns[0], k), math.log(vocab_size)
    out, t, after_obs = {}, 0, False
    for _, is_policy, logp in traj.segments:
        if is_policy:
            t += 1
            if t >= 2 and after_obs:
                out[t] = (turn_entropy(logp, k) - h_initial) / norm
        after_obs = not is_policy
    return out


def branch_probability(delta: float, base_prob: float, entropy_weight: float) -> float:
    """P_t = α + β·ΔH_t (eq. 5), clipped to [0, 1] as a probability."""
    return min(1.0, max(0.0, base_prob + entropy_weight * delta))


def branches(p: float, generator: torch.Generator | None = None) -> bool:
    """One draw: True with probability ``p`` (u < p, u ~ U[0, 1) from ``generator``, torch's global one by
    default): never for p = 0, always for p = 1."""
    return bool(torch.rand(1, generator=generator).item() < p)


def adaptive_rollout(runner, records: list[dict], group_size: int, global_rollouts: int, entropy_tokens: int,
                     base_prob: float, entropy_weight: float, branch_factor: int, vocab_size: int | None = None,
                     generator: torch.Generator | None = None):
    """(groups, stats): per record its M = ``group_size`` leaves (tree_grpo ``Leaf``: trajectory, root index,
    parent, fork boundary, shared tokens) in creation order, and the examined tool turns' ΔH values, branched
    nodes and filler count (module docstring)."""
    runner.snapshots = True   # fork() copies the episode as it was before a turn: keep those copies
    from rlx.rollout.episodes import fork

    N, V = global_rollouts, vocab_size if vocab_size is not None else len(runner.tok)
    first = runner.start(records, N)
    runner.play(first, first_n=N)   # the prompt is prefilled once per record
    groups = [[Leaf(first[b * N + m], m) for m in range(N)] for b in range(len(records))]
    budget = [group_size - N] * len(records)
    changes, deltas, branched = {}, [], 0
    t = 2
    while any(leaf.traj.turns >= t for group in groups for leaf in group):
        new = []
        for b, group in enumerate(groups):
            # a fork made at this level re-sampled turn t: it is examined from the next level, its own turns
            for leaf in list(group):
                if leaf.traj.turns < t:
                    continue
                if id(leaf) not in changes:
                    changes[id(leaf)] = entropy_changes(leaf.traj, entropy_tokens, V)
                delta = changes[id(leaf)].get(t)
                if delta is None:
                    continue
                deltas.append(delta)
                if budget[b] == 0 or not branches(branch_probability(delta, base_prob, entropy_weight), generator):
                    continue
                branched += 1
                n = min(branch_factor, budget[b])
                budget[b] -= n
                for _ in range(n):
                    traj = fork(leaf.traj, t - 1)   # the context before turn t: turn t is sampled anew
                    child = Leaf(traj, leaf.tree, leaf, t - 1, sum(len(s[0]) for s in traj.segments))
                    group.append(child)
                    new.append(traj)
        if new:
            runner.play(new)
        t += 1
    fillers = []   # Algorithm 1 lines 24-25: the budget branching left, as trajectory-level samples
    for b, need in enumerate(budget):
        trajs = runner.start([records[b]], need) if need else []
        groups[b] += [Leaf(traj, N + i) for i, traj in enumerate(trajs)]
        fillers += trajs
    if fillers:
        runner.play(fillers)
    return groups, {"deltas": deltas, "branched": branched, "fillers": len(fillers)}


def arpo_rollout(runner, groups: list[list[Leaf]], stats: dict):
    """The groups as one ``Rollout`` (tree_grpo's layout: G contiguous rows per record, ``tree`` = root), with the
    ``arpo/`` metrics."""
    out = tree_rollout(runner, groups)
    metrics = {k.replace("tree_grpo/", "arpo/"): v for k, v in out.extra_metrics.items()}
    deltas, rows = stats["deltas"], sum(len(g) for g in groups)
    metrics.update({
        # forked rows per prompt (Ẑ ≤ M − N)
        "arpo/branches_per_prompt_mean": sum(leaf.parent is not None for g in groups for leaf in g) / len(groups),
        # ΔH_t (eq. 4) over the examined tool turns: every turn after an observation of the global rollouts and forks
        "arpo/delta_entropy_mean": sum(deltas) / len(deltas) if deltas else 0.0,
        # share of those tool turns at which the group branched (once the budget is spent none can)
        "arpo/tool_turns_branched_frac": stats["branched"] / len(deltas) if deltas else 0.0,
        # rows that are fill-up trajectory-level samples (branching did not spend the budget)
        "arpo/filler_frac": stats["fillers"] / rows,
    })
    out.extra_metrics = metrics
    return out


@ALGOS.register("arpo")
@dataclass(frozen=True, kw_only=True)
class ARPO(GRPO):
    global_rollouts: int
    entropy_tokens: int
    base_prob: float
    entropy_weight: float
    branch_factor: int

    def __post_init__(self) -> None:
        super().__post_init__()
        check(1 <= self.global_rollouts <= self.group_size,
              f"algo.global_rollouts={self.global_rollouts}: must be in [1, algo.group_size={self.group_size}] (N "
              "trajectory-level samples of the global rollout size M; the other M − N are the branching budget)")
        check(self.entropy_tokens >= 1, f"algo.entropy_tokens={self.entropy_tokens}: must be >= 1 (k, the tokens of "
                                        "a turn whose entropy is measured)")
        check(0.0 <= self.base_prob <= 1.0, f"algo.base_prob={self.base_prob}: must be in [0, 1] (α, the branch "
                                            "probability at ΔH = 0)")
        check(self.entropy_weight >= 0, f"algo.entropy_weight={self.entropy_weight}: must be >= 0 (β; a negative "
                                        "weight would branch where the entropy falls)")
        check(self.branch_factor >= 1, f"algo.branch_factor={self.branch_factor}: must be >= 1 (Z, partial rollouts "
                                       "per branching node)")

    def check_config(self, cfg) -> None:
        setting = cfg.rollout.get("engine_logprobs")
        check(setting is True, f"rollout.engine_logprobs={setting!r}: algo=arpo measures the entropy of each turn's "
              "first algo.entropy_tokens tokens from the engine's log-probs; set rollout.engine_logprobs=true "
              "(conf/algo/arpo.yaml does)")

    def sample_episodes(self, runner, records: list[dict], group_size: int):
        if group_size != self.group_size:
            raise ValueError(f"arpo samples {self.group_size} episodes per prompt, the loop asked for {group_size}")
        groups, stats = adaptive_rollout(runner, records, self.group_size, self.global_rollouts, self.entropy_tokens,
                                         self.base_prob, self.entropy_weight, self.branch_factor)
        return arpo_rollout(runner, groups, stats)
