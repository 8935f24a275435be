"""Speed settings a trainer applies to its models (measurements in docs/performance.md).

- ``resolve_autocast``: ``hardware.autocast: null`` (auto) turns bf16 autocast on where it is faster:
  a CUDA device with bf16, or a CPU with bf16 matrix instructions (AMX-BF16 or AVX512-BF16) and a model
  of at least ``AUTOCAST_MIN_PARAMS`` parameters (docs/environment.md §3, an AMX CPU: 2.5× faster at 31.7M,
  1.5× at 4M, slower at 1M where per-op overhead dominates; docs/performance.md, an AVX512-BF16 CPU: a
  GRPO step at 31.6M 2× faster). ``true`` / ``false`` force it.
- ``fp32_attention``: under CPU autocast, attention runs in float32 (``rlx_sdpa_fp32``, registered
  with transformers' AttentionInterface). The CPU flash-attention backward is 2.3× slower in bf16
  than in fp32 at these shapes, while attention is a small share of the FLOPs; the linear layers
  stay in bf16. The sampler and the trainer run the same function, so sampling stays on-policy.
- ``bf16_linear_reference``: under autocast, a frozen reference copy stores its linear layers' weights in
  bf16. Autocast casts fp32 weights to bf16 on every call for tensors that need no gradient (it caches
  casts only for trainable leaves), so this gives the same bf16 weights once instead of every forward,
  and halves the reference's memory. Embeddings and norms stay float32 (the residual stream too).
- ``tune_allocator``: on Linux/glibc CPUs, activations and gradients of a few MB to 32 MB are kept in
  the heap between steps (``mallopt``) instead of being mmap-ed, page-faulted and unmapped every step
  (about 10% of a 30M-parameter step, docs/performance.md). Process-wide: a program that trains
  something else in the same process gets it too.
- ``clip_grad_norm``: ``torch.nn.utils.clip_grad_norm_`` multiplies every gradient by its clip
  coefficient even when that is 1; this skips the multiply when the norm is within the limit (same result).
"""

from __future__ import annotations

import ctypes
import functools
import math
import sys

import torch

AUTOCAST_MIN_PARAMS = 3_000_000
FP32_SDPA = "rlx_sdpa_fp32"


@functools.lru_cache(maxsize=1)
def cpu_bf16_matmul() -> str | None:
    """The CPU's bf16 matrix instructions oneDNN uses: "amx_bf16" (Intel AMX tiles), "avx512_bf16" (bf16 dot
    products, e.g. AMD Zen 4), or None (bf16 is emulated and slower than float32)."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line.split() for line in fh if line.startswith("flags")), [])
    except OSError:
        return None
    return next((f for f in ("amx_bf16", "avx512_bf16") if f in flags), None)


def resolve_autocast(setting, model, device: torch.device) -> bool:
    """``hardware.autocast`` (true | false | null = auto) for this model on this device. Auto leaves a float64 model
    (``model.dtype=float64``, a numerical check) in float64: bf16 autocast would pack its decode weights in bf16."""
    if setting is not None:
        return bool(setting)
    if next(model.parameters()).dtype == torch.float64:
        return False
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu" or cpu_bf16_matmul() is None:
        return False
    return sum(p.numel() for p in model.parameters()) >= AUTOCAST_MIN_PARAMS


def _fp32_sdpa(module, query, key, value, attention_mask, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    # float32 attention is the autocast setting; outside autocast (e.g. the lean forward's self-check of a bf16
    # model) attention runs in the input dtype, as the lean forward's does, so its output matches o_proj's weight
    if not torch.is_autocast_enabled(query.device.type):
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
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


def bf16_linear_reference(ref, policy) -> int:
    """Store the nn.Linear weights of a frozen, separate reference copy in bf16; returns how many layers.

    A reference that shares weights with the policy (LoRA's adapter-disabled policy) is left alone; a
    head tied to the input embedding gets its own bf16 copy (the embedding stays float32)."""
    if not isinstance(ref, torch.nn.Module) or any(p.requires_grad for p in ref.parameters()):
        return 0
    if {id(p) for p in ref.parameters()} & {id(p) for p in policy.parameters()}:
        return 0
    n = 0
    for module in ref.modules():
        if type(module) is torch.nn.Linear and module.weight.dtype == torch.float32:
            module.weight = torch.nn.Parameter(module.weight.detach().to(torch.bfloat16), requires_grad=False)
            if module.bias is not None:
                module.bias = torch.nn.Parameter(module.bias.detach().to(torch.bfloat16), requires_grad=False)
            n += 1
    return n


@functools.lru_cache(maxsize=1)
def tune_allocator() -> bool:
    """glibc: mmap only allocations over 32 MB and keep up to 1 GB of freed heap (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, 32 << 20)) and bool(libc.mallopt(-1, 1 << 30))
    except (OSError, AttributeError):
        return False


def set_training(model, mode: bool, flags_only: bool = False) -> None:
    """``model.train(mode)``. With ``flags_only`` only every module's ``training`` flag is set: transformers'
    ``train`` also re-kernelizes a model with hub kernels (``use_kernels``) on each switch, ~1 ms a switch on
    the CPU, which a forward that never calls the modules' own ``forward`` (the lean forward) does not need."""
    if not flags_only:
        model.train(mode)
        return
    for module in model.modules():
        module.training = mode


def all_finite(parameters) -> bool:
    """Whether every value of every tensor is finite: one reduction per tensor, one host sync. (A norm would
    overflow to inf on large finite weights.)"""
    flags = [torch.isfinite(p).all() for p in parameters]
    return bool(torch.stack(flags).all()) if flags else True


def clip_grad_norm(parameters, max_norm: float) -> float:
    """The global gradient norm before clipping (a float); gradients scaled to ``max_norm`` when above it.

    Same result as ``torch.nn.utils.clip_grad_norm_``: its coefficient min(1, max_norm / (norm + 1e-6))
    is exactly 1 when norm + 1e-6 <= max_norm, and only then is the multiply skipped."""
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return 0.0
    total = torch.nn.utils.get_total_norm([p.grad for p in params], foreach=True)
    value = float(total)
    if not (math.isfinite(value) and value + 1e-6 <= max_norm):
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, total, foreach=True)
    return value


def prepare(model, setting, device: torch.device, log=print) -> bool:
    """Resolve autocast for ``model`` and apply the CPU attention setting; returns whether autocast is on."""
    autocast = resolve_autocast(setting, model, device)
    if device.type == "cpu":
        tune_allocator()
    if autocast and device.type == "cpu" and fp32_attention(model):
        log("[rlx] bf16 autocast on (linear layers in bf16, attention in fp32)")
    elif autocast:
        log("[rlx] bf16 autocast on")
    return autocast


def busy_cores() -> float:
    """Processes on a CPU right now besides this one: the runnable count of ``/proc/loadavg``, the median of 5
    samples over 0.2 s. (The 1-minute load average, the fallback where there is no ``/proc``, lags: a run that
    ended a moment ago still counts, so runs started one after another would warn for nothing.)"""
    import os
    import time

    try:
        samples = []
        for _ in range(5):
            with open("/proc/loadavg") as f:
                samples.append(int(f.read().split()[3].split("/")[0]) - 1)   # minus this process
            time.sleep(0.04)
        return float(sorted(samples)[2])
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0]


def thread_advice(num_threads, load: float | None = None, cores: int | None = None) -> str | None:
    """A warning when ``hardware.num_threads`` is unset (torch takes every core) and other processes already keep
    a core busy (``busy_cores`` >= 1): two runs that each take every core slow each other many-fold (steps of
    0.5 s became 14 s with two default runs on 2 cores). None when there is nothing to say."""
    if num_threads:
        return None
    import os

    load = busy_cores() if load is None else load
    cores = (os.cpu_count() or 1) if cores is None else cores
    if load < 1.0:
        return None
    return (f"[rlx] WARNING: the machine is already busy ({load:.0f} other process(es) running on {cores} cores) "
            f"and hardware.num_threads is unset, so torch takes all {cores} cores; runs that share cores slow each "
            "other down many-fold: pass hardware.num_threads=1 (or cores / runs)")
