"""Clip-Cov (Cui et al. 2025, "The Entropy Mechanism of Reinforcement Learning for Reasoning Language Models",
arXiv:2505.22617 §4): GRPO that leaves a few random high-covariance tokens out of each update.

The paper finds the policy entropy falls with the covariance between a token's log-prob and its advantage, and
that a small share of tokens with a large covariance drives the collapse. Per valid token t of the micro-batch
(means over its valid tokens; the loss sees one micro-batch, as verl's does):

    Cov_t = (log π_θ(y_t) − mean log π_θ) · (A_t − mean A)

Clip-Cov draws k = max(⌊r·N⌋, 1) tokens (N valid tokens, r = ``clip_cov_ratio``) uniformly without replacement
(``torch.randperm`` on torch's global generator, saved with every checkpoint) among the candidates

    ω_low < Cov_t < ω_high  (``clip_cov_lb``, ``clip_cov_ub``),   PPO clip not active at t,

and detaches them: their surrogate term is multiplied by 0, so it adds no gradient and no value (verl's
``corr`` mask; the token still counts in the token_mean denominator). Fewer candidates than k: all of them.

    L = agg_t[ (1 − 𝟙[t ∈ I_clip]) · L^PPO_t ] + β·KL + entropy bonus        (L^PPO_t: grpo.grpo_loss)

verl: ``actor_rollout_ref.actor.policy_loss.loss_mode=clip_cov`` (verl/trainer/ppo/core_algos.py,
``compute_policy_loss_clip_cov``), same keys and defaults (r = 2e-4, ω = (1, 5)). The authors' recipe
(recipe/dapo/7b_clip_cov.sh of PRIME-RL/Entropy-Mechanism-of-RL) sets ε_low = ε_high = 1, so Clip-Cov replaces
PPO's upper clip below ratio 2; the preset follows it. Because the draw and the means are per micro-batch, the
gradient depends on ``trainer.micro_batch_size`` (unlike the other losses), as it does in verl.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlx.algos.base import check
from rlx.algos.grpo import GRPO, grpo_loss
from rlx.ops import masked_mean
from rlx.registry import ALGOS


def token_covariance(logp: torch.Tensor, advantages: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Cov_t [n, T] = (log π_t − mean log π)·(A_t − mean A), means over the valid tokens; detached, 0 at padding."""
    logp = logp.detach()
    cov = (logp - masked_mean(logp, response_mask)) * (advantages - masked_mean(advantages, response_mask))
    return cov.masked_fill(~response_mask, 0.0)


def clip_cov_select(logp, advantages, response_mask, *, clip_cov_ratio: float, clip_cov_lb: float,
                    clip_cov_ub: float, exclude=None):
    """(selected, candidates), bool [n, T]: the candidates are the valid tokens with lb < Cov_t < ub outside
    ``exclude`` [n, T]; ``selected`` is a uniform draw of max(⌊ratio·N⌋, 1) of them (all, if fewer)."""
    cov = token_covariance(logp, advantages, response_mask)
    candidates = response_mask & (cov > clip_cov_lb) & (cov < clip_cov_ub)
    if exclude is not None:
        candidates = candidates & ~exclude
    k = max(int(clip_cov_ratio * int(response_mask.sum())), 1)
    idx = candidates.flatten().nonzero().squeeze(1)
    selected = torch.zeros_like(candidates).flatten()
    if len(idx) > 0:
        selected[idx[torch.randperm(len(idx))[:k].to(idx.device)]] = True
    return selected.view_as(candidates), candidates


def clip_cov_loss(logp, old_logp, advantages, response_mask, ref_logp=None, *, clip_cov_ratio=2e-4, clip_cov_lb=1.0,
                  clip_cov_ub=5.0, eps_low=0.2, eps_high=0.2, is_weights=None, **options):
    """(loss, metrics) of Clip-Cov for token log-probs [n, T] and token advantages [n, T]: ``grpo_loss`` (its
    ``options``: aggregation, totals, β, KL estimator, entropy, dual-clip, clip mode) with the selected tokens'
    surrogate terms multiplied by 0 (on top of ``is_weights``). Metrics: ``clip_cov/clip_frac`` (share of valid
    tokens detached), ``clip_cov/candidate_frac``, ``clip_cov/cov`` (mean Cov_t: the covariance itself)."""
    with torch.no_grad():
        ratio = (logp - old_logp).exp()
        ppo_clipped = ((ratio > 1 + eps_high) & (advantages > 0)) | ((ratio < 1 - eps_low) & (advantages < 0))
        selected, candidates = clip_cov_select(logp, advantages, response_mask, clip_cov_ratio=clip_cov_ratio,
                                               clip_cov_lb=clip_cov_lb, clip_cov_ub=clip_cov_ub, exclude=ppo_clipped)
    keep = (~selected).to(logp.dtype)
    loss, metrics = grpo_loss(logp, old_logp, advantages, response_mask, ref_logp, eps_low=eps_low, eps_high=eps_high,
                              is_weights=keep if is_weights is None else keep * is_weights, **options)
    with torch.no_grad():
        metrics.update({"clip_cov/clip_frac": masked_mean(selected.float(), response_mask),
                        "clip_cov/candidate_frac": masked_mean(candidates.float(), response_mask),
                        "clip_cov/cov": masked_mean(token_covariance(logp, advantages, response_mask), response_mask)})
    return loss, metrics


@ALGOS.register("clip_cov")
@dataclass(frozen=True, kw_only=True)
class ClipCov(GRPO):
    clip_cov_ratio: float   # r: share of the micro-batch's valid tokens detached (at least one)
    clip_cov_lb: float      # ω_low < Cov_t
    clip_cov_ub: float      # Cov_t < ω_high

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 < self.clip_cov_ratio <= 1, f"algo.clip_cov_ratio={self.clip_cov_ratio}: must be in (0, 1]")
        check(self.clip_cov_lb < self.clip_cov_ub,
              f"algo.clip_cov_lb={self.clip_cov_lb}: must be < algo.clip_cov_ub={self.clip_cov_ub}")

    def loss(self, logp, mb):
        return clip_cov_loss(logp, mb.old_logp, mb.advantages, mb.response_mask, mb.ref_logp,
                             clip_cov_ratio=self.clip_cov_ratio, clip_cov_lb=self.clip_cov_lb,
                             clip_cov_ub=self.clip_cov_ub, eps_low=self.eps_low, eps_high=self.eps_high,
                             loss_agg_mode=self.loss_agg_mode, entropy=mb.entropy, is_weights=mb.is_weights,
                             **self.regularizer_options, **self.clip_options, **mb.norm)
