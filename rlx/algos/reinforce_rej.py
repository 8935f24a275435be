"""Reinforce-Rej (Xiong et al. 2025, "A Minimalist Approach to LLM Reasoning", arXiv:2504.11343):
vanilla REINFORCE (A_i = r_i, clipped importance-weighted surrogate) that drops every prompt whose
G samples are all correct or all wrong.

    keep(group)  ⇔  the G rewards are not all equal      (binary reward: 0 < #correct < G)

Dropped groups carry no relative signal: all-wrong groups are the ones that hurt vanilla REINFORCE,
all-correct ones only sharpen an already solved prompt (and drive the KL up). With shaped rewards
(e.g. a format term) "uniform" means identical total rewards; a group with different rewards is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlx.algos.reinforce import Reinforce
from rlx.registry import ALGOS


def non_uniform_groups(rewards: torch.Tensor) -> torch.Tensor:
    """Bool [B] for rewards [B, G]: True where not every sample of the group has the same reward."""
    return (rewards.max(-1).values - rewards.min(-1).values) > 0


@ALGOS.register("reinforce_rej")
@dataclass(frozen=True, kw_only=True)
class ReinforceRej(Reinforce):
    min_group_size = 2   # the filter compares the samples of a group

    def keep(self, rewards: torch.Tensor) -> torch.Tensor:
        return non_uniform_groups(rewards)
