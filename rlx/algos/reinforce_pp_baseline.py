"""REINFORCE++-baseline (Hu 2025, arXiv:2501.03262, "REINFORCE++ w/ Baseline"): G samples per prompt,
the group-mean reward subtracted first, then REINFORCE++'s global (batch) normalisation.

    r̃_i   = r_i − mean_{j∈group(i)} r_j                                (group-mean baseline, no std)
    A_i,t = r̃_i − β Σ_{s≥t} KL_s                                       (KL in the reward, as REINFORCE++)
    Â_i,t = (A_i,t − mean_batch A) / std_batch A                        (all valid tokens of the batch)

The std is the batch's, not the group's: the paper's point is that the local (group) std gives a
biased estimator (GRPO divides by it). KL placement follows REINFORCE++ (in the reward, k1), as in
the NeMo-RL and ms-swift implementations of this variant.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlx.algos.reinforce_pp import ReinforcePP, reinforce_pp_advantages
from rlx.ops import group_normalize
from rlx.registry import ALGOS


def reinforce_pp_baseline_advantages(scores: torch.Tensor, response_mask: torch.Tensor, group_size: int,
                                     kl: torch.Tensor | None = None, kl_coef: float = 0.0,
                                     gamma: float = 1.0) -> torch.Tensor:
    """Token advantages [N, T] from scores [N] and a bool mask [N, T]: group-mean-centred scores, KL returns
    (a hole in the mask carried through, as in ``reinforce_pp_advantages``), then batch normalisation."""
    centred = group_normalize(scores.to(torch.float32), group_size, scale=False)
    return reinforce_pp_advantages(centred, response_mask, kl, kl_coef, gamma)


@ALGOS.register("reinforce_pp_baseline")
@dataclass(frozen=True, kw_only=True)
class ReinforcePPBaseline(ReinforcePP):
    min_group_size = 2
    takes_token_rewards = False   # its estimator centres the sequence scores only; token-level terms are refused

    def estimate(self, batch, *, kl, kl_coef):
        adv = reinforce_pp_baseline_advantages(batch.rewards, batch.response_mask, self.group_size, kl, kl_coef,
                                               self.gamma)
        return adv, {}
