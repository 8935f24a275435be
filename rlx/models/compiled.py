"""``hardware.compile``: ``torch.compile`` for the lean forward's decoder layers.

What is compiled: the two halves of a decoder layer, ``rlx.models.lean_ops.layer_in`` (norm, q/k/v projections,
Qwen3's q/k norms, RoPE) and ``layer_out`` (attention, o_proj, residual, norm, gated MLP, residual). Their weights
are arguments, so one compiled graph of each serves every layer of the policy and of the reference, in the
training forward and backward (inductor fuses the element-wise ops of both), the reference and old-policy
log-prob passes, and the decode step where the lean forward runs it with the live weights (CUDA). The KV cache
update stays outside (a Python object), between the halves. Shapes: the first call compiles for its shapes; a
call with other lengths recompiles once with dynamic sizes (torch's automatic dynamic shapes), so a run
compiles each half about twice, not once per length. Not compiled: the CPU decode step with frozen packed
weights (``Frozen``: oneDNN's packed matmul is already one call per projection), transformers' forward (models
the lean forward does not cover) and everything outside the layers.

``hardware.compile``: true | false | null (auto: off. On the CPU the steady step is 6-8% faster but compiling costs
3-41 s a process, more than the default run saves: docs/performance.md; on CUDA it is not yet measured:
benchmarks/gpu_check.sh measures it, and auto stays off until it has). Compile time is
counted apart from the step (``seconds()``, logged as ``perf/compile_s``: the seconds spent compiling during that
step) through dynamo's compile callbacks. ``hardware.compile_backend`` (default inductor, TRL's
``torch_compile_backend``) picks torch.compile's backend: ``aot_eager`` traces the same graphs without generating
code (a quick check of the path, no speed-up).
"""

from __future__ import annotations

import functools
import shutil
import time

import torch

from rlx.models import lean as lean_forward
from rlx.models import lean_ops

_CLOCK = {"start": None, "total": 0.0}


def _started(_args) -> None:
    _CLOCK["start"] = time.perf_counter()


def _ended(_args) -> None:
    if _CLOCK["start"] is not None:
        _CLOCK["total"] += time.perf_counter() - _CLOCK["start"]
        _CLOCK["start"] = None


def seconds() -> float:
    """Seconds this process has spent compiling (dynamo and inductor, forward and lazily compiled backward)."""
    return _CLOCK["total"]


@functools.lru_cache(maxsize=None)
def layers(backend: str = "inductor") -> tuple:
    """(compiled ``layer_in``, compiled ``layer_out``), built once per process and backend; compilation happens at
    first use."""
    import torch._dynamo.config as dynamo_config
    from torch._dynamo import callback

    # a graph per (grad mode, weight dtype, static/dynamic shapes): the default run compiles 3-4 of each half, a run
    # with a bf16 reference and old-policy passes a few more; past the limit dynamo would fall back to eager
    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 16)
    callback.on_compile_start(_started)
    callback.on_compile_end(_ended)
    return torch.compile(lean_ops.layer_in, backend=backend), torch.compile(lean_ops.layer_out, backend=backend)


def why_not(setting, device: torch.device, lean_on: bool, backend: str = "inductor") -> str | None:
    """Why the compiled path is off for this run (None: on)."""
    if setting is False:
        return "hardware.compile=false"
    if not lean_on:
        return "the lean forward is off, and compile applies to its layers"
    if setting is None and device.type == "cpu":
        return ("auto: off on the CPU, where compiling costs more than a typical run saves (docs/performance.md); "
                "hardware.compile=true turns it on for long runs")
    if setting is None:
        return (f"auto: off on {device.type}, not measured there yet (benchmarks/gpu_check.sh measures it); "
                "hardware.compile=true turns it on")
    if backend == "cudagraphs" and device.type != "cuda":
        return f"hardware.compile_backend=cudagraphs needs a CUDA device, not {device.type}"
    if backend != "inductor":
        return None
    if device.type == "cpu" and not (shutil.which("c++") or shutil.which("g++")):
        return "no C++ compiler on PATH for inductor's CPU kernels"
    if device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "triton is not installed (inductor's GPU kernels)"
    return None


def apply(models, setting, device: torch.device, lean_on: bool, backend: str = "inductor") -> str:
    """Turn the compiled layers on for every model in ``models`` that runs the lean forward; the line to print."""
    why = why_not(setting, device, lean_on, backend)
    if why is None:
        for model in models:
            if model is not None and lean_forward.why_not(model) is None:
                lean_forward.use_layers(model, layers(backend))
    return (f"[rlx] compile: on (decoder layers, backend {backend}; compile time logged as perf/compile_s)"
            if why is None else f"[rlx] compile: off ({why})")
