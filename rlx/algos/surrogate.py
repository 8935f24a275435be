"""The clipped surrogate and the loss terms the policy-gradient algorithms share (the KL loss term, the entropy
bonus), and the option sets that come with them as dataclass mixins: ``ClippedRatio`` (eps_low, eps_high),
``DualClip`` (clip_ratio_c), ``ClipOptions`` (dual-clip and the stop-gradient clip mode) and ``Regularized`` (β,
KL estimator, entropy bonus).
Each mixin checks its own keys and says what it ``requires``."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlx.algos.base import PolicyAlgorithm, check, check_choice
from rlx.ops import KL_ESTIMATORS_ALL, aggregate, kl_penalty, masked_mean

CLIP_MODES = ("standard", "stop_gradient")


def clipped_surrogate(logp, old_logp, advantages, response_mask, *, eps_low: float, eps_high: float,
                      loss_agg_mode: str, num_tokens=None, num_seqs=None, max_len=None,
                      clip_ratio_c: float | None = None, clip_mode: str = "standard", is_weights=None):
    """PPO clipped objective per token (Schulman et al. 2017, arXiv:1707.06347 eq. 7), as a loss:

        L_t = −min(r_t·A_t, clip(r_t, 1−eps_low, 1+eps_high)·A_t),   r_t = exp(logp_t − old_logp_t)

    aggregated with ``loss_agg_mode`` (ops.aggregate). Options (off by default):

    - ``clip_ratio_c`` (dual-clip, Ye et al. 2019, arXiv:1912.09729 eq. 5): for A_t < 0 the loss is
      further capped at −c·A_t, so a token whose ratio exploded (r > c > 1) cannot push the loss
      without bound: L_t = min(L_t, −c·A_t) where A_t < 0.
    - ``clip_mode="stop_gradient"`` (AEPO, Dong et al. 2025, arXiv:2510.14545, entropy-balanced policy
      optimisation; docs/algorithm_notes.md §2.21): where the upper clip is active (A > 0, r > 1+eps_high) the
      term is −sg(ĉ/r)·r·A with ĉ = 1+eps_high: the forward value is the clipped −ĉ·A, but the
      gradient ĉ·A·∇log π is kept instead of being zeroed.
    - ``is_weights`` [n, T] (detached): L_t ← w_t·L_t after the clipping, before aggregation: the
      truncated importance-sampling correction of the engine/trainer mismatch (``rollout/correction.py``).

    Clip fractions count tokens where a clipped branch is the active one: ``clip_frac_high``
    r > 1+eps_high with A > 0, ``clip_frac_low`` r < 1−eps_low with A < 0; ``clip_frac`` also counts
    the dual-clipped tokens. ``kl_old`` is the k3 estimate of KL(π_old‖π_θ) on the sampled tokens,
    the size of the update so far.
    """
    if clip_mode not in CLIP_MODES:
        raise ValueError(f"unknown clip_mode '{clip_mode}' (valid: {', '.join(CLIP_MODES)})")
    log_ratio = logp - old_logp
    ratio = log_ratio.exp()
    clipped = ratio.clamp(1 - eps_low, 1 + eps_high)
    per_token = torch.maximum(-ratio * advantages, -clipped * advantages)
    high = (ratio > 1 + eps_high) & (advantages > 0)
    low = (ratio < 1 - eps_low) & (advantages < 0)
    if clip_mode == "stop_gradient":
        ratio_sg = ratio * (clipped / ratio).detach()   # value = clipped ratio, d/dθ = (clipped/ratio)·dratio
        per_token = torch.where(high, -ratio_sg * advantages, per_token)
    dual = torch.zeros_like(high)
    if clip_ratio_c is not None:
        cap = -clip_ratio_c * advantages
        dual = (advantages < 0) & (per_token > cap)
        per_token = torch.where(dual, cap, per_token)
    if is_weights is not None:
        per_token = per_token * is_weights
    loss = aggregate(per_token, response_mask, loss_agg_mode, num_tokens=num_tokens, num_seqs=num_seqs,
                     max_len=max_len)
    with torch.no_grad():
        valid_ratio = ratio.masked_fill(~response_mask, 1.0)
        metrics = clip_metrics(high, low, response_mask, valid_ratio, logp, old_logp, loss, dual=dual)
    return loss, metrics


def clip_metrics(high, low, response_mask, ratios, logp, old_logp, loss, dual=None) -> dict:
    """The clipping vocabulary: fractions of valid tokens whose clipped branch is active above (``high``) and below
    (``low``) the trust region (``clip_frac`` also counts ``dual``-clipped ones), the extremes of ``ratios`` (the
    ratios of the valid tokens or responses), ``kl_old`` (k3 KL(π_old‖π_θ) on the sampled tokens) and the loss."""
    clipped = high | low if dual is None else high | low | dual
    return {"policy/clip_frac_high": masked_mean(high.float(), response_mask),
            "policy/clip_frac_low": masked_mean(low.float(), response_mask),
            "policy/clip_frac": masked_mean(clipped.float(), response_mask),
            **ratio_metrics(response_mask, ratios, logp, old_logp, loss)}


def ratio_metrics(response_mask, ratios, logp, old_logp, loss) -> dict:
    """The vocabulary of a loss without clipping (GPG, SAPO): the extremes of ``ratios``, ``kl_old`` and the loss."""
    return {"policy/ratio_max": ratios.max(), "policy/ratio_min": ratios.min(),
            "policy/kl_old": masked_mean(kl_penalty(old_logp, logp, "k3"), response_mask),
            "loss/policy": loss.detach()}


def kl_loss(logp, ref_logp, response_mask, *, beta: float, estimator: str, loss_agg_mode: str,
            num_tokens=None, num_seqs=None, max_len=None):
    """β · agg(KL_est(π_θ‖π_ref)) as a loss term (GRPO puts KL in the loss: arXiv:2402.03300 eq. 3)."""
    kl = kl_penalty(logp, ref_logp, estimator)
    term = aggregate(kl, response_mask, loss_agg_mode, num_tokens=num_tokens, num_seqs=num_seqs, max_len=max_len)
    metrics = {"policy/kl_ref": masked_mean(kl.detach(), response_mask), "loss/kl": (beta * term).detach()}
    return beta * term, metrics


def entropy_bonus(entropy, response_mask, *, entropy_coef: float, loss_agg_mode: str, num_tokens=None,
                  num_seqs=None, max_len=None):
    """−entropy_coef · agg(H_t) as a loss term (the entropy bonus of PPO, arXiv:1707.06347 eq. 9;
    verl ``entropy_coeff``, TRL/OpenRLHF ``entropy_coef``). ``entropy`` [n, T] must carry gradient."""
    term = -entropy_coef * aggregate(entropy, response_mask, loss_agg_mode, num_tokens=num_tokens,
                                     num_seqs=num_seqs, max_len=max_len)
    return term, {"loss/entropy": term.detach()}


def regularizers(logp, ref_logp, entropy, response_mask, *, beta: float = 0.0, kl_estimator: str = "k3",
                 entropy_coef: float = 0.0, loss_agg_mode: str, num_tokens=None, num_seqs=None, max_len=None):
    """(term, metrics): β·KL loss term (when ``ref_logp`` is given; added only if β > 0) plus the entropy
    bonus (when ``entropy_coef`` > 0). The terms every GRPO-family loss shares."""
    norm = dict(loss_agg_mode=loss_agg_mode, num_tokens=num_tokens, num_seqs=num_seqs, max_len=max_len)
    term, metrics = torch.zeros((), device=logp.device), {}
    if ref_logp is not None:
        kl_term, m = kl_loss(logp, ref_logp, response_mask, beta=beta, estimator=kl_estimator, **norm)
        metrics.update(m)
        if beta > 0:
            term = term + kl_term
    if entropy_coef > 0:
        if entropy is None:
            raise ValueError("entropy_coef > 0 needs the token entropies of the training forward")
        ent_term, m = entropy_bonus(entropy, response_mask, entropy_coef=entropy_coef, **norm)
        metrics.update(m)
        term = term + ent_term
    return term, metrics


def add_regularizers(loss, metrics, logp, ref_logp, entropy, response_mask, *, beta, kl_estimator, entropy_coef,
                     loss_agg_mode, num_tokens=None, num_seqs=None, max_len=None):
    """(loss + regularizers, metrics with theirs and ``loss/total``): the tail every GRPO-family loss shares."""
    reg, reg_metrics = regularizers(logp, ref_logp, entropy, response_mask, beta=beta, kl_estimator=kl_estimator,
                                    entropy_coef=entropy_coef, loss_agg_mode=loss_agg_mode, num_tokens=num_tokens,
                                    num_seqs=num_seqs, max_len=max_len)
    loss = loss + reg
    metrics.update(reg_metrics)
    metrics["loss/total"] = loss.detach()
    return loss, metrics


@dataclass(frozen=True, kw_only=True)
class ClippedRatio(PolicyAlgorithm):
    """The trust region of the clipped surrogate: clip(r, 1 − eps_low, 1 + eps_high)."""

    eps_low: float
    eps_high: float

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.eps_low >= 0, f"algo.eps_low={self.eps_low}: must be >= 0")
        check(self.eps_high >= self.eps_low,
              f"algo.eps_high={self.eps_high}: must be >= algo.eps_low={self.eps_low} (clip-higher, DAPO)")


@dataclass(frozen=True, kw_only=True)
class DualClip(PolicyAlgorithm):
    """Dual-clip of ``clipped_surrogate`` (``clip_ratio_c``, null = off; verl applies 3.0 by default)."""

    clip_ratio_c: float | None

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.clip_ratio_c is None or self.clip_ratio_c > 1,
              f"algo.clip_ratio_c={self.clip_ratio_c}: must be > 1 (dual-clip), or null for off")


@dataclass(frozen=True, kw_only=True)
class ClipOptions(DualClip):
    """Dual-clip (``DualClip``) and the clip mode of ``clipped_surrogate``."""

    clip_mode: str

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("clip_mode", self.clip_mode, CLIP_MODES)

    @property
    def clip_options(self) -> dict:
        return dict(clip_ratio_c=self.clip_ratio_c, clip_mode=self.clip_mode)


@dataclass(frozen=True, kw_only=True)
class KLInLoss(PolicyAlgorithm):
    """β·KL(π_θ‖π_ref) as a loss term (β > 0 loads a reference model; its KL is logged whenever one is loaded)."""

    beta: float
    kl_estimator: str

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.beta >= 0, f"algo.beta={self.beta}: must be >= 0")
        check_choice("kl_estimator", self.kl_estimator, KL_ESTIMATORS_ALL)

    @property
    def requires(self) -> frozenset[str]:
        return super().requires | ({"ref_logp"} if self.beta > 0 else set())


@dataclass(frozen=True, kw_only=True)
class Regularized(KLInLoss):
    """The KL loss term and the entropy bonus (``entropy_coef`` > 0 asks for the token entropies)."""

    entropy_coef: float

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.entropy_coef >= 0, f"algo.entropy_coef={self.entropy_coef}: must be >= 0")

    @property
    def requires(self) -> frozenset[str]:
        return super().requires | ({"entropy"} if self.entropy_coef > 0 else set())

    @property
    def regularizer_options(self) -> dict:
        return dict(beta=self.beta, kl_estimator=self.kl_estimator, entropy_coef=self.entropy_coef)
