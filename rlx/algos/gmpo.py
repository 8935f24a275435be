"""GMPO — Geometric-Mean Policy Optimization (arXiv:2507.20673; docs/algorithm_notes.md §2.16).

GRPO averages the token terms arithmetically; GMPO takes their geometric mean, which an extreme
token ratio moves far less. Per response, with sgn = sign(Â_i) and token log-ratios
ℓ_t = log π_θ(o_{i,t}|·) − log π_old(o_{i,t}|·) clipped *in log space* (token level, pessimistic):

    ℓ̃_t = sgn · min(sgn·ℓ_t, sgn·clip(ℓ_t, −ε_low, ε_high))
    L   = (1/n) Σ_i −Â_i · exp( (1/|o_i|) Σ_t ℓ̃_t )

i.e. ratio_i = Π_t (clipped r_t)^{1/|o_i|}. The paper's range is (e^{−0.4}, e^{0.4}): ε_low = ε_high
= 0.4, wider than GRPO's (1 ± 0.2); no KL (β = 0). When every ℓ_t is inside the range the loss is
−Â_i·exp(mean_t ℓ_t) and its gradient −Â_i·ratio_i·(1/|o_i|)Σ_t ∇log π_θ (as GSPO's); a token whose
clipped branch is active gets no gradient. Clip fractions count tokens; ratio extremes are per
response. KL and entropy terms, when on, use the per-response mean (``seq_mean_token_mean``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlx.algos.group import ScaledGroup
from rlx.algos.surrogate import ClippedRatio, Regularized, add_regularizers, clip_metrics
from rlx.ops import masked_mean
from rlx.registry import ALGOS


def gmpo_loss(logp, old_logp, advantages, response_mask, ref_logp=None, *, eps_low=0.4, eps_high=0.4,
              num_tokens=None, num_seqs=None, max_len=None, entropy=None, beta=0.0, kl_estimator="k3",
              entropy_coef=0.0):
    """(loss, metrics) of GMPO for token log-probs [n, T] and advantages [n, T] (constant per row)."""
    log_ratio = logp - old_logp
    adv = masked_mean(advantages, response_mask, dim=-1)
    sgn = torch.sign(adv).unsqueeze(-1)
    clipped = log_ratio.clamp(-eps_low, eps_high)
    used = sgn * torch.minimum(sgn * log_ratio, sgn * clipped)
    ratio = masked_mean(used, response_mask, dim=-1).exp()           # geometric mean of clipped ratios
    valid = response_mask.any(-1)
    n_seq = valid.shape[0] if num_seqs is None else num_seqs
    loss = (-adv * ratio).masked_fill(~valid, 0.0).sum() / n_seq
    with torch.no_grad():
        high = (sgn > 0) & (log_ratio > eps_high)
        low = (sgn < 0) & (log_ratio < -eps_low)
        r = ratio[valid] if valid.any() else torch.ones(1)
        metrics = clip_metrics(high, low, response_mask, r, logp, old_logp, loss)
    return add_regularizers(loss, metrics, logp, ref_logp, entropy, response_mask, beta=beta,
                            kl_estimator=kl_estimator, entropy_coef=entropy_coef, loss_agg_mode="seq_mean_token_mean",
                            num_tokens=num_tokens, num_seqs=num_seqs, max_len=max_len)


@ALGOS.register("gmpo")
@dataclass(frozen=True, kw_only=True)
class GMPO(ClippedRatio, Regularized, ScaledGroup):
    takes_is_weights = False   # one geometric-mean ratio per response: no per-token term to reweight

    def loss(self, logp, mb):
        return gmpo_loss(logp, mb.old_logp, mb.advantages, mb.response_mask, mb.ref_logp, eps_low=self.eps_low,
                         eps_high=self.eps_high, entropy=mb.entropy, **self.regularizer_options, **mb.norm)
