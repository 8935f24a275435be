"""CPPO — Completion Pruning Policy Optimization (Lin et al. 2025, arXiv:2503.22342, NeurIPS 2025;
official code github.com/lzhxmu/CPPO).

A completion's share of GRPO's policy gradient is proportional to its |advantage|, so CPPO updates on the
completions that carry most of it: GRPO's advantages over the whole group of G, then per prompt only the k
completions with the largest |A_i| are kept, for a pruning rate P:

    A_i = (r_i − mean_g r) / (std_g r + eps)                      (GRPO, before pruning, all G samples)
    keep_i = 𝟙[ i is among the k largest |A| of its group ],   k = G − ⌊P·G⌋      (ties: the earlier sample)
    L = GRPO's clipped surrogate (+ β·KL) over the kept completions only

Paper (G = 16): P = 0.5, 0.75, 0.875, 0.9375 keep k = 8, 4, 2, 1; on GSM8K P = 0.875 gave 80.41% (GRPO
77.05%) at 4.89× the speed. ``prune_zero_advantage`` (off in the preset: the paper keeps k per group
whatever their A) also prunes every completion with A_i = 0, whatever its rank: it adds nothing to the policy
gradient, only to the KL term and to the token and sequence totals. A group whose rewards are all equal is
then dropped by ``keep`` (counted in ``groups/kept_frac``), so a step where every group is uniform keeps
nothing, and the loop ends it without an update (the loop's empty-batch step).

How the loop does it: the loop's sample selection (``keep_samples``) drops rows and with them the group layout
that GRPO's statistics need, so CPPO selects in ``advantages``, where the groups are whole, and takes the
pruned completions out of the update the way the loop takes out a sample whose reward failed: an all-False
response mask (rlx/batch.py), so they count in no loss term, token or sequence total, and get A = 0. The
update is CPPO's; its speed-up is not: the pruned rows still go through the old/reference and training
forwards (they get no gradient). The paper's dynamic completion allocation (more prompts to refill the pruned
slots) is not done. ``cppo/pruned_frac``: the share of the update batch's scored completions that are pruned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from rlx.algos.base import check
from rlx.algos.dapo import dynamic_sampling_keep
from rlx.algos.group import group_advantages
from rlx.algos.grpo import GRPO
from rlx.algos.reinforce import per_token
from rlx.registry import ALGOS


def kept_per_group(group_size: int, pruning_rate: float) -> int:
    """k = G − ⌊P·G⌋ (G = 16, P = 0.875 → 2; G = 8, P = 0.5 → 4); at least 1 for P < 1."""
    return group_size - math.floor(pruning_rate * group_size + 1e-9)


def prune_completions(advantages: torch.Tensor, valid: torch.Tensor, group_size: int, pruning_rate: float,
                      prune_zero: bool = True) -> torch.Tensor:
    """Bool [N]: the k completions of largest |A| per group (advantages, valid [N], G contiguous per prompt);
    a row with no valid token ranks last, and with ``prune_zero`` a row with A = 0 is never kept.

    Rewards [1, 0, 0, 0] (A ∝ [3, −1, −1, −1]) with k = 2 → [T, T, F, F]: the largest |A|, then the first tie.
    """
    key = torch.where(valid, advantages.abs(), torch.full_like(advantages, -1.0)).view(-1, group_size)
    order = torch.sort(-key, dim=-1, stable=True).indices
    pos = torch.arange(group_size, device=order.device).expand_as(order).contiguous()
    rank = torch.empty_like(order).scatter_(-1, order, pos)   # rank[i] = place of row i in its group's order
    keep = (rank < kept_per_group(group_size, pruning_rate)).reshape(-1) & valid
    return keep & (advantages != 0) if prune_zero else keep


@ALGOS.register("cppo")
@dataclass(frozen=True, kw_only=True)
class CPPO(GRPO):
    pruning_rate: float
    prune_zero_advantage: bool

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 <= self.pruning_rate < 1, f"algo.pruning_rate={self.pruning_rate}: must be in [0, 1) (the "
                                          f"share of each group's completions pruned; 0 = GRPO)")

    def keep(self, rewards: torch.Tensor) -> torch.Tensor:
        """Groups whose rewards are not all equal, with ``prune_zero_advantage`` (all of their A are 0)."""
        return dynamic_sampling_keep(rewards) if self.prune_zero_advantage else super().keep(rewards)

    def advantages(self, batch):
        mask = batch.response_mask
        adv = group_advantages(batch.rewards, mask, self.group_size, scale=self.scale, eps=self.eps,
                               always_masked=self.always_masked).to(torch.float32)
        kept = prune_completions(adv, mask.any(-1), self.group_size, float(self.pruning_rate),
                                 bool(self.prune_zero_advantage))
        batch.response_mask = mask & kept.unsqueeze(-1)   # pruned: out of the update, as a failed sample
        scored = int(mask.any(-1).sum())
        pruned = 1.0 - int(kept.sum()) / scored if scored else 0.0
        return per_token(adv * kept, batch.response_mask), {f"{self.name}/pruned_frac": pruned}
