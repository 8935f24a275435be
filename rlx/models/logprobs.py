"""Token log-probs of responses under a policy: the forward every trainer's update runs.

``token_logprobs`` does the least work that gives the same numbers as one plain forward over
``[prompt; response]``:
  - columns that are padding in every row (left of the longest prompt, right of the longest
    response) are cut first; positions come from the attention mask, so the cut changes nothing;
  - rows that share a prompt (the G samples of a group) run the prompt once: the prompt's KV cache
    (with its autograd graph) is indexed out to every row, and only the response tokens run per row.
    The gradient flows back through the index into the shared prompt (index backward sums the rows),
    so it equals the plain forward's. With 6-token prompts and 4-token answers at G=8 this runs
    6 + 8·4 = 38 tokens per group instead of 8·10 = 80.
Both go through the lean forward (``rlx.models.lean``) where it applies, transformers' forward otherwise.
The logits are reduced to log-probs by ``ops.logprobs_from_logits``, which never materialises a
float32 log-softmax of the whole vocabulary. ``token_logprobs_and_kl`` adds the per-token KL to a
reference over the whole vocabulary (TDPO's sequential KL), which does.
"""

from __future__ import annotations

import weakref

import torch

from rlx.models import lean as lean_forward
from rlx.models.kv_cache import cache_kwarg, new_cache, plain_layers
from rlx.ops import logprobs_from_logits, position_ids_from_mask


def _trim(input_ids, attention_mask, T: int):
    """Cut all-pad columns on the left and past the longest response; returns (ids, mask, responses kept)."""
    real = attention_mask.bool().any(0)
    first = int(real.nonzero()[0]) if real.any() else 0
    resp_real = attention_mask[:, -T:].bool().any(0)
    t_keep = int(resp_real.nonzero()[-1]) + 1 if resp_real.any() else 1
    end = input_ids.shape[1] - T + t_keep
    return input_ids[:, first:end], attention_mask[:, first:end], t_keep


def _sharded(model) -> bool:
    """FSDP2: every rank must run the same number of forwards, whatever its rows share, so no sharing."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


# Sharing runs two forward calls, and every weight then gets two gradient contributions that autograd adds
# (a pass over all parameters). It pays when the prompt tokens saved outweigh both (docs/performance.md):
#  - a call's fixed cost, about 50-100 tokens' worth on the 1M model: (tokens saved) x (parameters) >= 1e8;
#  - the extra pass over the parameters, about 80 tokens' worth whatever the size (30M, bf16 autocast: DPO's
#    8 pairs save 48 prompt tokens and sharing made the step 20% slower; GRPO 8x8 saves 336 and gains 5%).
SHARE_MIN_TOKEN_PARAMS = 1e8
SHARE_MIN_TOKENS = 96
_PARAMS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _n_params(model) -> int:
    if model not in _PARAMS:
        _PARAMS[model] = sum(p.numel() for p in model.parameters())
    return _PARAMS[model]


def _sharing_pays(saved_tokens: int, model) -> bool:
    return saved_tokens >= SHARE_MIN_TOKENS and saved_tokens * _n_params(model) >= SHARE_MIN_TOKEN_PARAMS


def _shared_prompts(model, ids, am, P: int):
    """(unique-prompt index of each row, unique prompt rows) when prompts repeat and the model can take a cache."""
    n = ids.shape[0]
    if P == 0 or n < 2 or getattr(model, "config", None) is None or cache_kwarg(model) is None:
        return None
    if not _sharing_pays((n - 1) * P, model):   # even one prompt for all rows would not pay
        return None
    if lean_forward.checkpointing(model) or _sharded(model):
        return None
    key = torch.cat([ids[:, :P], am[:, :P]], 1)
    # rows -> one random projection each (a 1-D unique is far cheaper than unique(dim=0)); checked exactly below
    proj = torch.randn(key.shape[1], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    uniq, inverse = torch.unique(key.double() @ proj.to(key.device), return_inverse=True)
    if not _sharing_pays((n - uniq.shape[0]) * P, model):
        return None
    first = torch.full((uniq.shape[0],), n, dtype=torch.long, device=ids.device)
    first = first.scatter_reduce(0, inverse, torch.arange(n, device=ids.device), "amin")
    if not torch.equal(key, key[first][inverse]):   # a projection collision (never seen): no sharing
        return None
    return inverse, first


def _logits_shared(model, ids, am, pos, P: int, t_keep: int, inverse, first):
    """Logits [n, t_keep, V] predicting the t_keep response tokens, running each distinct prompt once."""
    lean = lean_forward.for_model(model)
    if lean is not None:
        grow = lean.new_cache()
        head = lean(ids[first, :P], pos[first, :P], am[first, :P], grow, logits_to_keep=1)
        if t_keep == 1:
            return head[inverse]
        end = P + t_keep - 1
        tail = lean(ids[:, P:end], pos[:, P:end], am[:, :end], grow.index(inverse))
        return torch.cat([head[inverse], tail], 1)
    cache = new_cache(model)
    kw = {cache_kwarg(model): cache}
    head = model(input_ids=ids[first, :P], attention_mask=am[first, :P], position_ids=pos[first, :P],
                 use_cache=True, logits_to_keep=1, **kw).logits[:, -1:]
    if not plain_layers(cache):
        return None
    if t_keep == 1:
        return head[inverse]
    for layer in cache.layers:
        layer.keys, layer.values = layer.keys[inverse], layer.values[inverse]
    end = P + t_keep - 1   # the last response token predicts nothing we need
    tail = model(input_ids=ids[:, P:end], attention_mask=am[:, :end], position_ids=pos[:, P:end],
                 use_cache=True, **kw).logits
    return torch.cat([head[inverse], tail], 1)


def response_logits(model, input_ids, attention_mask, T: int, autocast=False):
    """(logits [n, t_keep, V] predicting the response tokens, those tokens [n, t_keep]), t_keep ≤ T: the columns
    past the longest response are cut (``_trim``), so ``t_keep`` is the same for every model on the same batch."""
    ids, am, t_keep = _trim(input_ids, attention_mask, T)
    P = ids.shape[1] - t_keep
    pos = position_ids_from_mask(am)
    with torch.autocast(ids.device.type, torch.bfloat16, enabled=autocast):
        shared = _shared_prompts(model, ids, am, P)
        logits = _logits_shared(model, ids, am, pos, P, t_keep, *shared) if shared is not None else None
        lean = lean_forward.for_model(model) if logits is None else None
        if lean is not None:
            logits = lean(ids, pos, am, logits_to_keep=t_keep + 1)[:, :-1]
        elif logits is None:
            logits = model(input_ids=ids, attention_mask=am, position_ids=pos, logits_to_keep=t_keep + 1,
                           use_cache=False).logits[:, :-1]
    return logits, ids[:, -t_keep:]


def _pad_to(x: torch.Tensor | None, T: int) -> torch.Tensor | None:
    """[n, t] → [n, T] with zeros on the right (the columns ``_trim`` cut)."""
    if x is None or x.shape[1] == T:
        return x
    return torch.cat([x, x.new_zeros(x.shape[0], T - x.shape[1])], 1)


def token_logprobs(model, input_ids, attention_mask, T: int, with_entropy=False, autocast=False):
    """Log-probs [n, T] of the last T tokens (and their entropies [n, T] when asked); padding gets 0."""
    logits, targets = response_logits(model, input_ids, attention_mask, T, autocast)
    logp, ent = logprobs_from_logits(logits, targets, with_entropy)
    return _pad_to(logp, T), _pad_to(ent, T)


def token_logprobs_and_kl(model, ref, input_ids, attention_mask, T: int, autocast=False):
    """(log π(y_t|x, y_<t) [n, T], KL(π_ref(·|x, y_<t) ‖ π(·|x, y_<t)) [n, T]); padding gets 0.

    The KL is the forward KL over the full vocabulary, Σ_v π_ref(v) (log π_ref(v) − log π(v)), in float32
    (TDPO's per-token term, arXiv:2404.11999). Gradient flows through π only: the reference forward runs
    without it. Costs one reference forward and float32 [n, t, V] log-softmaxes of both models (the log-probs
    themselves come from ``logprobs_from_logits``, the same numbers as ``token_logprobs``)."""
    logits, targets = response_logits(model, input_ids, attention_mask, T, autocast)
    with torch.no_grad():
        ref_logits, _ = response_logits(ref, input_ids, attention_mask, T, autocast)
        ref_logp = torch.log_softmax(ref_logits.float(), -1)
    logp, _ = logprobs_from_logits(logits, targets)
    kl = (ref_logp.exp() * (ref_logp - torch.log_softmax(logits.float(), -1))).sum(-1)
    return _pad_to(logp, T), _pad_to(kl, T)
