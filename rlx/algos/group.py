"""The group-advantage base of the GRPO family (GRPO, Dr. GRPO, DAPO, GSPO, GSPO-token, GMPO, CISPO, TTRL):
the group statistics of ``ops.group_normalize`` computed once, over the samples whose reward was scored.

A sample whose reward failed arrives with an all-False response mask (the loop masks it out of the update)
and a placeholder reward; it must stay out of its group's mean and std too, or it shifts every other
sample's advantage (one failure in a group of 8 moved them by about 8%). ``valid_mask`` does that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from rlx.algos.base import PolicyAlgorithm, check
from rlx.ops import group_normalize


def group_advantages(rewards: torch.Tensor, response_mask: torch.Tensor, group_size: int, *, scale: bool,
                     eps: float = 1e-4, always_masked: bool = False) -> torch.Tensor:
    """Per-sample advantages [N] from rewards [N] (G contiguous samples per prompt) and the response mask
    [N, T]: rows with no valid token are left out of their group's statistics and get 0. Where every row is
    valid the unmasked arithmetic runs (``always_masked=False``), so results are bit-identical to it."""
    valid = response_mask.any(-1)
    mask = valid if always_masked or not bool(valid.all()) else None
    return group_normalize(rewards, group_size, scale=scale, eps=eps, valid_mask=mask)


@dataclass(frozen=True, kw_only=True)
class GroupAlgorithm(PolicyAlgorithm):
    """An algorithm whose advantage is the group-centred reward, the same for every token of a sample (no
    division by the group std: Dr. GRPO). ``ScaledGroup`` divides by it."""

    always_masked: ClassVar[bool] = False

    @property
    def scale(self) -> bool:
        return False

    @property
    def eps(self) -> float:
        return 0.0

    def advantages(self, batch):
        mask = batch.response_mask
        adv = group_advantages(batch.rewards, mask, self.group_size, scale=self.scale, eps=self.eps,
                               always_masked=self.always_masked)
        return adv.unsqueeze(-1).expand_as(mask).to(torch.float32), {}


@dataclass(frozen=True, kw_only=True)
class ScaledGroup(GroupAlgorithm):
    """Group-normalised advantages: (r − mean) / (std + std_eps)."""

    std_eps: float

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.std_eps >= 0, f"algo.std_eps={self.std_eps}: must be >= 0")

    @property
    def scale(self) -> bool:
        return True

    @property
    def eps(self) -> float:
        return float(self.std_eps)


@dataclass(frozen=True, kw_only=True)
class SwitchableScale(ScaledGroup):
    """``ScaledGroup`` whose division by the group std is a key, ``scale_rewards`` (false: centred only, and
    ``std_eps`` unused)."""

    scale_rewards: bool

    @property
    def scale(self) -> bool:
        return bool(self.scale_rewards)

    @property
    def eps(self) -> float:
        return float(self.std_eps) if self.scale_rewards else 0.0
