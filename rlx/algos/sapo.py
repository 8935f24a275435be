"""SAPO — Soft Adaptive Policy Optimization (Gao et al. 2025, Qwen team, arXiv:2511.20347; verl
``policy_loss.loss_mode: sapo``, verl/trainer/ppo/core_algos.py ``compute_policy_loss_sapo``).

GRPO's group-normalised advantage, but the hard clip of the token ratio is replaced by a smooth gate: every
token keeps a gradient, attenuated the further its ratio is from 1, instead of none outside [1−ε, 1+ε]:

    J = E[ 1/G Σ_i 1/|y_i| Σ_t f_{i,t}(r_{i,t}) · Â_{i,t} ],     r_{i,t} = π_θ(y_{i,t}|·) / π_old(y_{i,t}|·)
    f_{i,t}(r) = σ(τ_{i,t}·(r − 1)) · 4/τ_{i,t},                   τ_{i,t} = τ_pos if Â_{i,t} > 0 else τ_neg

so L = agg_t[ −f(r_t)·Â_t ] (``seq_mean_token_mean`` by default: the 1/G Σ_i 1/|y_i| of the objective). The
gradient is ∇f = w·r·∇log π_θ with w = 4σ(1−σ) ∈ (0, 1]: w = 1 at r = 1 (the 4/τ makes the on-policy gradient
GRPO's, whatever τ), and w → 0 as |r − 1| grows, faster for a larger τ. τ_neg > τ_pos (the paper: 1.0, 1.05)
damps negative-advantage tokens sooner, whose updates spread probability over the whole vocabulary.
Values: f(1) = 2/τ (so the on-policy loss is −(2/τ)·agg(Â), not −agg(Â)); τ = 1: f(0.5) = 4σ(−0.5) = 1.51016,
f(2) = 4σ(1) = 2.92423. As verl does, log r is clamped to [−20, 20] (σ' ≈ 0 there; it keeps r finite) and
``sapo/gate_weight`` logs the mean w over valid tokens (1 on-policy; the soft counterpart of a clip fraction).
verl always aggregates SAPO with seq-mean-token-mean; here ``loss_agg_mode`` is a key.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlx.algos.base import Aggregated, check
from rlx.algos.group import ScaledGroup
from rlx.algos.surrogate import Regularized, add_regularizers, ratio_metrics
from rlx.ops import aggregate, masked_mean
from rlx.registry import ALGOS

LOG_RATIO_CLAMP = 20.0   # verl's clamp of log r before exp


def sapo_taus(advantages: torch.Tensor, *, tau_pos: float, tau_neg: float) -> torch.Tensor:
    """τ per token: τ_pos where Â > 0, τ_neg where Â ≤ 0 (verl's choice at Â = 0)."""
    pos = torch.full_like(advantages, float(tau_pos))
    return torch.where(advantages > 0, pos, torch.full_like(advantages, float(tau_neg)))


def sapo_gate(ratio: torch.Tensor, advantages: torch.Tensor, *, tau_pos: float, tau_neg: float) -> torch.Tensor:
    """f(r) = σ(τ·(r − 1))·4/τ per token, τ from the sign of Â (``sapo_taus``)."""
    tau = sapo_taus(advantages, tau_pos=tau_pos, tau_neg=tau_neg)
    return torch.sigmoid(tau * (ratio - 1.0)) * (4.0 / tau)


def sapo_loss(logp, old_logp, advantages, response_mask, ref_logp=None, *, tau_pos=1.0, tau_neg=1.05,
              loss_agg_mode="seq_mean_token_mean", num_tokens=None, num_seqs=None, max_len=None, entropy=None,
              beta=0.0, kl_estimator="k3", entropy_coef=0.0, is_weights=None):
    """(loss, metrics) of SAPO for token log-probs [n, T] and token advantages [n, T]; ``is_weights`` [n, T]
    (rollout.is_correction) multiply the per-token term; β·KL to the reference and the entropy bonus as GRPO's."""
    norm = dict(loss_agg_mode=loss_agg_mode, num_tokens=num_tokens, num_seqs=num_seqs, max_len=max_len)
    log_ratio = (logp - old_logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = log_ratio.exp()
    gate = sapo_gate(ratio, advantages, tau_pos=tau_pos, tau_neg=tau_neg)
    per_token = -gate * advantages
    if is_weights is not None:
        per_token = per_token * is_weights
    loss = aggregate(per_token, response_mask, loss_agg_mode, num_tokens=num_tokens, num_seqs=num_seqs,
                     max_len=max_len)
    with torch.no_grad():
        s = torch.sigmoid(sapo_taus(advantages, tau_pos=tau_pos, tau_neg=tau_neg) * (ratio - 1.0))
        valid_ratio = ratio.masked_fill(~response_mask, 1.0)
        metrics = {"sapo/gate_weight": masked_mean(4 * s * (1 - s), response_mask),
                   **ratio_metrics(response_mask, valid_ratio, logp, old_logp, loss)}
    return add_regularizers(loss, metrics, logp, ref_logp, entropy, response_mask, beta=beta,
                            kl_estimator=kl_estimator, entropy_coef=entropy_coef, **norm)


@ALGOS.register("sapo")
@dataclass(frozen=True, kw_only=True)
class SAPO(Aggregated, Regularized, ScaledGroup):
    tau_pos: float   # gate temperature where Â > 0
    tau_neg: float   # gate temperature where Â ≤ 0

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("tau_pos", "tau_neg"):
            check(getattr(self, key) > 0, f"algo.{key}={getattr(self, key)}: must be > 0 (the gate's temperature)")

    def loss(self, logp, mb):
        return sapo_loss(logp, mb.old_logp, mb.advantages, mb.response_mask, mb.ref_logp, tau_pos=self.tau_pos,
                         tau_neg=self.tau_neg, loss_agg_mode=self.loss_agg_mode, entropy=mb.entropy,
                         is_weights=mb.is_weights, **self.regularizer_options, **mb.norm)
