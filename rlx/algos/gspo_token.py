"""GSPO-token — the token-level form of GSPO (Zheng et al. 2025, arXiv:2507.18071 §4.3).

Each token gets the ratio

    s_{i,t}(θ) = sg[s_i(θ)] · π_θ(o_{i,t}|·) / sg[π_θ(o_{i,t}|·)]

whose *value* is the sequence ratio s_i of GSPO (so clipping acts per response) but whose gradient
is s_i · ∇log π_θ(o_{i,t}|·) for that token alone, which allows token-level advantages Â_{i,t}:

    L = (1/n) Σ_i (1/|o_i|) Σ_t −min(s_{i,t} Â_{i,t}, clip(s_{i,t}, 1−ε_low, 1+ε_high) Â_{i,t})

With Â_{i,t} = Â_i (the group advantage used here) loss and gradient equal GSPO's (§4.3). It is
the clipped surrogate of surrogate.py with π_old replaced by sg[π_θ]/sg[s_i], so dual-clip, the
stop-gradient clip mode, KL and entropy terms all apply per token with the same keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlx.algos.base import Aggregated
from rlx.algos.group import ScaledGroup
from rlx.algos.gspo import sequence_log_ratio
from rlx.algos.surrogate import (
    ClipOptions,
    ClippedRatio,
    Regularized,
    add_regularizers,
    clipped_surrogate,
)
from rlx.ops import kl_penalty, masked_mean
from rlx.registry import ALGOS


def gspo_token_loss(logp, old_logp, advantages, response_mask, ref_logp=None, *, eps_low=3e-4, eps_high=4e-4,
                    loss_agg_mode="seq_mean_token_mean", num_tokens=None, num_seqs=None, max_len=None,
                    entropy=None, beta=0.0, kl_estimator="k3", entropy_coef=0.0, clip_ratio_c=None,
                    clip_mode="standard", is_weights=None):
    """(loss, metrics) of GSPO-token for token log-probs [n, T] and token advantages [n, T]."""
    norm = dict(loss_agg_mode=loss_agg_mode, num_tokens=num_tokens, num_seqs=num_seqs, max_len=max_len)
    log_s = sequence_log_ratio(logp, old_logp, response_mask).detach()
    # exp(logp − shifted_old) = sg[s_i]·π_θ/sg[π_θ]: value s_i, gradient s_i·∇log π_θ(o_{i,t})
    shifted_old = logp.detach() - log_s.unsqueeze(-1)
    loss, metrics = clipped_surrogate(logp, shifted_old, advantages, response_mask, eps_low=eps_low,
                                      eps_high=eps_high, clip_ratio_c=clip_ratio_c, clip_mode=clip_mode,
                                      is_weights=is_weights, **norm)
    with torch.no_grad():
        metrics["policy/kl_old"] = masked_mean(kl_penalty(old_logp, logp, "k3"), response_mask)
    return add_regularizers(loss, metrics, logp, ref_logp, entropy, response_mask, beta=beta,
                            kl_estimator=kl_estimator, entropy_coef=entropy_coef, **norm)


@ALGOS.register("gspo_token")
@dataclass(frozen=True, kw_only=True)
class GSPOToken(Aggregated, ClippedRatio, ClipOptions, Regularized, ScaledGroup):

    def loss(self, logp, mb):
        return gspo_token_loss(logp, mb.old_logp, mb.advantages, mb.response_mask, mb.ref_logp, eps_low=self.eps_low,
                               eps_high=self.eps_high, loss_agg_mode=self.loss_agg_mode, entropy=mb.entropy,
                               is_weights=mb.is_weights, **self.regularizer_options, **self.clip_options,
                               **mb.norm)
