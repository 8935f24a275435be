"""Tree-GRPO — tree search rollouts for agent RL (Ji et al. 2025, "Tree Search for LLM Agent Reinforcement
Learning", arXiv:2509.21240: the tree search sampling and the tree-based group relative advantages; reference
code: github.com/AMAP-ML/Tree-GRPO).

Sampling (the paper's tree search, one node = one whole agent step: a policy turn and the observation after
it). For each prompt, ``trees`` = M trees, each started by one full episode (initialisation); then
``expand_iters`` = L times: from each tree pick ``expand_nodes`` = N non-leaf nodes uniformly at random, with
replacement (sampling; the reference code draws them with ``random.choices`` over the root and the inner
nodes), and play each picked node's continuation to the end from the environment state there (expansion).
A non-leaf node is a turn boundary: the prompt itself (a fresh episode in the same tree), or the state after
policy turn t of an episode that went on after it. Every leaf (the first episode and each expansion) is one
training sample holding its shared prefix, so a prompt's group is G = M·(1 + L·N) leaves, tree by tree in
creation order (the reference scripts use M = 2, N = 2, L = 1 and keep all 3 leaves of each tree).

Advantage (the paper's intra-tree and inter-tree group relative advantages, summed), the same for every token
of leaf i with outcome reward R_i; leaves whose reward failed are left out of every mean and std and get 0:

    A_intra(i) = (R_i − mean_{j ∈ tree(i)} R_j) / (std_{j ∈ tree(i)} R_j + eps)     (leaves of i's tree)
    A_inter(i) = (R_i − mean_{j ∈ group} R_j)  / (std_{j ∈ group} R_j + eps)        (all G leaves: GRPO)
    A_i        = A_intra(i) + A_inter(i)

Each level is normalised by its own (unbiased) std and the two are added unweighted, as the reference code's
``adv_estimator=tree`` does (one GRPO normalisation over the prompt's ``uid``, one over ``tree_uid``, summed).
A level whose valid rewards are all equal, or that has one valid leaf, contributes 0 (the reference code's
singleton tree uses mean 0, std 1 instead, i.e. A_intra = R_i). ``scale_rewards=false`` drops both divisions.
Without tree rollouts (``env=single``: ``batch.tree`` is None) the advantage is GRPO's, A_inter alone.

Loss: GRPO's clipped surrogate with its KL and entropy options (rlx/algos/grpo.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlx.algos.base import check
from rlx.algos.grpo import GRPO
from rlx.registry import ALGOS


@dataclass(eq=False)
class Leaf:
    """One leaf of a tree: its trajectory, its tree (0..M−1 within its prompt), the leaf it was forked from
    (None for the tree's first episode), the policy turns it shares with that parent, and their tokens."""

    traj: object
    tree: int
    parent: Leaf | None = None
    turn: int = 0
    shared_tokens: int = 0


def expandable(leaves: list[Leaf]) -> list[tuple[Leaf, int]]:
    """The distinct non-leaf nodes of one tree as (leaf, turn) fork points: the prompt once, then each leaf's
    own inner nodes, the turn boundaries after its fork turn and before its last turn (the earlier ones are
    its parent's nodes)."""
    nodes = [(leaves[0], 0)]
    for leaf in leaves:
        nodes += [(leaf, t) for t in range(leaf.turn + 1, leaf.traj.turns)]
    return nodes


def grow_trees(runner, records: list[dict], trees: int, expand_nodes: int, expand_iters: int) -> list[list[Leaf]]:
    """Per record, the leaves of its ``trees`` trees (tree 0's first, in creation order). Node choices draw on
    torch's global generator (saved in checkpoints, so a resumed run picks the same nodes); each iteration's
    expansions, over every record, are played in one batched ``runner.play``."""
    runner.snapshots = True   # fork() copies the episode as it was before a turn: keep those copies
    from rlx.rollout.episodes import fork

    first = runner.start(records, trees)   # ``trees`` fresh episodes per record, contiguous
    runner.play(first, first_n=trees)      # the prompt is prefilled once per record
    forest = [[[Leaf(first[b * trees + m], m)] for m in range(trees)] for b in range(len(records))]
    for _ in range(expand_iters):
        new = []
        for per_record in forest:
            for tree in per_record:
                nodes = expandable(tree)   # this iteration's nodes: the tree before any of its expansions
                for k in torch.randint(len(nodes), (expand_nodes,)).tolist():
                    parent, turn = nodes[k]
                    traj = fork(parent.traj, turn)
                    new.append((tree, Leaf(traj, parent.tree, parent, turn, sum(len(s[0]) for s in traj.segments))))
        runner.play([leaf.traj for _, leaf in new])
        for tree, leaf in new:
            tree.append(leaf)
    return [[leaf for tree in per_record for leaf in tree] for per_record in forest]


def tree_rollout(runner, forest: list[list[Leaf]]):
    """The leaves as one ``Rollout`` (G contiguous per record), ``tree`` set, with the tree metrics."""
    leaves = [leaf for per_record in forest for leaf in per_record]
    out = runner.rollout([leaf.traj for leaf in leaves])
    out.tree = torch.tensor([leaf.tree for leaf in leaves], dtype=torch.long)
    forks = [leaf for leaf in leaves if leaf.parent is not None]
    total = float(out.attention.sum()) if out.attention is not None else 0.0
    trees = len({(b, leaf.tree) for b, per_record in enumerate(forest) for leaf in per_record})
    metrics = {
        "tree_grpo/leaves_per_tree_mean": len(leaves) / trees,
        # response-column tokens a leaf copied from its parent instead of generating (the sampling budget saved)
        "tree_grpo/shared_prefix_frac": sum(f.shared_tokens for f in forks) / total if total else 0.0,
        # policy turns an expansion shares with its parent (0 = a fresh episode from the prompt)
        "tree_grpo/fork_turn_mean": sum(f.turn for f in forks) / len(forks) if forks else 0.0,
    }
    out.extra_metrics = {**(out.extra_metrics or {}), **metrics}
    return out


def segment_normalize(rewards: torch.Tensor, segment: torch.Tensor, valid: torch.Tensor, *, scale: bool,
                      eps: float) -> torch.Tensor:
    """``ops.group_normalize``'s masked arithmetic over arbitrary segments: (r − mean_s) / (std_s + eps) per
    segment id ``segment`` [N] (long), over the ``valid`` [N] rows only (the others get 0); std is unbiased and
    a segment whose valid rewards are all equal (or has one valid row) gives 0."""
    n_seg = int(segment.max()) + 1 if segment.numel() else 0
    zeros = torch.zeros(n_seg, dtype=rewards.dtype, device=rewards.device)
    r = torch.where(valid, rewards, torch.zeros((), dtype=rewards.dtype, device=rewards.device))
    count = zeros.index_add(0, segment, valid.to(rewards.dtype))
    mean = zeros.index_add(0, segment, r) / count.clamp(min=1)
    adv = torch.where(valid, r - mean[segment], torch.zeros((), dtype=r.dtype, device=r.device))
    if not scale:
        return adv
    std = (zeros.index_add(0, segment, adv.square()) / (count - 1).clamp(min=1)).sqrt()[segment]
    return torch.where(std > 0, adv / (std + eps), torch.zeros_like(adv))


def tree_grpo_advantages(rewards: torch.Tensor, valid: torch.Tensor, tree: torch.Tensor, group_size: int,
                         trees: int, *, scale: bool = True, eps: float = 1e-4):
    """(A, A_intra, A_inter), each [N], for rewards [N] with G = ``group_size`` contiguous leaves per prompt and
    ``tree`` [N] the tree (0..trees−1) of each leaf within its prompt (module docstring)."""
    prompt = torch.arange(rewards.shape[0], device=rewards.device) // group_size
    inter = segment_normalize(rewards, prompt, valid, scale=scale, eps=eps)
    intra = segment_normalize(rewards, prompt * trees + tree, valid, scale=scale, eps=eps)
    return intra + inter, intra, inter


@ALGOS.register("tree_grpo")
@dataclass(frozen=True, kw_only=True)
class TreeGRPO(GRPO):
    trees: int
    expand_nodes: int
    expand_iters: int

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.trees >= 1, f"algo.trees={self.trees}: must be >= 1 (trees per prompt, M)")
        check(self.expand_nodes >= 0, f"algo.expand_nodes={self.expand_nodes}: must be >= 0 (nodes per tree "
                                      "expanded per iteration, N)")
        check(self.expand_iters >= 0, f"algo.expand_iters={self.expand_iters}: must be >= 0 (expansion "
                                      "iterations, L)")
        per_tree = 1 + self.expand_iters * self.expand_nodes
        leaves = self.trees * per_tree
        check(self.group_size == leaves,
              f"algo.group_size={self.group_size}: tree_grpo trains on every leaf, algo.trees·(1 + "
              f"algo.expand_iters·algo.expand_nodes) = {self.trees}·(1 + {self.expand_iters}·{self.expand_nodes}) "
              f"= {leaves} per prompt; set algo.group_size={leaves} or change the tree sizes")

    def sample_episodes(self, runner, records: list[dict], group_size: int):
        if group_size != self.group_size:
            raise ValueError(f"tree_grpo grows {self.group_size} leaves per prompt, the loop asked for {group_size}")
        forest = grow_trees(runner, records, self.trees, self.expand_nodes, self.expand_iters)
        return tree_rollout(runner, forest)

    def advantages(self, batch):
        mask = batch.response_mask
        if batch.tree is None:   # no tree rollouts (single-turn env): GRPO over the group
            return super().advantages(batch)
        valid = mask.any(-1)
        adv, intra, _ = tree_grpo_advantages(batch.rewards, valid, batch.tree, self.group_size, self.trees,
                                             scale=self.scale, eps=self.eps)
        # trees with no intra-tree signal (all valid leaves equal, or fewer than two), like groups/frac_zero_std
        seg = (torch.arange(len(batch), device=mask.device) // self.group_size) * self.trees + batch.tree
        zeros = torch.zeros(int(seg.max()) + 1, device=mask.device)
        signal = zeros.index_add(0, seg, (intra != 0).float())
        present = zeros.index_add(0, seg, torch.ones_like(intra))
        metrics = {"tree_grpo/tree_zero_signal_frac": float((signal[present > 0] == 0).float().mean())}
        return adv.unsqueeze(-1).expand_as(mask).to(torch.float32), metrics
