"""AEPO — Agentic Entropy-Balanced Policy Optimization (Dong et al. 2025, arXiv:2510.14545; reference code:
github.com/RUC-NLPIR/ARPO, folder AEPO/). Not *Arbitrary* Entropy Policy Optimization (arXiv:2510.08141), a
different paper with the same acronym. Entropy is balanced in the rollout and in the update; meant for multi-turn
envs with tools (``env=calculator``); with ``env=single`` only the loss changes act.

Entropy of a policy turn: the mean −log π(o_j) of its first ``entropy_tokens`` sampled tokens, π the engine's
log-prob of the sampled token (``rollout.engine_logprobs=true``): a one-sample estimate of the mean token entropy
there (E[−log π(o)] = H(π); exact in expectation at temperature 1 without top-k/top-p, as ``engine_logp`` is
unwarped), divided by log |V| as the reference code normalises (it uses the top-10 log-probs of the first 20
tokens; rlx's engines record the sampled token's only).

1. Entropy pre-monitoring (the paper's I_Gain = m·I_root + (k − m)·I_tool, I proportional to entropy): of the
   budget k = ``group_size``, m samples are global (from the prompt), k − m branch at tool calls:

       m = k · σ(β · (H_root − H̄_tool)),    H̄_tool = (1/N) Σ_i H_i^tool,    β = ``split_beta``

   rounded as the reference code (``_calculate_initial_rollouts_dynamical``): m = clamp(⌊k·σ⌋ + 1, 1, k). One
   probe episode per prompt gives H_root (its first turn) and H_i^tool (the turn after its i-th tool call); with
   no tool call H̄_tool = H_root (the reference's fallback). The probe is one of the m; the m − 1 others follow.

2. Entropy-balanced adaptive rollout. A node is a turn boundary after a tool call (after policy turn t ≥ 1 and
   its observation, of a trajectory that went on); its branch (``episodes.fork``) shares turns 1..t and replays
   turn t + 1 onwards. Each node gets one draw u ~ U(0, 1) (torch's generator: resume is exact) and branches if

       P = clip((u + w·ΔH) · (1 − λ·l), 0, 1) ≥ τ,     ΔH = H_{t+1} − H_1

   (w = ``branch_weight``, τ = ``branch_threshold``, λ = ``branch_penalty``; the reference code's
   ``(random() + entropy_weight·Δentropy)·(1 − 0.05·consecutive_branches)`` against BRANCH_PROBABILITY). The
   consecutive-branch penalty l counts the boundaries right before t (t − 1, t − 2, ...) on the node's own path
   that already branched: a path that keeps branching at consecutive high-entropy tool calls is less likely to
   branch again ("high-entropy rollout collapse"). The reference code counts l per prompt over consecutive
   tool-call iterations; the forks here let it count per path. Rounds visit the unvisited nodes turn by turn
   (turn 1 of every path, then turn 2, ...), paths in creation order, one branch per taken node (the reference's
   beam_size = 2), until k − m branches are taken; new branches' nodes wait for the next round (each round is one
   batched play). Budget no node took (few tool calls, low draws) refills with fresh samples from the prompt,
   as the reference refills a prompt. Rows: exactly k per prompt, contiguous, in creation order (probe, globals,
   branches round by round, refills).

3. Advantage: GRPO's group advantage over the k rows (rlx/algos/grpo.py), global and branch rows alike.

4. Loss (entropy-balanced policy optimisation), as the reference's
   ``compute_policy_loss_entropy_balanced_clipping``:
   - entropy-aware advantage (α = ``entropy_adv_alpha``, 0 = off; reference 0.2), per token

         Ã_t = A_t · (1 + α · sg(Ĥ_t)),     Ĥ_t = (H_t − mean H) / std H

     H_t the policy's token entropy in the training forward, mean and unbiased std over the micro-batch's valid
     tokens (as the reference; std 1 when 0 or one token): learning leans on high-uncertainty tokens;
   - stop-gradient clipping (``clip_mode: stop_gradient``, rlx/algos/surrogate.py): where the upper clip acts
     (A > 0, r > 1 + ε_high) the term is −sg((1+ε_high)/r)·r·A, the clipped value with the gradient kept for the
     high-entropy tokens clipping would zero; the reference's upper bound (1 + ε_high)/sg(r)·r is the same (for
     A < 0 its max() picks the unclipped term there); and its dual clip, c = ``clip_ratio_c`` = 3.0 for A < 0.

Metrics (``aepo/``, per prompt): ``global_mean`` / ``branch_mean`` rows from the prompt / forked at a tool call,
``m_mean`` the planned split, ``h_root_mean`` and ``h_tool_mean`` (the split's inputs, units of log |V|),
``probe_tool_frac`` (probes that called a tool).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from rlx.algos.base import check
from rlx.algos.grpo import GRPO, grpo_loss
from rlx.registry import ALGOS

# ---------------------------------------------------------------- entropy estimates and the budget split

def turn_entropies(traj, tokens: int, scale: float = 1.0) -> list[float]:
    """Per policy turn of ``traj`` (rlx.rollout.episodes.Trajectory), the mean −log-prob of its first ``tokens``
    sampled tokens under the engine, divided by ``scale`` (log |V| in sampling): a one-sample entropy estimate."""
    out = []
    for _ids, is_policy, logp in traj.segments:
        if not is_policy:
            continue
        if logp is None:
            raise ValueError("aepo estimates entropies from the engine's log-probs of the sampled tokens, and a "
                             "turn has none: set rollout.engine_logprobs=true")
        head = logp[:tokens]
        out.append(-sum(head) / len(head) / scale if head else 0.0)
    return out


def budget_split(h_root: float, h_tool_avg: float, k: int, beta: float) -> int:
    """m, the global samples of a budget of k: clamp(⌊k·σ(β·(H_root − H̄_tool))⌋ + 1, 1, k)."""
    x = beta * (h_root - h_tool_avg)
    sigma = 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))   # no overflow
    return min(k, max(1, math.floor(k * sigma) + 1))


# ---------------------------------------------------------------- branch points

@dataclass(eq=False)
class Path:
    """A sample of a prompt's group: its trajectory, its parent (None: from the prompt), its fork turn (turns
    shared with the parent; 0 from the prompt), its turns' entropies, and whether it refilled branch budget."""

    traj: object
    parent: Path | None = None
    turn: int = 0
    entropy: list = field(default_factory=list)
    refill: bool = False


class Decision(NamedTuple):
    """A visited node (path, turn): ΔH, the consecutive-branch count l, P, and whether it branched."""
    path: Path
    turn: int
    delta_h: float
    consecutive: int
    prob: float
    branch: bool


def owner(path: Path, turn: int) -> Path:
    """The path owning the node after policy turn ``turn`` of ``path``'s lineage (a fork shares its parent's nodes
    up to and including its fork point)."""
    while turn <= path.turn:
        path = path.parent
    return path


def consecutive_branches(path: Path, turn: int, branched: set) -> int:
    """l of node (path, turn): the boundaries turn − 1, turn − 2, ... of ``path``'s lineage already branched
    (``branched``: the (owner, turn) nodes forked so far), counted until the first that was not."""
    count = 0
    while turn - count - 1 >= 1 and (owner(path, turn - count - 1), turn - count - 1) in branched:
        count += 1
    return count


def branch_probability(u: float, delta_h: float, consecutive: int, *, weight: float, penalty: float) -> float:
    """P = clip((u + w·ΔH)·(1 − λ·l), 0, 1) (the factor 1 − λ·l floored at 0)."""
    return min(1.0, max(0.0, (u + weight * delta_h) * max(0.0, 1.0 - penalty * consecutive)))


def choose_branch_points(paths: list[Path], tried: set, branched: set, budget: int, *, weight: float,
                         penalty: float, threshold: float, uniforms=None) -> list[Decision]:
    """One round of branch choices for one prompt: its unvisited nodes (each path's own, t = fork turn + 1 ..
    turns − 1) turn by turn, paths in creation order, each with one draw u (``uniforms``; default torch.rand),
    until ``budget`` branches are taken. A taken node joins ``branched`` at once (later turns of its path see it
    in l); a visited one joins ``tried``. Returns the visited nodes' decisions in order."""
    nodes = [(p, t) for p in paths for t in range(p.turn + 1, p.traj.turns) if (p, t) not in tried]
    nodes.sort(key=lambda node: node[1])   # stable: creation order within a turn
    if budget <= 0 or not nodes:
        return []
    draws = torch.rand(len(nodes)).tolist() if uniforms is None else [float(u) for u in uniforms]
    out, taken = [], 0
    for (path, turn), u in zip(nodes, draws):
        if taken >= budget:
            break
        tried.add((path, turn))
        delta_h = path.entropy[turn] - path.entropy[0]   # H of turn t + 1 minus H of turn 1
        count = consecutive_branches(path, turn, branched)
        prob = branch_probability(u, delta_h, count, weight=weight, penalty=penalty)
        branch = prob >= threshold
        if branch:
            branched.add((path, turn))
            taken += 1
        out.append(Decision(path, turn, delta_h, count, prob, branch))
    return out


@dataclass(eq=False)
class PromptGroup:
    """A prompt's samples while they are drawn, its split and its branch bookkeeping."""
    record: dict
    paths: list
    m: int
    h_root: float
    h_tool: float
    probe_tool: bool
    tried: set = field(default_factory=set)
    branched: set = field(default_factory=set)


# ---------------------------------------------------------------- the rollout

def grow_groups(runner, records: list[dict], k: int, *, entropy_tokens: int, split_beta: float, weight: float,
                penalty: float, threshold: float) -> list[PromptGroup]:
    """Per record, its k samples (module docstring, 1-2) with ``runner`` (rlx.rollout.episodes.EpisodeRunner, its
    engine recording log-probs). Each phase plays every prompt's new episodes in one batched ``runner.play``."""
    runner.snapshots = True   # fork() copies the episode as it was before a turn: keep those copies
    from rlx.rollout.episodes import fork

    scale = math.log(max(len(runner.tok), 2))   # entropies in units of log |V|, as the reference code

    def play(new: list) -> None:   # [(group, path)]: played in one batch, measured, appended to their groups
        runner.play([p.traj for _, p in new])
        for g, p in new:
            p.entropy = turn_entropies(p.traj, entropy_tokens, scale)
            g.paths.append(p)

    groups = [PromptGroup(r, [], 0, 0.0, 0.0, False) for r in records]
    play([(g, Path(t)) for g, t in zip(groups, runner.start(records, 1))])   # the probes
    for g in groups:
        tool = g.paths[0].entropy[1:]   # the turns after a tool call
        g.h_root = g.paths[0].entropy[0]
        g.h_tool, g.probe_tool = (sum(tool) / len(tool) if tool else g.h_root), bool(tool)
        g.m = budget_split(g.h_root, g.h_tool, k, split_beta)
    play([(g, Path(t)) for g in groups for t in runner.start([g.record], g.m - 1)])   # the other globals
    while True:   # branch rounds: the unvisited nodes; new branches' own nodes in the next round
        new = [(g, Path(fork(d.path.traj, d.turn), d.path, d.turn)) for g in groups
               for d in choose_branch_points(g.paths, g.tried, g.branched, k - len(g.paths), weight=weight,
                                             penalty=penalty, threshold=threshold) if d.branch]
        if not new:
            break
        play(new)
    # branch budget no node took: fresh samples from the prompt
    play([(g, Path(t, refill=True)) for g in groups for t in runner.start([g.record], k - len(g.paths))])
    if any(len(g.paths) != k for g in groups):   # cannot happen: every phase stays within the budget
        raise RuntimeError(f"aepo drew {[len(g.paths) for g in groups]} samples per prompt, not {k}")
    return groups


def groups_rollout(runner, groups: list[PromptGroup]):
    """The groups' samples as one ``Rollout`` (k contiguous rows per prompt, in creation order), with the
    ``aepo/`` metrics."""
    out = runner.rollout([p.traj for g in groups for p in g.paths])
    n, rows = len(groups), sum(len(g.paths) for g in groups)
    branches = sum(p.parent is not None for g in groups for p in g.paths)
    metrics = {
        "aepo/global_mean": (rows - branches) / n,
        "aepo/branch_mean": branches / n,
        "aepo/m_mean": sum(g.m for g in groups) / n,
        "aepo/h_root_mean": sum(g.h_root for g in groups) / n,
        "aepo/h_tool_mean": sum(g.h_tool for g in groups) / n,
        "aepo/probe_tool_frac": sum(g.probe_tool for g in groups) / n,
    }
    out.extra_metrics = {**(out.extra_metrics or {}), **metrics}
    return out


# ---------------------------------------------------------------- entropy-aware advantage

def entropy_aware_advantages(advantages: torch.Tensor, entropy: torch.Tensor, response_mask: torch.Tensor,
                             alpha: float) -> torch.Tensor:
    """Ã = A·(1 + α·Ĥ), Ĥ = (H − mean H)/std H over the valid tokens of ``entropy`` [n, T] (detached; unbiased
    std, 1 where it is 0, not finite or there is a single valid token)."""
    h = entropy.detach().float()
    valid = h[response_mask]
    if valid.numel() == 0:
        return advantages
    std = valid.std() if valid.numel() > 1 else valid.new_ones(())
    std = torch.where(torch.isfinite(std) & (std > 0), std, torch.ones_like(std))
    z = torch.where(response_mask, (h - valid.mean()) / std, torch.zeros_like(h))
    return advantages * (1 + alpha * z)


@ALGOS.register("aepo")
@dataclass(frozen=True, kw_only=True)
class AEPO(GRPO):
    entropy_tokens: int
    split_beta: float
    branch_weight: float
    branch_threshold: float
    branch_penalty: float
    entropy_adv_alpha: float

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.entropy_tokens >= 1, f"algo.entropy_tokens={self.entropy_tokens}: must be >= 1")
        for key in ("split_beta", "branch_weight", "branch_penalty", "entropy_adv_alpha"):
            check(getattr(self, key) >= 0, f"algo.{key}={getattr(self, key)}: must be >= 0")
        check(0 <= self.branch_threshold <= 1, f"algo.branch_threshold={self.branch_threshold}: must be in [0, 1] "
                                               "(the branch probability P is compared with it)")

    @property
    def requires(self) -> frozenset[str]:
        # the entropy-aware advantage reads the token entropies of the training forward (detached)
        return super().requires | ({"entropy"} if self.entropy_adv_alpha > 0 else set())

    def check_config(self, cfg) -> None:
        from rlx.rollout.base import records_logprobs

        r, setting = cfg.rollout, cfg.rollout.get("engine_logprobs")
        check(records_logprobs(r, free=r.get("engine") == "vllm"),
              f"rollout.engine_logprobs={'null' if setting is None else str(setting).lower()}: algo=aepo "
              f"estimates turn entropies (budget split, branch points) from the engine's log-probs of the sampled "
              f"tokens; set rollout.engine_logprobs=true (conf/algo/aepo.yaml does)")

    def sample_episodes(self, runner, records: list[dict], group_size: int):
        groups = grow_groups(runner, records, group_size, entropy_tokens=self.entropy_tokens,
                             split_beta=self.split_beta, weight=self.branch_weight, penalty=self.branch_penalty,
                             threshold=self.branch_threshold)
        return groups_rollout(runner, groups)

    def loss(self, logp, mb):
        adv = mb.advantages
        if self.entropy_adv_alpha > 0:
            if mb.entropy is None:
                raise ValueError("algo.entropy_adv_alpha > 0 needs the token entropies of the training forward")
            adv = entropy_aware_advantages(adv, mb.entropy, mb.response_mask, self.entropy_adv_alpha)
        return grpo_loss(logp, mb.old_logp, adv, mb.response_mask, mb.ref_logp, eps_low=self.eps_low,
                         eps_high=self.eps_high, loss_agg_mode=self.loss_agg_mode, entropy=mb.entropy,
                         is_weights=mb.is_weights, **self.regularizer_options, **self.clip_options, **mb.norm)
