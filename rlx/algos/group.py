"""The group-advantage base of the GRPO family (GRPO, Dr. GRPO, DAPO, GSPO, GSPO-token, GMPO, CISPO, TTRL):
the group statistics of ``ops.group_normalize`` computed once, over the samples whose reward was scored.

A sample whose reward failed arrives with an all-False response mask (the loop masks it out of the update)
and a placeholder reward; it must stay out of its group's mean and std too, or it shifts every other
sample's advantage (one failure in a group of 8 moved them by about 8%). ``valid_mask`` does that.
"""

from __future__ import annotations

import torch

from rlx.algos.base import Algorithm
from rlx.ops import group_normalize


def group_advantages(rewards: torch.Tensor, response_mask: torch.Tensor, group_size: int, *, scale: bool,
                     eps: float = 1e-4, always_masked: bool = False) -> torch.Tensor:
    """Per-sample advantages [N] from rewards [N] (G contiguous samples per prompt) and the response mask
    [N, T]: rows with no valid token are left out of their group's statistics and get 0. Where every row is
    valid the unmasked arithmetic runs (``always_masked=False``), so results are bit-identical to it."""
    valid = response_mask.any(-1)
    mask = valid if always_masked or not bool(valid.all()) else None
    return group_normalize(rewards, group_size, scale=scale, eps=eps, valid_mask=mask)


class GroupAlgorithm(Algorithm):
    """An algorithm whose advantage is the group-normalised reward, the same for every token of a sample.
    Subclasses set ``scale`` (divide by the group std) and may read ``std_eps`` from their config."""

    scale = True
    always_masked = False

    def advantages(self, rewards, response_mask, **batch):
        adv = group_advantages(rewards, response_mask, self.group_size, scale=self.scale,
                               eps=float(self.cfg.std_eps) if self.scale else 0.0, always_masked=self.always_masked)
        return adv.unsqueeze(-1).expand_as(response_mask).to(torch.float32)
