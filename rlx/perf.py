"""Speed settings a trainer applies to its models (measurements in docs/performance.md).

- ``resolve_autocast``: ``hardware.autocast: null`` (auto) turns bf16 autocast on where it is faster:
  a CUDA device with bf16, or a CPU with AMX-BF16 and a model of at least ``AUTOCAST_MIN_PARAMS``
  parameters (environment.md §3: 2.5× faster at 31.7M, 1.5× at 4M, slower at 1M where per-op
  overhead dominates). ``true`` / ``false`` force it.
- ``fp32_attention``: under CPU autocast, attention runs in float32 (``rlx_sdpa_fp32``, registered
  with transformers' AttentionInterface). The CPU flash-attention backward is 2.3× slower in bf16
  than in fp32 at these shapes, while attention is a small share of the FLOPs; the linear layers
  stay in bf16. The sampler and the trainer run the same function, so sampling stays on-policy.
"""

from __future__ import annotations

import functools

import torch

AUTOCAST_MIN_PARAMS = 3_000_000
FP32_SDPA = "rlx_sdpa_fp32"


@functools.lru_cache(maxsize=1)
def cpu_has_amx_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as fh:
            return any(line.startswith("flags") and " amx_bf16" in line for line in fh)
    except OSError:
        return False


def resolve_autocast(setting, model, device: torch.device) -> bool:
    """``hardware.autocast`` (true | false | null = auto) for this model on this device."""
    if setting is not None:
        return bool(setting)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu" or not cpu_has_amx_bf16():
        return False
    return sum(p.numel() for p in model.parameters()) >= AUTOCAST_MIN_PARAMS


def _fp32_sdpa(module, query, key, value, attention_mask, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    with torch.autocast(query.device.type, enabled=False):
        return sdpa_attention_forward(module, query.float(), key.float(), value.float(), attention_mask, **kwargs)


@functools.lru_cache(maxsize=1)
def _register() -> bool:
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    except ImportError:
        return False
    AttentionInterface.register(FP32_SDPA, _fp32_sdpa)
    AttentionMaskInterface.register(FP32_SDPA, sdpa_mask)
    return True


def fp32_attention(model) -> bool:
    """Switch a transformers model that uses ``sdpa`` to float32 attention; True when it was switched."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) != "sdpa" or not _register():
        return False
    if not hasattr(model, "set_attn_implementation"):
        return False
    model.set_attn_implementation(FP32_SDPA)
    return getattr(model.config, "_attn_implementation", None) == FP32_SDPA


def prepare(model, setting, device: torch.device, log=print) -> bool:
    """Resolve autocast for ``model`` and apply the CPU attention setting; returns whether autocast is on."""
    autocast = resolve_autocast(setting, model, device)
    if autocast and device.type == "cpu" and fp32_attention(model):
        log("[rlx] bf16 autocast on (linear layers in bf16, attention in fp32)")
    elif autocast:
        log("[rlx] bf16 autocast on")
    return autocast
