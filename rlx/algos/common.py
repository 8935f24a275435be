"""Pieces several policy-gradient algorithms share: the clipped surrogate and the KL loss term."""

from __future__ import annotations

import torch

from rlx.ops import aggregate, kl_penalty, masked_mean


def clipped_surrogate(logp, old_logp, advantages, response_mask, *, eps_low: float, eps_high: float,
                      loss_agg_mode: str, num_tokens=None, num_seqs=None, max_len=None):
    """PPO clipped objective per token (Schulman et al. 2017, arXiv:1707.06347 eq. 7), as a loss:

        L_t = −min(r_t·A_t, clip(r_t, 1−eps_low, 1+eps_high)·A_t),   r_t = exp(logp_t − old_logp_t)

    aggregated with ``loss_agg_mode`` (ops.aggregate). Clip fractions count tokens where the clipped
    branch is the active one: ``clip_frac_high`` r > 1+eps_high with A > 0, ``clip_frac_low``
    r < 1−eps_low with A < 0 (their sum is ``clip_frac``). ``kl_old`` is the k3 estimate of
    KL(π_old‖π_θ) on the sampled tokens, the size of the update so far.
    """
    log_ratio = logp - old_logp
    ratio = log_ratio.exp()
    pg1 = -ratio * advantages
    pg2 = -ratio.clamp(1 - eps_low, 1 + eps_high) * advantages
    per_token = torch.maximum(pg1, pg2)
    loss = aggregate(per_token, response_mask, loss_agg_mode, num_tokens=num_tokens, num_seqs=num_seqs,
                     max_len=max_len)
    with torch.no_grad():
        high = (ratio > 1 + eps_high) & (advantages > 0)
        low = (ratio < 1 - eps_low) & (advantages < 0)
        valid_ratio = ratio.masked_fill(~response_mask, 1.0)
        metrics = {
            "policy/clip_frac_high": masked_mean(high.float(), response_mask),
            "policy/clip_frac_low": masked_mean(low.float(), response_mask),
            "policy/clip_frac": masked_mean((high | low).float(), response_mask),
            "policy/ratio_max": valid_ratio.max(),
            "policy/ratio_min": valid_ratio.min(),
            "policy/kl_old": masked_mean(kl_penalty(old_logp, logp, "k3"), response_mask),
            "loss/policy": loss.detach(),
        }
    return loss, metrics


def kl_loss(logp, ref_logp, response_mask, *, beta: float, estimator: str, loss_agg_mode: str,
            num_tokens=None, num_seqs=None, max_len=None):
    """β · agg(KL_est(π_θ‖π_ref)) as a loss term (GRPO puts KL in the loss: arXiv:2402.03300 eq. 3)."""
    kl = kl_penalty(logp, ref_logp, estimator)
    term = aggregate(kl, response_mask, loss_agg_mode, num_tokens=num_tokens, num_seqs=num_seqs, max_len=max_len)
    metrics = {"policy/kl_ref": masked_mean(kl.detach(), response_mask), "loss/kl": (beta * term).detach()}
    return beta * term, metrics
