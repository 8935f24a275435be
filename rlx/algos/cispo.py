"""CISPO — Clipped IS-weight Policy Optimization (MiniMax-M1, arXiv:2506.13585 §3.1).

PPO/GRPO clipping zeroes the gradient of tokens whose ratio left the trust region; these are often
rare, high-value tokens. CISPO clips the importance-sampling *weight* instead, under a stop-gradient,
so every token keeps a REINFORCE gradient:

    J = E[ 1/Σ_i|o_i| · Σ_i Σ_t sg(r̂_{i,t}) · Â_{i,t} · log π_θ(o_{i,t}|·) ]
    r̂_{i,t} = clip(r_{i,t}, 1 − ε^IS_low, 1 + ε^IS_high),   r_{i,t} = π_θ/π_old

with GRPO's group-normalised advantage and token-mean aggregation. The paper sets no lower bound
(ε^IS_low large; 1.0 here, as r ≥ 0) and tunes only ε^IS_high. The loss is written
−sg(r̂)·Â·(1 + log π_θ − sg(log π_θ)): the gradient is the paper's −sg(r̂)·Â·∇log π_θ, and the value
is −r̂·Â (the clipped IS-weighted advantage; −mean(Â) at r = 1) rather than −r̂·Â·log π_θ.
``policy/clip_frac_high`` / ``_low`` count tokens whose weight was truncated from above / below
(whatever the sign of Â); nothing is dropped from the gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlx.algos.base import Aggregated, check
from rlx.algos.group import ScaledGroup
from rlx.algos.surrogate import Regularized, add_regularizers, clip_metrics
from rlx.ops import aggregate
from rlx.registry import ALGOS


def cispo_loss(logp, old_logp, advantages, response_mask, ref_logp=None, *, eps_low_is=1.0, eps_high_is=0.28,
               loss_agg_mode="token_mean", num_tokens=None, num_seqs=None, max_len=None, entropy=None, beta=0.0,
               kl_estimator="k3", entropy_coef=0.0, is_weights=None):
    """(loss, metrics) of CISPO for token log-probs [n, T] and token advantages [n, T]; ``is_weights`` [n, T]
    (rollout.is_correction) multiply the per-token term."""
    norm = dict(loss_agg_mode=loss_agg_mode, num_tokens=num_tokens, num_seqs=num_seqs, max_len=max_len)
    ratio = (logp - old_logp).exp()
    weight = ratio.clamp(1 - eps_low_is, 1 + eps_high_is).detach()
    per_token = -weight * advantages * (1 + logp - logp.detach())
    if is_weights is not None:
        per_token = per_token * is_weights
    loss = aggregate(per_token, response_mask, loss_agg_mode, num_tokens=num_tokens, num_seqs=num_seqs,
                     max_len=max_len)
    with torch.no_grad():
        high = ratio > 1 + eps_high_is
        low = ratio < 1 - eps_low_is
        metrics = clip_metrics(high, low, response_mask, ratio.masked_fill(~response_mask, 1.0), logp, old_logp, loss)
    return add_regularizers(loss, metrics, logp, ref_logp, entropy, response_mask, beta=beta,
                            kl_estimator=kl_estimator, entropy_coef=entropy_coef, **norm)


@ALGOS.register("cispo")
@dataclass(frozen=True, kw_only=True)
class CISPO(Aggregated, Regularized, ScaledGroup):
    eps_low_is: float
    eps_high_is: float

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.eps_high_is >= 0 and 0 <= self.eps_low_is <= 1,
              f"algo.eps_low_is={self.eps_low_is}, algo.eps_high_is={self.eps_high_is}: need 0 <= eps_low_is <= 1 "
              f"and eps_high_is >= 0")

    def loss(self, logp, mb):
        return cispo_loss(logp, mb.old_logp, mb.advantages, mb.response_mask, mb.ref_logp, eps_low_is=self.eps_low_is,
                          eps_high_is=self.eps_high_is, loss_agg_mode=self.loss_agg_mode, entropy=mb.entropy,
                          is_weights=mb.is_weights, **self.regularizer_options, **mb.norm)
