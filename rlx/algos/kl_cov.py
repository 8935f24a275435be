"""KL-Cov (Cui et al. 2025, "The Entropy Mechanism of Reinforcement Learning for Reasoning Language Models",
arXiv:2505.22617 §4): a policy gradient without ratio clipping whose top-covariance tokens get a KL penalty
towards the behaviour policy, which keeps the policy entropy from collapsing.

With Cov_t = (log π_θ(y_t) − mean log π_θ)·(A_t − mean A) over the valid tokens of the micro-batch
(``clip_cov.token_covariance``), I_KL = the k = max(⌊κ·N⌋, 1) valid tokens of largest Cov_t (κ =
``kl_cov_ratio``, N valid tokens; ``torch.topk``), and r_t = π_θ/π_old:

    L_t = −r_t·A_t + 𝟙[t ∈ I_KL] · β_KL·|log π_θ(y_t) − log π_old(y_t)|
    L   = agg_t L_t + β·KL(π_θ‖π_ref) + entropy bonus        (GRPO's group-normalised A)

β_KL = ``ppo_kl_coef``. The penalty is verl's |log-ratio| (the ``abs`` estimator), the paper's KL term on the
selected tokens; no token's ratio is clipped (verl's ``compute_policy_loss_kl_cov``, verl/trainer/ppo/core_algos.py,
clips none either). On-policy (one update per batch) log π_θ = log π_old, so the penalty is 0 with gradient 0 and
KL-Cov is the unclipped GRPO: the preset takes 4 updates per batch, as the paper's recipe takes several.

Defaults: the paper's Qwen2.5-7B setting κ = 2e-3 (32B: 2e-4, verl's default) and β_KL = 1 (verl's config
default ``ppo_kl_coef`` is 0.1; its recipes set 1). As in verl the selection is per micro-batch, so the gradient
depends on ``trainer.micro_batch_size``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlx.algos.base import Aggregated, check
from rlx.algos.clip_cov import token_covariance
from rlx.algos.group import ScaledGroup
from rlx.algos.surrogate import Regularized, add_regularizers, clip_metrics
from rlx.ops import aggregate, masked_mean
from rlx.registry import ALGOS


def kl_cov_select(logp, advantages, response_mask, *, kl_cov_ratio: float) -> torch.Tensor:
    """Bool [n, T]: the max(⌊ratio·N⌋, 1) valid tokens with the largest Cov_t (none if no token is valid)."""
    n_valid = int(response_mask.sum())
    selected = torch.zeros_like(response_mask).flatten()
    if n_valid == 0:
        return selected.view_as(response_mask)
    cov = token_covariance(logp, advantages, response_mask).flatten()
    idx = response_mask.flatten().nonzero().squeeze(1)
    k = max(int(kl_cov_ratio * n_valid), 1)
    selected[idx[torch.topk(cov[idx], min(k, n_valid)).indices]] = True
    return selected.view_as(response_mask)


def kl_cov_loss(logp, old_logp, advantages, response_mask, ref_logp=None, *, kl_cov_ratio=2e-3, ppo_kl_coef=1.0,
                loss_agg_mode="token_mean", num_tokens=None, num_seqs=None, max_len=None, entropy=None, beta=0.0,
                kl_estimator="k3", entropy_coef=0.0, is_weights=None):
    """(loss, metrics) of KL-Cov for token log-probs [n, T] and token advantages [n, T]; ``is_weights`` [n, T]
    (rollout.is_correction) multiply the per-token term (penalty included, as verl). Metrics:
    ``kl_cov/penalty_frac`` (share of valid tokens penalised), ``kl_cov/abs_kl`` (mean |log π_θ − log π_old| on
    them), ``kl_cov/cov`` (mean Cov_t: the covariance itself)."""
    norm = dict(loss_agg_mode=loss_agg_mode, num_tokens=num_tokens, num_seqs=num_seqs, max_len=max_len)
    log_ratio = logp - old_logp
    ratio = log_ratio.exp()
    with torch.no_grad():
        selected = kl_cov_select(logp, advantages, response_mask, kl_cov_ratio=kl_cov_ratio)
    abs_kl = log_ratio.abs()
    per_token = -ratio * advantages + torch.where(selected, ppo_kl_coef * abs_kl, torch.zeros_like(abs_kl))
    if is_weights is not None:
        per_token = per_token * is_weights
    loss = aggregate(per_token, response_mask, loss_agg_mode, num_tokens=num_tokens, num_seqs=num_seqs,
                     max_len=max_len)
    with torch.no_grad():
        none = torch.zeros_like(response_mask)
        metrics = clip_metrics(none, none, response_mask, ratio.masked_fill(~response_mask, 1.0), logp, old_logp, loss)
        metrics.update({"kl_cov/penalty_frac": masked_mean(selected.float(), response_mask),
                        "kl_cov/abs_kl": masked_mean(abs_kl, selected),
                        "kl_cov/cov": masked_mean(token_covariance(logp, advantages, response_mask), response_mask)})
    return add_regularizers(loss, metrics, logp, ref_logp, entropy, response_mask, beta=beta,
                            kl_estimator=kl_estimator, entropy_coef=entropy_coef, **norm)


@ALGOS.register("kl_cov")
@dataclass(frozen=True, kw_only=True)
class KLCov(Aggregated, Regularized, ScaledGroup):
    kl_cov_ratio: float   # κ: share of the micro-batch's valid tokens penalised (at least one)
    ppo_kl_coef: float    # β_KL of the |log π_θ − log π_old| penalty

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 < self.kl_cov_ratio <= 1, f"algo.kl_cov_ratio={self.kl_cov_ratio}: must be in (0, 1]")
        check(self.ppo_kl_coef >= 0, f"algo.ppo_kl_coef={self.ppo_kl_coef}: must be >= 0")

    def loss(self, logp, mb):
        return kl_cov_loss(logp, mb.old_logp, mb.advantages, mb.response_mask, mb.ref_logp,
                           kl_cov_ratio=self.kl_cov_ratio, ppo_kl_coef=self.ppo_kl_coef,
                           loss_agg_mode=self.loss_agg_mode, entropy=mb.entropy, is_weights=mb.is_weights,
                           **self.regularizer_options, **mb.norm)
