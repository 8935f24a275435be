"""RLOO — REINFORCE Leave-One-Out (Ahmadian et al. 2024, "Back to Basics", arXiv:2402.14740;
Kool et al. 2019 "Buy 4 REINFORCE samples, get a baseline for free").

k samples per prompt; the baseline of sample i is the mean reward of the *other* k − 1 samples,
subtracted (not divided: docs/algorithm_notes.md §7 on seed 004), with no std normalisation:

    A_i = r_i − 1/(k−1) Σ_{j≠i} r_j  =  k/(k−1) · (r_i − mean_j r_j)

The reward is the paper's KL-penalised sequence reward r_i = R(x, y_i) − β Σ_t log(π_old/π_ref)_t
(``kl_coef`` β, fixed or adaptive, rlx.algos.kl_control). The same A_i is given to every token of
y_i; the paper's gradient is the sequence-level one, (1/k) Σ_i A_i ∇ log π(y_i|x)
(``loss_agg_mode: seq_mean_token_sum``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlx.algos.reinforce import KLInReward, per_token
from rlx.registry import ALGOS


def rloo_baseline(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """b_i = (Σ_j r_j − r_i) / (k − 1) for rewards [N] in contiguous groups of k = group_size."""
    if group_size < 2:
        raise ValueError(f"RLOO needs group_size >= 2 (got {group_size})")
    r = rewards.view(-1, group_size)
    return ((r.sum(-1, keepdim=True) - r) / (group_size - 1)).reshape(-1)


def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """A_i = r_i − b_i (leave-one-out baseline, subtracted). Returns [N]."""
    return rewards - rloo_baseline(rewards, group_size)


@ALGOS.register("rloo")
@dataclass(frozen=True, kw_only=True)
class RLOO(KLInReward):
    def estimate(self, batch, *, kl, kl_coef):
        seq = self.sequence_rewards(batch, kl, kl_coef)
        return per_token(rloo_advantages(seq, self.group_size), batch.response_mask), {}
