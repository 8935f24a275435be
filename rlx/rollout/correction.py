"""Engine/trainer log-prob mismatch: its metrics and the truncated importance-sampling (TIS) weights.

The engine that samples the responses (vLLM; the HF engine's own decoding loop) and the trainer's
forward compute log π(y_t|·) with different kernels, batch shapes and precisions, and vLLM may hold
weights one sync behind, so the samples come from a distribution μ slightly off the π_old that the
update assumes. With the engine's log-probs log μ_t (``Rollout.engine_logp``, the trainer's convention:
raw logits, no temperature) and the trainer's old log-probs log π_old,t (the detached log-probs of the
training forward when the update is on-policy, ``batch.old_logp`` otherwise; trainers/online.py):

    rollout/logp_diff     = mean_t |log π_old,t − log μ_t|     over valid response tokens
    rollout/logp_diff_max = max_t  |log π_old,t − log μ_t|

Truncated importance sampling (Yao et al. 2025, "Your Efficient RL Framework Secretly Brings You
Off-Policy RL Training", https://fengyao.notion.site/off-policy-rl): each token's policy-gradient term
is multiplied by the detached weight

    w_t = min(π_old,t / μ_t, C) = min(exp(log π_old,t − log μ_t), C),   C = rollout.is_cap

after the PPO clipping and before aggregation, which turns the expectation over μ into one over
π_old; the cap C bounds the variance that a token the engine found much less likely would add.
``rollout/is_weight_mean`` is the mean of w_t (after the cap), ``rollout/is_clip_frac`` the share of
tokens whose weight hit the cap. KL and entropy terms are not reweighted.
"""

from __future__ import annotations

import torch

from rlx.ops import masked_mean


def logp_mismatch(old_logp: torch.Tensor, engine_logp: torch.Tensor, response_mask: torch.Tensor) -> dict:
    """``rollout/logp_diff`` and ``rollout/logp_diff_max`` for log-probs [n, T] and a bool mask [n, T]."""
    diff = (old_logp - engine_logp).abs()
    return {"rollout/logp_diff": masked_mean(diff, response_mask),
            "rollout/logp_diff_max": diff.masked_fill(~response_mask, 0.0).max()}


def tis_weights(old_logp: torch.Tensor, engine_logp: torch.Tensor, response_mask: torch.Tensor, *,
                is_cap: float):
    """(w [n, T], metrics): w_t = min(exp(old_logp − engine_logp), is_cap), detached; 1 on invalid tokens."""
    ratio = (old_logp - engine_logp).detach().exp()
    weights = ratio.clamp(max=is_cap).masked_fill(~response_mask, 1.0)
    metrics = {"rollout/is_weight_mean": masked_mean(weights, response_mask),
               "rollout/is_clip_frac": masked_mean((ratio >= is_cap).float(), response_mask)}
    return weights, metrics


# rollout.is_correction -> the weight function (rlx.config.choices.IS_CORRECTIONS lists the same names)
CORRECTIONS = {"none": None, "tis": tis_weights}
