"""A lean forward for Llama-family decoders (Qwen3, Qwen2, Llama), on the transformers model's own weights.

Why: at the sizes rlx trains on a CPU (1M–30M parameters) a transformers forward call costs
milliseconds of Python around its arithmetic: mask building, output dataclasses, cache objects,
decorators and about fifteen module calls per layer (a 64-row one-token decode of the 1M model: 6.8 ms
through transformers, 4.8 ms here, of which the matmuls are about 1.4 ms). This runs the same
arithmetic, in the same order and the same dtypes, as a plain function over the same ``nn.Parameter``
objects: RMSNorm in float32,
q/k/v projections, Qwen3's per-head q/k norms, RoPE from the model's own rotary module (so every
rope type it supports), scaled-dot-product attention with grouped KV heads, the SiLU-gated MLP,
the final norm and the head on the kept positions. Gradients flow into the model's parameters as
through the transformers forward; nothing is copied.

On the CPU, full-sequence forwards give transformers' logits and gradients bit for bit (tests); the
one-query decode step computes the same attention as a small matmul, equal within float rounding. On
CUDA the attention kernels differ from transformers' (``enable_gqa``, the decode matmul), so results
agree within bf16 rounding there (docs/performance.md, measured on an H100). It is used
only where it computes what the transformers forward computes: ``for_model`` returns None (callers
fall back to the transformers call) for another architecture, a PEFT or FSDP wrapper, activation
checkpointing, dropout, sliding-window layers or an attention other than sdpa, and it checks its
logits against the transformers forward once per model before it is used (``SELF_CHECK_ATOL``).
Under CPU autocast with ``rlx.runtime.speed.fp32_attention`` on, attention runs in float32 as there.

Two caches: ``GrowCache`` (keys/values concatenated, autograd-friendly: the shared-prompt training
forward indexes a prompt's cache out to its rows) and ``BufferCache`` (allocated once for the whole
generation, written in place: the sampler). ``decoding()`` (the sampler enters it) builds ``Frozen``
weights for the forwards of one generation. Forwards with the live weights run each layer as ``lean_ops.layer_in``
and ``layer_out``, or their ``torch.compile``d versions when ``hardware.compile`` is on (``rlx.models.compiled``).
docs/performance.md has the measurements.
"""

from __future__ import annotations

import contextlib
import functools
import weakref

import torch
import torch.nn.functional as F

from rlx.models import lean_ops
from rlx.models.lean_ops import (  # noqa: F401 (GrowCache, BufferCache, repeated_buffer: the sampler's)
    BufferCache,
    GrowCache,
    _decode_attention,
    _rms,
    _rotate_half,
    attention_mask,
    repeated_buffer,
)

SUPPORTED = ("qwen3", "qwen2", "llama")
SELF_CHECK_ATOL = 1e-4
FROZEN_MAX_PARAMS = 100_000_000   # decoding(): a merged copy of the weights (<= 400 MB in float32) per generation


class Frozen:
    """The weights of one generation, which does not change them: q|k|v and gate|up merged into one matrix
    each (one matmul instead of three and two: the same bits, a test checks it) and the q and k norm weights
    side by side (q and k are normalised and rotated as one tensor). Under CPU bf16 autocast with oneDNN the
    matrices are also cast to bf16 and packed once (``mkldnn._reorder_linear_weight``) instead of being
    re-laid-out by every matmul: the same bits as ``F.linear`` under autocast, 1.4-1.7x faster at decode sizes."""

    def __init__(self, lean: "LeanForward", packed: bool):
        self.packed, self.w = packed, {}
        for layer in lean.layers:
            a, mlp = layer.self_attn, layer.mlp
            for key, mods in (("qkv", (a.q_proj, a.k_proj, a.v_proj)), ("o", (a.o_proj,)),
                              ("gate_up", (mlp.gate_proj, mlp.up_proj)), ("down", (mlp.down_proj,))):
                w = torch.cat([m.weight.detach() for m in mods])
                b = torch.cat([m.bias.detach() for m in mods]) if mods[0].bias is not None else None
                if packed:
                    w = torch.ops.mkldnn._reorder_linear_weight(w.to(torch.bfloat16), None)
                    b = b.to(torch.bfloat16) if b is not None else None
                self.w[layer, key] = (w, b)
            if lean.qk_norm:
                self.w[layer, "qk_norm"] = torch.cat([a.q_norm.weight.detach().expand(lean.n_q, -1),
                                                      a.k_norm.weight.detach().expand(lean.n_kv, -1)])

    def linear(self, x, layer, key):
        w, b = self.w[layer, key]
        if self.packed:
            return torch.ops.mkldnn._linear_pointwise(x.to(torch.bfloat16), w, b, "none", [], "")
        return F.linear(x, w, b)


class LeanForward:
    """``lean(ids, pos, key_mask, cache=None, logits_to_keep=0) -> logits`` for a supported transformers model."""

    def __init__(self, model):
        self.model = model
        config = model.config
        self.embed = model.model.embed_tokens
        self.rotary = model.model.rotary_emb
        self.norm = model.model.norm
        self.head = model.lm_head
        self.layers = list(model.model.layers)
        attn = self.layers[0].self_attn
        self.head_dim, self.scale = attn.head_dim, attn.scaling
        self.n_q, self.n_kv = config.num_attention_heads, config.num_key_value_heads
        self.eps = config.rms_norm_eps
        self.qk_norm = hasattr(attn, "q_norm")
        self.intermediate = self.layers[0].mlp.gate_proj.out_features
        self._frozen = None   # a Frozen inside decoding()
        self.compiled = None   # (layer_in, layer_out) compiled by rlx.models.compiled, or None: eager
        self.n_params = sum(p.numel() for p in model.parameters())

    @contextlib.contextmanager
    def decoding(self):
        """Generation: forwards without autograd use ``Frozen`` weights built once here (CPU models of at most
        ``FROZEN_MAX_PARAMS``: the merged copy costs their size again in memory, and larger models gain
        little; elsewhere this changes nothing). Forwards with autograd inside it use the live parameters."""
        frozen = None
        if self.embed.weight.device.type == "cpu" and self.n_params <= FROZEN_MAX_PARAMS:
            packed = (torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
                      and _onednn_linear())
            if packed or not torch.is_autocast_enabled("cpu"):
                frozen = Frozen(self, packed)
        self._frozen = frozen
        try:
            yield self
        finally:
            self._frozen = None

    def fp32_attention(self) -> bool:
        from rlx.runtime.speed import FP32_SDPA

        return getattr(self.model.config, "_attn_implementation", None) == FP32_SDPA

    def _attention_in(self, h, layer, cos, sin, frozen, N, Q):
        """Frozen weights: q [N, H, Q, D], k and v [N, H_kv, Q, D] of one layer: one matmul; q and k normalised
        and rotated together (elementwise: the same bits as ``layer_in``)."""
        qkv = frozen.linear(h, layer, "qkv").view(N, Q, -1, self.head_dim)
        qk, v = qkv[:, :, :self.n_q + self.n_kv], qkv[:, :, self.n_q + self.n_kv:]
        if self.qk_norm:
            qk = _rms(qk, frozen.w[layer, "qk_norm"], self.eps)
        qk = qk.transpose(1, 2)
        qk = qk * cos + _rotate_half(qk) * sin
        return qk[:, :self.n_q], qk[:, self.n_q:], v.transpose(1, 2)

    def _frozen_layer(self, x, i, layer, cos, sin, mask, cache, frozen, fp32):
        N, Q = x.shape[0], x.shape[1]
        q, k, v = self._attention_in(_rms(x, layer.input_layernorm.weight, self.eps), layer, cos, sin, frozen, N, Q)
        if cache is not None:
            k, v = cache.update(i, k, v)
        o = lean_ops.attend(q, k, v, mask, self.scale, self.n_q // self.n_kv, fp32, x.device.type)
        x = x + frozen.linear(o.transpose(1, 2).reshape(N, Q, -1), layer, "o")
        gate, up = frozen.linear(_rms(x, layer.post_attention_layernorm.weight, self.eps), layer,
                                 "gate_up").split(self.intermediate, -1)
        return x + frozen.linear(F.silu(gate) * up, layer, "down")

    def __call__(self, ids, pos, key_mask, cache=None, logits_to_keep: int = 0):
        N, Q = ids.shape
        x = F.embedding(ids, self.embed.weight, self.embed.padding_idx)
        cos, sin = self.rotary(x, pos)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        mask = attention_mask(key_mask, Q)
        fp32 = self.fp32_attention() and torch.is_autocast_enabled(ids.device.type)
        frozen = self._frozen if not torch.is_grad_enabled() else None   # frozen weights only without autograd
        layer_in, layer_out = self.compiled if self.compiled is not None else (lean_ops.layer_in, lean_ops.layer_out)
        n_rep = self.n_q // self.n_kv
        for i, layer in enumerate(self.layers):
            if frozen is not None:
                x = self._frozen_layer(x, i, layer, cos, sin, mask, cache, frozen, fp32)
                continue
            w = lean_ops.layer_weights(layer)
            q, k, v = layer_in(x, w, cos, sin, self.head_dim, self.eps)
            if cache is not None:
                k, v = cache.update(i, k, v)
            x = layer_out(x, q, k, v, mask, w, self.scale, n_rep, self.eps, fp32)
        x = _rms(x, self.norm.weight, self.eps)
        if logits_to_keep:
            x = x[:, -logits_to_keep:]
        return F.linear(x, self.head.weight, self.head.bias)

    def new_cache(self) -> GrowCache:
        return GrowCache(len(self.layers))


@functools.lru_cache(maxsize=1)
def _onednn_linear() -> bool:
    """oneDNN's packed-weight linear is in this torch build and gives F.linear's bits on a small case."""
    try:
        gen = torch.Generator().manual_seed(0)   # not the global generator: a run's samples must not move
        x, w = torch.randn(3, 32, generator=gen).bfloat16(), torch.randn(16, 32, generator=gen).bfloat16()
        y = torch.ops.mkldnn._linear_pointwise(x, torch.ops.mkldnn._reorder_linear_weight(w, None), None,
                                              "none", [], "")
        return torch.equal(y, F.linear(x, w))
    except (AttributeError, RuntimeError):
        return False


_CHECKPOINTING: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def checkpointing(model) -> bool:
    """Activation checkpointing is on (it turns the cache off in training mode, so nothing can be shared).
    Looked up once per model (transformers walks every module for it); rlx sets it when it builds the model."""
    if model not in _CHECKPOINTING:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        on = False
        for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):  # transformers renamed it
            if hasattr(type(base), name):
                on = bool(getattr(base, name))
                break
        _CHECKPOINTING[model] = on
    return _CHECKPOINTING[model]


_LEAN: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def why_not(model) -> str | None:
    """Why the lean forward does not apply to ``model`` (None: it does)."""
    from rlx.runtime.speed import FP32_SDPA

    config = getattr(model, "config", None)
    if config is None or getattr(config, "model_type", None) not in SUPPORTED:
        return f"model type {getattr(config, 'model_type', None)!r} (lean forward: {', '.join(SUPPORTED)})"
    if type(model).__name__ not in ("Qwen3ForCausalLM", "Qwen2ForCausalLM", "LlamaForCausalLM"):
        return f"class {type(model).__name__} (a wrapper)"
    try:
        from torch.distributed.fsdp import FSDPModule

        if isinstance(model, FSDPModule):
            return "FSDP"
    except ImportError:
        pass
    if checkpointing(model):
        return "activation checkpointing"
    if getattr(config, "hidden_act", None) != "silu" or getattr(config, "mlp_bias", False):
        return f"activation {getattr(config, 'hidden_act', None)!r}"
    if float(getattr(config, "attention_dropout", 0.0) or 0.0) > 0:
        return "attention dropout"
    if any(t != "full_attention" for t in (getattr(config, "layer_types", None) or [])):
        return "sliding-window layers"
    if getattr(config, "_attn_implementation", None) not in ("sdpa", FP32_SDPA):
        return f"attention {getattr(config, '_attn_implementation', None)!r}"
    for layer in model.model.layers:
        mods = [layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj, layer.self_attn.o_proj,
                layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj]
        if any(type(m) is not torch.nn.Linear or m._forward_hooks or m._forward_pre_hooks for m in mods):
            return "adapted or hooked linear layers"
    return None


@torch.no_grad()
def _self_check(lean: LeanForward) -> float:
    """Max |logit difference| against the transformers forward on a small left-padded batch (fp32, no cache)."""
    model = lean.model
    device = next(model.parameters()).device
    V = model.config.vocab_size
    ids = torch.arange(10, device=device).remainder(V).view(2, 5)
    am = torch.ones_like(ids)
    am[1, :2] = 0
    pos = (am.cumsum(-1) - 1).clamp(min=0)
    was = model.training
    model.eval()
    try:
        ref = model(input_ids=ids, attention_mask=am, position_ids=pos, use_cache=False).logits.float()
        got = lean(ids, pos, am).float()
    finally:
        model.train(was)
    real = am.bool()
    return float((ref[real] - got[real]).abs().max())


_LAYERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def use_layers(model, layers: tuple) -> None:
    """Run ``model``'s lean forward with ``layers`` (compiled ``layer_in``, ``layer_out``: rlx.models.compiled), now
    or once it is built (building runs the self-check, which must run under the caller's autocast, not here)."""
    _LAYERS[model] = layers
    if _LEAN.get(model) is not None:
        _LEAN[model].compiled = layers


def disable(model) -> None:
    """``hardware.lean_forward=false``: ``model`` always runs the transformers forward."""
    _LEAN[model] = None


def for_model(model) -> LeanForward | None:
    """The lean forward of ``model`` when it applies and matches transformers' logits, else None (cached)."""
    if model in _LEAN:
        return _LEAN[model]
    lean = None
    if why_not(model) is None:
        candidate = LeanForward(model)
        if _self_check(candidate) <= SELF_CHECK_ATOL:
            lean, candidate.compiled = candidate, _LAYERS.get(model)
    _LEAN[model] = lean
    return lean
