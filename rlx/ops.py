"""Masked tensor operations shared by every algorithm.

Masks are boolean, True = valid response token, always named ``*_mask``. Every function is pure.
"""

from __future__ import annotations

import torch

AGG_MODES = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_mean_token_sum_norm")


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim=None) -> torch.Tensor:
    x = torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))
    return x.sum() if dim is None else x.sum(dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim=None) -> torch.Tensor:
    n = mask.sum() if dim is None else mask.sum(dim)
    return masked_sum(x, mask, dim) / n.clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    mean = masked_mean(x, mask)
    n = mask.sum()
    var = masked_sum((x - mean) ** 2, mask)
    return var / (n - 1).clamp(min=1) if unbiased else var / n.clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over valid entries; the mean is added back when ``shift_mean`` is False."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    return out if shift_mean else out + mean


def aggregate(loss: torch.Tensor, mask: torch.Tensor, mode: str, *, num_tokens=None, num_seqs=None,
              max_len=None) -> torch.Tensor:
    """Reduce a per-token loss ``loss[n, t]`` to a scalar.

    - ``token_mean``: Σ_{i,t} L / Σ_{i,t} 1 over the whole (mini-)batch (DAPO, arXiv:2503.14476 eq. 8).
    - ``seq_mean_token_mean``: (1/n) Σ_i (1/|o_i|) Σ_t L (GRPO as in DeepSeekMath, arXiv:2402.03300 eq. 3).
    - ``seq_mean_token_sum``: (1/n) Σ_i Σ_t L (REINFORCE-style sum per sequence).
    - ``seq_mean_token_sum_norm``: (1/n) Σ_i Σ_t L / L_max with a constant L_max (Dr.GRPO, arXiv:2503.20783 §3.1).

    ``num_tokens`` / ``num_seqs`` are the totals of the whole mini-batch when ``loss`` is one
    micro-batch of it, so that summing micro-batch losses gives exactly the mini-batch loss (the
    gradient is independent of the micro-batch size). ``max_len`` is L_max (default: ``loss.shape[1]``).
    """
    maskf = mask.to(loss.dtype)
    n_tok = maskf.sum() if num_tokens is None else num_tokens
    n_seq = loss.shape[0] if num_seqs is None else num_seqs
    if mode == "token_mean":
        return (loss * maskf).sum() / max(float(n_tok), 1.0)
    if mode == "seq_mean_token_mean":
        per_seq = (loss * maskf).sum(-1) / maskf.sum(-1).clamp(min=1)
        return per_seq.sum() / n_seq
    if mode == "seq_mean_token_sum":
        return (loss * maskf).sum() / n_seq
    if mode == "seq_mean_token_sum_norm":
        return (loss * maskf).sum() / (n_seq * (max_len or loss.shape[1]))
    raise ValueError(f"unknown loss_agg_mode '{mode}' (valid: {', '.join(AGG_MODES)})")


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Per-token estimate of KL(π_θ‖π_ref) from samples of π_θ (Schulman 2020, "Approximating KL divergence").

    With log r = log π_ref − log π_θ:
    - k1 = −log r (unbiased, high variance, can be negative)
    - k2 = ½ (log r)² (biased, low variance)
    - k3 = (r − 1) − log r (unbiased, non-negative; GRPO, arXiv:2402.03300 eq. 4)
    - low_var_kl = k3 clamped to [−10, 10] (verl's name for the clamped k3)
    """
    log_r = ref_logp - logp
    if estimator == "k1":
        return -log_r
    if estimator == "k2":
        return 0.5 * log_r.square()
    if estimator in ("k3", "low_var_kl"):
        kl = torch.expm1(log_r) - log_r
        return kl.clamp(-10, 10) if estimator == "low_var_kl" else kl
    raise ValueError(f"unknown kl_estimator '{estimator}' (valid: k1, k2, k3, low_var_kl)")


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor, with_entropy: bool = False):
    """log softmax(logits)[tokens] without materialising the full log-softmax; optional entropy.

    Entropy H = logsumexp(z) − Σ softmax(z)·z, in nats, computed in float32.
    """
    z = logits.float()
    lse = z.logsumexp(-1)
    logp = z.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - lse
    if not with_entropy:
        return logp, None
    p = torch.softmax(z, -1)
    return logp, lse - (p * z).sum(-1)


def group_normalize(rewards: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-4,
                    valid_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Group-relative advantage A_i = (r_i − mean_g r) / (std_g r + eps) (GRPO, arXiv:2402.03300 §4.1.2).

    ``rewards`` is flat [B·G] with the G samples of one prompt contiguous. std is the unbiased
    sample std (torch default): rewards [1, 0, 2] → std 1.0 → A = [0, −1, +1] (algorithms.md §8.1).
    ``valid_mask`` [B·G] (bool) leaves samples out of their group's mean and std and gives them A = 0
    (samples whose reward failed: the loop passes ``response_mask.any(-1)``): rewards [1, x, 0, 2]
    with the second invalid → A = [0, 0, −1, +1] whatever x is.
    """
    r = rewards.view(-1, group_size)
    if valid_mask is None:
        adv = r - r.mean(-1, keepdim=True)
        std = r.std(-1, keepdim=True) if scale else None
    else:
        v = valid_mask.view(-1, group_size)
        n = v.sum(-1, keepdim=True)
        r = torch.where(v, r, torch.zeros((), dtype=r.dtype, device=r.device))
        adv = torch.where(v, r - r.sum(-1, keepdim=True) / n.clamp(min=1), torch.zeros((), dtype=r.dtype))
        std = (adv.square().sum(-1, keepdim=True) / (n - 1).clamp(min=1)).sqrt() if scale else None
    if scale:
        adv = torch.where(std > 0, adv / (std + eps), torch.zeros_like(adv))  # equal rewards: no signal
    return adv.reshape(-1)


def response_mask_from_eos(completion: torch.Tensor, eos_id: int) -> torch.Tensor:
    """True up to and including the first EOS of each row (pads after it are False)."""
    is_eos = completion == eos_id
    after = (is_eos.cumsum(-1) - is_eos.long()) > 0
    return ~after


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counting only attended tokens (left padding starts at 0 on the first real token)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
