"""Masked tensor operations shared by every algorithm.

Masks are boolean, True = valid response token, always named ``*_mask``. Every function is pure.
"""

from __future__ import annotations

import torch

AGG_MODES = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_mean_token_sum_norm", "token_sum")
KL_ESTIMATORS = ("k1", "k2", "k3", "low_var_kl", "abs")
KL_ESTIMATORS_ALL = KL_ESTIMATORS + tuple(k + "+" for k in KL_ESTIMATORS)  # "+" = straight-through (kl_penalty)


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
    - ``token_sum``: Σ_{i,t} L over the whole (mini-)batch, no normaliser (docs/verl_names.md: verl has no such
      mode; its ``seq-mean-token-sum-norm`` comes closest, Σ_{i,t} L / L_max).

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
    if mode == "token_sum":
        return (loss * maskf).sum()
    raise ValueError(f"unknown loss_agg_mode '{mode}' (valid: {', '.join(AGG_MODES)})")


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Per-token estimate of KL(π_θ‖π_ref) from samples of π_θ (Schulman 2020, "Approximating KL divergence").

    With log r = log π_ref − log π_θ:
    - k1 = −log r (unbiased, high variance, can be negative)
    - k2 = ½ (log r)² (biased, low variance)
    - k3 = (r − 1) − log r (unbiased, non-negative; GRPO, arXiv:2402.03300 eq. 4)
    - low_var_kl = k3 clamped to [−10, 10] (verl's name for the clamped k3)
    - abs = |log r| = |log π_θ − log π_ref| (verl's ``abs``; not an unbiased KL estimate: a distance)
    - a ``+`` suffix (``k1+``, ``k3+``, ...) is the straight-through variant: the value of the named
      estimator forward, the gradient of k2 backward. ∇k2 = (log π_θ − log π_ref)·∇log π_θ, whose
      expectation under π_θ (on-policy) is the exact gradient of KL(π_θ‖π_ref); as losses, k1 has
      zero expected gradient and k3 follows the forward KL(π_ref‖π_θ) (Zhang et al. 2025,
      arXiv:2505.17508; verl's ``kl_loss_type: k3+``).
    """
    if estimator.endswith("+") and estimator[:-1] in KL_ESTIMATORS:
        k2 = kl_penalty(logp, ref_logp, "k2")
        return k2 - k2.detach() + kl_penalty(logp, ref_logp, estimator[:-1]).detach()
    log_r = ref_logp - logp
    if estimator == "k1":
        return -log_r
    if estimator == "k2":
        return 0.5 * log_r.square()
    if estimator == "abs":
        return log_r.abs()
    if estimator in ("k3", "low_var_kl"):
        kl = torch.expm1(log_r) - log_r
        return kl.clamp(-10, 10) if estimator == "low_var_kl" else kl
    raise ValueError(f"unknown kl_estimator '{estimator}' (valid: {', '.join(KL_ESTIMATORS_ALL)})")


LOGPROB_CHUNK_ELEMENTS = 1 << 24   # float32 elements per chunk (64 MB) in logprobs_from_logits


class _TokenLogProbs(torch.autograd.Function):
    """log softmax(z)[y] and H(softmax(z)) row chunk by row chunk, saving only the logits (in their own dtype).

    Backward: ∂ log p_y/∂z = onehot(y) − p;  ∂H/∂z = −p ⊙ (log p + H)  (H = −Σ p log p).
    """

    @staticmethod
    def forward(ctx, logits, tokens, with_entropy: bool):
        z2, y = logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1)
        n, step = z2.shape[0], max(1, LOGPROB_CHUNK_ELEMENTS // z2.shape[1])
        logp, lse = z2.new_empty(n, dtype=torch.float32), z2.new_empty(n, dtype=torch.float32)
        ent = z2.new_empty(n, dtype=torch.float32) if with_entropy else None
        for i in range(0, n, step):
            z = z2[i:i + step].float()
            lse[i:i + step] = z.logsumexp(-1)
            logp[i:i + step] = z.gather(1, y[i:i + step, None]).squeeze(1) - lse[i:i + step]
            if with_entropy:
                ent[i:i + step] = lse[i:i + step] - (torch.softmax(z, -1) * z).sum(-1)
        ctx.save_for_backward(logits, tokens, lse, ent if with_entropy else lse)
        ctx.with_entropy = with_entropy
        ctx.set_materialize_grads(False)
        out = logp.view(tokens.shape)
        return out, (ent.view(tokens.shape) if with_entropy else out.new_empty(0))

    @staticmethod
    def backward(ctx, g_logp, g_ent):
        logits, tokens, lse, ent = ctx.saved_tensors
        z2, y = logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1)
        g_logp = g_logp.reshape(-1) if g_logp is not None else None
        g_ent = g_ent.reshape(-1) if (g_ent is not None and ctx.with_entropy) else None
        grad = torch.empty_like(z2)
        step = max(1, LOGPROB_CHUNK_ELEMENTS // z2.shape[1])
        for i in range(0, z2.shape[0], step):
            logp_all = z2[i:i + step].float() - lse[i:i + step, None]
            p = logp_all.exp()
            gz = torch.zeros_like(p)
            if g_logp is not None:
                gz -= p * g_logp[i:i + step, None]
                gz.scatter_add_(1, y[i:i + step, None], g_logp[i:i + step, None])
            if g_ent is not None:
                gz -= p * (logp_all + ent[i:i + step, None]) * g_ent[i:i + step, None]
            grad[i:i + step] = gz
        return grad.view(logits.shape), None, None


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor, with_entropy: bool = False):
    """log softmax(logits)[tokens] [...] in float32, and the entropy H [...] (nats) when asked.

    Memory stays bounded for large vocabularies: the float32 copy of the logits exists one chunk of
    rows at a time (``LOGPROB_CHUNK_ELEMENTS``), forward and backward, and only the logits are saved.
    Both outputs carry gradients.
    """
    logp, ent = _TokenLogProbs.apply(logits, tokens, with_entropy)
    return logp, (ent if with_entropy else None)


def group_normalize(rewards: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-4,
                    valid_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Group-relative advantage A_i = (r_i − mean_g r) / (std_g r + eps) (GRPO, arXiv:2402.03300 §4.1.2).

    ``rewards`` is flat [B·G] with the G samples of one prompt contiguous. std is the unbiased
    sample std (torch default): rewards [1, 0, 2] → std 1.0 → A = [0, −1, +1] (docs/algorithm_notes.md §8.1).
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
