"""Dr. GRPO — GRPO Done Right (Liu et al. 2025, "Understanding R1-Zero-Like Training", arXiv:2503.20783 §3.2).

Two biases of GRPO removed (§3.1): the per-response 1/|o_i| (a length bias: short correct answers get
larger updates, long wrong ones smaller penalties) and the division by std (a question-difficulty
bias). Advantage, the same for every token of sample i:

    A_i = r_i − mean(r_1..r_G)                                              (no std)

Loss: the clipped surrogate summed over tokens and divided by a *constant*, the generation budget
L_max (``seq_mean_token_sum_norm``; the trainer passes L_max = rollout.max_new_tokens):

    L = (1 / (n·L_max)) Σ_i Σ_t −min(ρ_t A_i, clip(ρ_t, 1−ε_low, 1+ε_high) A_i)

Relation to GRPO: for a group with std s, A^Dr = (s + eps)·A^GRPO; for responses of length L_max,
``seq_mean_token_sum_norm`` equals ``seq_mean_token_mean``. The shared options of GRPO (KL term,
entropy bonus, dual-clip, stop-gradient clip) are available with the same keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlx.algos.group import GroupAlgorithm
from rlx.algos.grpo import ClippedGroupLoss, grpo_loss
from rlx.ops import group_normalize
from rlx.registry import ALGOS


def dr_grpo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Per-sample advantages [N]: reward minus its group mean (rewards [N], G contiguous per prompt)."""
    return group_normalize(rewards, group_size, scale=False)


def dr_grpo_loss(logp, old_logp, advantages, response_mask, ref_logp=None, *, eps_low=0.2, eps_high=0.2,
                 loss_agg_mode="seq_mean_token_sum_norm", max_len=None, **kw):
    """(loss, metrics): GRPO's clipped surrogate with the constant-length aggregation by default."""
    return grpo_loss(logp, old_logp, advantages, response_mask, ref_logp, eps_low=eps_low, eps_high=eps_high,
                     loss_agg_mode=loss_agg_mode, max_len=max_len, **kw)


@ALGOS.register("dr_grpo")
@dataclass(frozen=True, kw_only=True)
class DrGRPO(ClippedGroupLoss, GroupAlgorithm):
    """No division by the group std (§3.1): ``GroupAlgorithm``'s centred advantage."""
