"""rlx's own decoding loop: the model's forward with a KV cache, without ``generate()``'s per-step overhead.

What it does differently from ``model.generate`` (and why it is faster, docs/performance.md):
  - the prompt is run once per distinct prompt and its KV cache is copied to the prompt's n samples
    (``generate`` on ``repeat_interleave``-d inputs runs every prompt n times);
  - the cache lives in buffers allocated once for the longest possible sequence; a step writes one
    column in place instead of re-allocating the whole cache (``torch.cat`` per layer per step);
  - rows that have produced EOS leave the batch once a quarter of it has ended, and the loop stops
    when every row has ended;
  - for Qwen3/Qwen2/Llama models the forward is ``rlx.models.lean`` (its ``BufferCache``, and weights
    merged and packed once per generation in ``decoding()``); other models run their own forward with
    a transformers cache whose layers are replaced by preallocated buffers.

Sampling is the same distribution as transformers' sampling with the same settings: float32 logits,
then temperature, top-k and top-p in transformers' order (its own logits warpers), softmax and
a draw: by inverse CDF from the prompt's own random stream where the caller gives keys (the online loop
does: rlx/rollout/streams.py), else ``torch.multinomial`` on torch's global generator (checkpointed, so resume
stays exact). Greedy is ``argmax``. A test checks token-for-token equality with ``generate`` (greedy) and the sampled
distribution against the model's probabilities.

With ``with_logp`` the loop also returns the log-probability of every token it picked: log softmax of
the float32 logits *before* the warpers, i.e. log π(y_t|·) as the trainer computes it
(``logprobs.token_logprobs``), not the tempered/truncated sampling distribution. It reads the logits
the loop already has and draws no random numbers, so the tokens are the same with it on or off.
"""

from __future__ import annotations

import contextlib

import torch

from rlx.models import lean as lean_forward
from rlx.models.kv_cache import cache_kwarg, new_cache, plain_layers  # noqa: F401 (re-exported)
from rlx.ops import position_ids_from_mask
from rlx.rollout import streams
from rlx.runtime.speed import FP32_SDPA


def _buffer_layer_class():
    from transformers.cache_utils import DynamicLayer

    class BufferLayer(DynamicLayer):
        """A full-attention layer whose keys/values live in buffers allocated once; ``update`` writes in place
        and returns views of the filled part, so everything that reads a DynamicLayer reads it unchanged."""

        def __init__(self, keys: torch.Tensor, values: torch.Tensor, repeats: int, capacity: int, dtype=None):
            super().__init__()
            self._k = lean_forward.repeated_buffer(keys, repeats, capacity, dtype)
            self._v = lean_forward.repeated_buffer(values, repeats, capacity, dtype)
            self.n, self.device, self.is_initialized = keys.shape[2], keys.device, True
            self._views()

        def _views(self):
            self.keys, self.values = self._k[:, :, :self.n], self._v[:, :, :self.n]

        def update(self, key_states, value_states, *args, **kwargs):
            m = key_states.shape[-2]
            self._k[:, :, self.n:self.n + m] = key_states
            self._v[:, :, self.n:self.n + m] = value_states
            self.n += m
            self._views()
            return self.keys, self.values

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            self._k, self._v = self._k[indices], self._v[indices]
            self._views()

    return BufferLayer


class Sampler:
    """Decode ``max_new_tokens`` tokens for left-padded prompts, n samples each (contiguous per prompt)."""

    def __init__(self, model, max_new_tokens: int, eos_id: int, pad_id: int, temperature=1.0, top_k=0, top_p=1.0):
        from transformers.generation.logits_process import (
            LogitsProcessorList,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        self.model, self.max_new_tokens, self.eos, self.pad = model, max_new_tokens, eos_id, pad_id
        self.cache_kw = cache_kwarg(model)
        warpers = LogitsProcessorList()   # transformers' order (GenerationMixin._get_logits_processor)
        if temperature is not None and temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(temperature))
        if top_k:
            warpers.append(TopKLogitsWarper(top_k=top_k, min_tokens_to_keep=1))
        if top_p is not None and top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))
        self.warpers = warpers
        self._layer_cls = None
        self.lean = None   # the model's lean forward, looked up at each call

    @property
    def supported(self) -> bool:
        config = getattr(self.model, "config", None)
        return self.cache_kw is not None and config is not None and not config.is_encoder_decoder

    def _forward(self, ids, am, pos, cache, logits_to_keep=1):
        if isinstance(cache, lean_forward.BufferCache):
            return self.lean(ids, pos, am, cache, logits_to_keep=1)[:, -1].float()
        kw = {self.cache_kw: cache}
        out = self.model(input_ids=ids, attention_mask=am, position_ids=pos, use_cache=True,
                         logits_to_keep=logits_to_keep, **kw)
        return out.logits[:, -1].float()

    def _prefill(self, ids, am, n: int):
        """Run each prompt once; return the next-token logits and a cache for its n samples, or None."""
        capacity = ids.shape[1] + self.max_new_tokens
        # float32 attention (rlx.runtime.speed.fp32_attention) reads float32 keys/values: convert once, not every step
        fp32 = getattr(self.model.config, "_attn_implementation", None) == FP32_SDPA
        dtype = torch.float32 if fp32 else None
        if self.lean is not None:
            grow = self.lean.new_cache()
            logits = self.lean(ids, position_ids_from_mask(am), am, grow, logits_to_keep=1)[:, -1].float()
            return logits.repeat_interleave(n, 0), lean_forward.BufferCache(grow, n, capacity, dtype)
        cache = new_cache(self.model)
        logits = self._forward(ids, am, position_ids_from_mask(am), cache)
        if not plain_layers(cache):
            return None
        if self._layer_cls is None:
            self._layer_cls = _buffer_layer_class()
        cache.layers = [self._layer_cls(layer.keys, layer.values, n, capacity, dtype) for layer in cache.layers]
        return logits.repeat_interleave(n, 0), cache

    def _pick(self, logits, greedy: bool, u=None):
        """Greedy: argmax. Else a draw from the warped distribution: with the row's stream uniforms ``u`` [rows]
        (rlx/rollout/streams.py) by inverse CDF, without them from torch's global generator."""
        if greedy:
            return logits.argmax(-1)
        scores = self.warpers(None, logits) if self.warpers else logits
        probs = torch.softmax(scores, -1)
        if u is not None:
            return streams.inverse_cdf(probs, u)
        return torch.multinomial(probs, 1).squeeze(1)

    @torch.no_grad()
    def __call__(self, ids: torch.Tensor, am: torch.Tensor, n: int = 1, greedy: bool = False, with_logp=False,
                 keys: list[int] | None = None, alive_sum=None):
        """(completion ids [B·n, T'], their log-probs [B·n, T'] or None without ``with_logp``); pad and log-prob 0
        after EOS; T' ≤ max_new_tokens: the loop stops when all rows ended. None when the model's cache is
        not one this loop handles (the caller falls back to ``generate``). ``keys`` [B]: the prompts' random
        streams (rlx/rollout/streams.py; None = torch's global generator). ``alive_sum(n)``: the rows still
        decoding on every rank (sharded rollouts under FSDP, where every rank must run as many forwards as the
        others: the loop goes on while any rank has a row left); None = this process's own count."""
        self.lean = lean_forward.for_model(self.model)   # None: the model's own forward (_prefill, _forward)
        u = None if greedy or keys is None else streams.uniforms(keys, n, self.max_new_tokens, ids.device)
        with self.lean.decoding() if self.lean is not None else contextlib.nullcontext():
            return self._sample(ids, am, n, greedy, with_logp, u, alive_sum)

    def _sample(self, ids, am, n, greedy, with_logp, u=None, alive_sum=None):
        pre = self._prefill(ids, am, n)
        if pre is None:
            return None
        logits, cache = pre
        N, P, T = ids.shape[0] * n, ids.shape[1], self.max_new_tokens
        out = torch.full((N, T), self.pad, dtype=torch.long, device=ids.device)
        logp = torch.zeros(N, T, device=ids.device) if with_logp else None
        mask = torch.cat([am.repeat_interleave(n, 0), am.new_ones(N, T)], 1)
        pos = mask[:, :P].sum(-1)                          # position of the first new token
        rows = torch.arange(N, device=ids.device)          # which output rows are still in the batch
        alive = torch.ones(N, dtype=torch.bool, device=ids.device)
        t = 0
        for t in range(T):
            tok = self._pick(logits, greedy, None if u is None else u[rows, t]).masked_fill(~alive, self.pad)
            out[rows, t] = tok
            if with_logp:   # log π of the picked token from the unwarped logits (no RNG: tokens unchanged)
                lp = torch.log_softmax(logits, -1).gather(-1, tok[:, None]).squeeze(1)
                logp[rows, t] = lp.masked_fill(~alive, 0.0)
            alive &= tok != self.eos
            n_alive = int(alive.sum())                       # one host sync per token: the loop's stop test
            if (n_alive if alive_sum is None else alive_sum(n_alive)) == 0 or t == T - 1:
                break
            if 0 < n_alive <= 0.75 * len(rows):              # drop finished rows from the batch
                keep = alive.nonzero().squeeze(1)
                rows, alive, tok, mask, pos = rows[keep], alive[keep], tok[keep], mask[keep], pos[keep]
                if isinstance(cache, lean_forward.BufferCache):
                    cache.select(keep)
                else:
                    for layer in cache.layers:
                        layer.batch_select_indices(keep)
            logits = self._forward(tok[:, None], mask[:, :P + t + 1], (pos + t)[:, None], cache)
        return out[:, :t + 1], (logp[:, :t + 1] if with_logp else None)
