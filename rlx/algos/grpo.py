"""GRPO — Group Relative Policy Optimization (Shao et al. 2024, DeepSeekMath, arXiv:2402.03300 §4.1).

Advantage (outcome supervision, §4.1.2), the same for every token of sample i in a group of G:

    A_i = (r_i − mean(r_1..r_G)) / (std(r_1..r_G) + eps)          [std: unbiased; off with scale_rewards=false]

Loss (eq. 3, token-level ratio, KL in the loss rather than in the reward):

    L = agg_t[ −min(ρ_t A_i, clip(ρ_t, 1−ε_low, 1+ε_high) A_i) + β·KL_est(π_θ‖π_ref)_t ]

with ρ_t = π_θ(o_t|·)/π_old(o_t|·) and the aggregation ``loss_agg_mode`` (ops.aggregate).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlx.algos.base import Aggregated
from rlx.algos.group import SwitchableScale
from rlx.algos.surrogate import (
    ClipOptions,
    ClippedRatio,
    Regularized,
    add_regularizers,
    clipped_surrogate,
)
from rlx.ops import group_normalize
from rlx.registry import ALGOS


def grpo_advantages(rewards: torch.Tensor, group_size: int, scale_rewards: bool = True,
                    std_eps: float = 1e-4, valid_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample advantages [N] from rewards [N] (G contiguous samples per prompt); samples outside
    ``valid_mask`` (failed rewards) are left out of the group statistics and get 0."""
    return group_normalize(rewards, group_size, scale=scale_rewards, eps=std_eps, valid_mask=valid_mask)


def grpo_loss(logp, old_logp, advantages, response_mask, ref_logp=None, *, eps_low=0.2, eps_high=0.2,
              beta=0.0, kl_estimator="k3", loss_agg_mode="token_mean", num_tokens=None, num_seqs=None,
              max_len=None, entropy=None, entropy_coef=0.0, clip_ratio_c=None, clip_mode="standard",
              is_weights=None):
    """(loss, metrics) of GRPO for token log-probs [n, T] and token advantages [n, T].

    Shared options (surrogate.py): ``clip_ratio_c`` dual-clip, ``clip_mode`` stop-gradient clipping,
    ``entropy_coef`` entropy bonus on ``entropy`` [n, T], straight-through ``kl_estimator`` ("k3+"),
    ``is_weights`` [n, T] truncated importance weights on the surrogate (rollout.is_correction).
    """
    norm = dict(loss_agg_mode=loss_agg_mode, num_tokens=num_tokens, num_seqs=num_seqs, max_len=max_len)
    loss, metrics = clipped_surrogate(logp, old_logp, advantages, response_mask, eps_low=eps_low,
                                      eps_high=eps_high, clip_ratio_c=clip_ratio_c, clip_mode=clip_mode,
                                      is_weights=is_weights, **norm)
    return add_regularizers(loss, metrics, logp, ref_logp, entropy, response_mask, beta=beta,
                            kl_estimator=kl_estimator, entropy_coef=entropy_coef, **norm)


@dataclass(frozen=True, kw_only=True)
class ClippedGroupLoss(Aggregated, ClippedRatio, ClipOptions, Regularized):
    """GRPO's clipped token-level surrogate plus its regularizers, for the group algorithms that share it
    (GRPO, TTRL, DAPO, Dr. GRPO)."""

    def loss(self, logp, mb):
        return grpo_loss(logp, mb.old_logp, mb.advantages, mb.response_mask, mb.ref_logp, eps_low=self.eps_low,
                         eps_high=self.eps_high, loss_agg_mode=self.loss_agg_mode, entropy=mb.entropy,
                         is_weights=mb.is_weights, **self.regularizer_options, **self.clip_options, **mb.norm)


@ALGOS.register("grpo")
@dataclass(frozen=True, kw_only=True)
class GRPO(ClippedGroupLoss, SwitchableScale):
    always_masked = True   # GRPO has always run the masked arithmetic
