"""GPG — Group Policy Gradient (Chu et al. 2025, "GPG: A Simple and Strong Reinforcement Learning Baseline for
Model Reasoning", arXiv:2504.02546 §2.2; verl ``adv_estimator: gpg`` + ``policy_loss.loss_mode: gpg``,
verl/trainer/ppo/core_algos.py ``compute_gpg_outcome_advantage`` / ``compute_policy_loss_gpg``).

The plain policy gradient on the group-mean baseline: no importance ratio, no clipping, no critic, no reference
model (the objective is the original RL objective, not a surrogate). Advantage, the same for every token of
sample i (eq. 6), scaled by the accurate-gradient-estimation factor α (AGE, eq. 7-8):

    Â_i = α · (r_i − mean(r_1..r_G)) / F_norm          F_norm = 1 (paper default; std + std_eps with scale_rewards)
    α   = B / (B − M)                                  (alpha_correction; α = 1 when off)

with B the samples of the batch and M those in groups whose rewards are all equal (all right or all wrong):
their Â is 0, so averaging the loss over all B samples shrinks the gradient of the B − M informative ones by
(B − M)/B; α undoes it (ĝ = Σ_{i>M} g_i / (B − M) = α·g, eq. 7). Samples whose reward failed count in
neither B nor M. Loss (eq. 5, token-level normaliser 1/Σ|o_i|, ``token_mean``):

    L = agg_t[ −Â_i · log π_θ(o_{i,t} | q, o_{i,<t}) ]

On-policy its gradient is REINFORCE's with the group baseline; with several epochs or mini-batches it is the
gradient at the current θ of samples drawn from π_old, uncorrected (verl's ``gpg`` loss does the same).

Where verl differs: verl's advantage takes α = B / count_nonzero(r) — B over the samples with a *non-zero reward*
(for 0/1 rewards, the correct ones), not B/(B − M) — and F_norm fixed to 1. Here α is the paper's B/(B − M), as
the authors' code computes it (AMAP-ML/GPG ``open-r1/src/open_r1/gpg_trainer.py``: the loss divided by
``inverse_alpha`` = valid groups / groups); multiplying Â by α equals multiplying the loss by α (it is linear in Â).
Not implemented: the paper's resampling threshold β_th = 1/α_th (generate more groups until the share of valid
samples (B − M)/B reaches β_th; the authors' ``min_inverse_alpha``): it is a threshold on the valid share, not on
the reward std, and rlx's refill loop (``gen_rounds``/``keep``) can only refill to B valid groups (DAPO's
dynamic sampling, β_th = 1), not stop at a share and pad with invalid groups.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlx.algos.base import Aggregated
from rlx.algos.group import SwitchableScale, group_advantages
from rlx.algos.surrogate import Regularized, add_regularizers, ratio_metrics
from rlx.ops import aggregate
from rlx.registry import ALGOS


def gpg_alpha(rewards: torch.Tensor, group_size: int, valid: torch.Tensor | None = None) -> tuple[float, int, int]:
    """(α, B, M) of the batch: B samples with a scored reward (``valid`` [N], default all), M of them in groups
    whose scored rewards are all equal (or that have fewer than two); α = B / (B − M), 1 when B = M."""
    r = rewards.view(-1, group_size)
    v = torch.ones_like(r, dtype=torch.bool) if valid is None else valid.view(-1, group_size)
    inf = torch.tensor(float("inf"), dtype=r.dtype, device=r.device)
    hi = torch.where(v, r, -inf).max(-1).values
    lo = torch.where(v, r, inf).min(-1).values
    degenerate = (hi == lo) | (v.sum(-1) < 2)          # a group with no spread gives every sample Â = 0
    n_valid = v.sum(-1)
    B, M = int(n_valid.sum()), int(n_valid[degenerate].sum())
    return (B / (B - M) if B > M else 1.0), B, M


def gpg_advantages(rewards: torch.Tensor, response_mask: torch.Tensor, group_size: int, *, scale: bool = False,
                   eps: float = 1e-4, alpha_correction: bool = True) -> tuple[torch.Tensor, float, int, int]:
    """(Â [N], α, B, M) for rewards [N] (G contiguous per prompt) and the response mask [N, T]: the group-centred
    reward (divided by the group std + eps with ``scale``) times α; rows with no valid token get 0 and are left
    out of their group's statistics and of B and M."""
    valid = response_mask.any(-1)
    adv = group_advantages(rewards, response_mask, group_size, scale=scale, eps=eps)
    alpha, B, M = gpg_alpha(rewards, group_size, valid)
    if not alpha_correction:
        alpha = 1.0
    return adv * alpha, alpha, B, M


def gpg_loss(logp, old_logp, advantages, response_mask, ref_logp=None, *, loss_agg_mode="token_mean",
             num_tokens=None, num_seqs=None, max_len=None, entropy=None, beta=0.0, kl_estimator="k3",
             entropy_coef=0.0, is_weights=None):
    """(loss, metrics): agg(−Â·log π_θ) for token log-probs [n, T] and token advantages [n, T], plus the shared
    regularizers (β·KL to the reference, entropy bonus; both off in the paper). ``is_weights`` [n, T]
    (rollout.is_correction) multiply the per-token term. ``old_logp`` is only measured (kl_old, ratios)."""
    norm = dict(loss_agg_mode=loss_agg_mode, num_tokens=num_tokens, num_seqs=num_seqs, max_len=max_len)
    per_token = -advantages * logp
    if is_weights is not None:
        per_token = per_token * is_weights
    loss = aggregate(per_token, response_mask, loss_agg_mode, num_tokens=num_tokens, num_seqs=num_seqs,
                     max_len=max_len)
    with torch.no_grad():
        ratio = (logp - old_logp).exp().masked_fill(~response_mask, 1.0)
        metrics = ratio_metrics(response_mask, ratio, logp, old_logp, loss)
    return add_regularizers(loss, metrics, logp, ref_logp, entropy, response_mask, beta=beta,
                            kl_estimator=kl_estimator, entropy_coef=entropy_coef, **norm)


@ALGOS.register("gpg")
@dataclass(frozen=True, kw_only=True)
class GPG(Aggregated, Regularized, SwitchableScale):
    """``scale_rewards`` is F_norm: false = 1 (the paper), true = the group std + std_eps (GRPO's)."""

    alpha_correction: bool   # AGE: Â ·= α = B/(B − M) (eq. 7-8)

    def advantages(self, batch):
        mask = batch.response_mask
        adv, alpha, B, M = gpg_advantages(batch.rewards, mask, self.group_size, scale=self.scale, eps=self.eps,
                                          alpha_correction=self.alpha_correction)
        metrics = {"gpg/alpha": alpha, "gpg/zero_adv_frac": M / B if B else 0.0}
        return adv.unsqueeze(-1).expand_as(mask).to(torch.float32), metrics

    def loss(self, logp, mb):
        return gpg_loss(logp, mb.old_logp, mb.advantages, mb.response_mask, mb.ref_logp,
                        loss_agg_mode=self.loss_agg_mode, entropy=mb.entropy, is_weights=mb.is_weights,
                        **self.regularizer_options, **mb.norm)
