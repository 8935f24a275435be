"""Memory plan: before any weight is loaded, estimate the memory per device of the chosen model,
hardware, LoRA and batch, print it, and stop with a clear message when it cannot fit.

Estimate (bytes), with P parameters of b bytes each, T trainable, world size W (FSDP shards the
first four terms over W):
  weights P·b + reference copy P·b (when the algorithm needs one and LoRA is off)
  + gradients T·b + AdamW moments 8·T (fp32)
  + activations ≈ 34·s·h·L·m bytes (Korthikanti et al. 2022, arXiv:2205.05198 §4, no recomputation;
    with gradient checkpointing 2·s·h·m per layer) + logits 4·m·t·V (fp32 log-prob of the kept positions)
where m is the micro batch, s the sequence length, t the completion length, h hidden, L layers.
"""

from __future__ import annotations

import os

_GB = 2**30
_BYTES = {"float64": 8, "float32": 4, "bfloat16": 2, "float16": 2}


class MemoryPlanError(RuntimeError):
    pass


def _arch_config(mcfg):
    from omegaconf import OmegaConf
    from transformers import AutoConfig

    if "arch" not in mcfg:
        return AutoConfig.from_pretrained(mcfg.path or mcfg.hub_id)
    arch = OmegaConf.to_container(mcfg.arch, resolve=True)
    model_type = arch.pop("model_type", "qwen3")
    arch.pop("rope_theta", None)
    if arch.get("head_dim") is None:
        arch.pop("head_dim", None)
    arch.setdefault("vocab_size", mcfg.get("vocab_size", 300))
    arch.setdefault("tie_word_embeddings", True)
    return AutoConfig.for_model(model_type, **arch)


def param_count(mcfg) -> tuple[int, object]:
    """Parameters of the architecture, counted on the meta device (nothing allocated)."""
    import torch
    from transformers import AutoModelForCausalLM

    conf = _arch_config(mcfg)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(conf)
    return sum(p.numel() for p in model.parameters()), conf


def available_bytes(device: str) -> int:
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            return torch.cuda.mem_get_info()[0]
    with open("/proc/meminfo") as fh:
        info = dict(line.split(":", 1) for line in fh)
    return int(info["MemAvailable"].split()[0]) * 1024


def estimate(cfg, needs_ref: bool) -> dict:
    P, conf = param_count(cfg.model)
    return _parts(cfg, P, conf.num_hidden_layers, conf.hidden_size, conf.vocab_size, needs_ref)


def _parts(cfg, P: int, L: int, h: int, V: int, needs_ref: bool) -> dict:
    b = _BYTES.get(str(cfg.model.dtype), 4)
    lora = cfg.model.get("lora")
    r = lora.rank if lora is not None else 0
    T = P if r == 0 else 2 * r * h * 7 * L  # ~7 adapted projections per layer, each r·(d_in+d_out) ≈ 2·r·h
    world = int(os.environ.get("WORLD_SIZE", 1))
    shard = world if cfg.hardware.get("strategy") == "fsdp" else 1
    t = cfg.rollout.max_new_tokens
    s = t + int(cfg.data.get("max_prompt_tokens", 64) or 64)
    m = cfg.trainer.micro_batch_size or 64
    per_layer = 2 * s * h * m if cfg.model.get("gradient_checkpointing") else 34 * s * h * m
    parts = {
        "weights": P * b / shard,
        "reference": P * b / shard if (needs_ref and r == 0) else 0,
        "gradients": T * b / shard,
        "adam": 8 * T / shard,
        "activations": per_layer * L + 4 * m * t * V,
    }
    parts = {k: v / _GB for k, v in parts.items()}
    parts["total"] = sum(parts.values())
    parts["params"] = P
    return parts


def arch_params(arch, vocab: int) -> int:
    """Parameters of a Qwen2/Qwen3/Llama-style ``model.arch``, counted from its numbers (no torch, no hub)."""
    h, L, heads = arch.hidden_size, arch.num_hidden_layers, arch.num_attention_heads
    kv, hd = arch.get("num_key_value_heads") or heads, arch.get("head_dim") or h // heads
    emb = vocab * h * (1 if arch.get("tie_word_embeddings", True) else 2)
    return emb + L * (2 * h * heads * hd + 2 * h * kv * hd + 3 * h * arch.intermediate_size + 2 * h) + h


def plan_check(cfg) -> None:
    """Pre-flight memory plan of a hub preset from its ``model.arch`` numbers (the trainer's ``check`` measures
    the built architecture later); raises ``MemoryPlanError`` when it cannot fit. The embedded model always fits."""
    m, a = cfg.model, cfg.algo
    if m.get("source") != "hub" or "arch" not in m:
        return
    V = m.arch.get("vocab_size") or m.get("vocab_size", 300)
    needs_ref = float(a.get("beta", 0) or 0) > 0 or ("reference_free" in a and not a.reference_free)
    plan = _parts(cfg, arch_params(m.arch, V), m.arch.num_hidden_layers, m.arch.hidden_size, V, needs_ref)
    _verdict(cfg, plan, available_bytes(str(cfg.hardware.device)) / _GB)


def check(cfg, needs_ref: bool, log=print) -> dict:
    plan = estimate(cfg, needs_ref)
    avail = available_bytes(cfg.hardware.device) / _GB
    terms = ", ".join(f"{k} {v:.2f}" for k, v in plan.items() if k not in ("total", "params"))
    log(f"[rlx] memory plan per device: {plan['total']:.2f} GB ({terms}) of {avail:.1f} GB available")
    return _verdict(cfg, plan, avail)


def _verdict(cfg, plan: dict, avail: float) -> dict:
    if plan["total"] > avail:
        raise MemoryPlanError(
            f"model.{cfg.model.name} ({plan['params'] / 1e9:.2f}B params, {cfg.model.dtype}) needs about "
            f"{plan['total']:.1f} GB per device on hardware={cfg.hardware.name} but {avail:.1f} GB is available. "
            f"Try model.lora.rank=16, model.gradient_checkpointing=true, a smaller trainer.micro_batch_size, "
            f"or hardware=fsdp.")
    return plan
