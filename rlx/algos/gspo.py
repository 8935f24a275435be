"""GSPO — Group Sequence Policy Optimization (Zheng et al. 2025, Qwen, arXiv:2507.18071 §4.1).

One importance ratio per response, length-normalised (the geometric mean of its token ratios):

    s_i(θ) = (π_θ(o_i|q) / π_old(o_i|q))^{1/|o_i|} = exp( (1/|o_i|) Σ_t log(π_θ(o_{i,t}|·) / π_old(o_{i,t}|·)) )

and sequence-level clipping of the group-normalised advantage Â_i (as GRPO's):

    L = (1/n) Σ_i −min(s_i Â_i, clip(s_i, 1−ε_low, 1+ε_high) Â_i)

Because s_i is a per-token geometric mean its deviations are tiny, so are the clip ranges: the paper
uses ε_low = 3e-4, ε_high = 4e-4 (§5.1). The gradient (§4.2) is s_i Â_i · (1/|o_i|) Σ_t ∇log π_θ:
every token of a response weighs the same. With one-token responses s_i is the token ratio and GSPO
is GRPO. Clip fractions and ratio extremes are per sequence; ``policy/kl_old`` stays per token.
Dual-clip (``clip_ratio_c``) and the stop-gradient clip mode apply to s_i at the sequence level.
KL and entropy terms, when on, use the per-response mean (``seq_mean_token_mean``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlx.algos.group import ScaledGroup
from rlx.algos.surrogate import ClipOptions, ClippedRatio, Regularized, add_regularizers, clipped_surrogate
from rlx.ops import kl_penalty, masked_mean
from rlx.registry import ALGOS


def sequence_log_ratio(logp, old_logp, response_mask) -> torch.Tensor:
    """log s_i [n]: the mean token log-ratio of each response (0 for a row without valid tokens)."""
    return masked_mean(logp - old_logp, response_mask, dim=-1)


def gspo_loss(logp, old_logp, advantages, response_mask, ref_logp=None, *, eps_low=3e-4, eps_high=4e-4,
              num_tokens=None, num_seqs=None, max_len=None, entropy=None, beta=0.0, kl_estimator="k3",
              entropy_coef=0.0, clip_ratio_c=None, clip_mode="standard"):
    """(loss, metrics) of GSPO for token log-probs [n, T] and advantages [n, T] (constant per row)."""
    log_s = sequence_log_ratio(logp, old_logp, response_mask)
    adv = masked_mean(advantages, response_mask, dim=-1)
    valid = response_mask.any(-1, keepdim=True)
    # one "token" per response: the clipped surrogate of s_i, averaged over the n responses
    loss, metrics = clipped_surrogate(log_s.unsqueeze(-1), torch.zeros_like(valid, dtype=log_s.dtype),
                                      adv.unsqueeze(-1), valid, eps_low=eps_low, eps_high=eps_high,
                                      loss_agg_mode="seq_mean_token_mean", num_seqs=num_seqs,
                                      clip_ratio_c=clip_ratio_c, clip_mode=clip_mode)
    with torch.no_grad():
        metrics["policy/kl_old"] = masked_mean(kl_penalty(old_logp, logp, "k3"), response_mask)
    return add_regularizers(loss, metrics, logp, ref_logp, entropy, response_mask, beta=beta,
                            kl_estimator=kl_estimator, entropy_coef=entropy_coef, loss_agg_mode="seq_mean_token_mean",
                            num_tokens=num_tokens, num_seqs=num_seqs, max_len=max_len)


@ALGOS.register("gspo")
@dataclass(frozen=True, kw_only=True)
class GSPO(ClippedRatio, ClipOptions, Regularized, ScaledGroup):
    takes_is_weights = False   # one ratio s_i per response: no per-token term to reweight

    def loss(self, logp, mb):
        return gspo_loss(logp, mb.old_logp, mb.advantages, mb.response_mask, mb.ref_logp, eps_low=self.eps_low,
                         eps_high=self.eps_high, entropy=mb.entropy, **self.regularizer_options,
                         **self.clip_options, **mb.norm)
