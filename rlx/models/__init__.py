"""Load policies: the embedded tiny model and hub checkpoints share one ``from_pretrained`` path.

``rlx.build("model", cfg.model)`` -> (model, tokenizer), with LoRA adapters and gradient
checkpointing applied as the config says. ``make_reference`` gives the frozen reference policy: the
policy with its adapter disabled under LoRA (no second copy), a frozen copy otherwise.
"""

from __future__ import annotations

import copy

from rlx.registry import MODELS

__all__ = ["load_pretrained", "make_reference", "prepare"]


def _quiet():
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def load_pretrained(path, dtype: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet()
    tok = AutoTokenizer.from_pretrained(path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, tok


def prepare(model, cfg, log=print):
    """Gradient checkpointing and LoRA (peft) as ``cfg`` says; logs trainable parameters."""
    if cfg.get("gradient_checkpointing"):
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    lora = cfg.get("lora")
    if lora is not None and lora.rank > 0:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                                 target_modules=list(lora.target_modules), task_type="CAUSAL_LM"))
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    model.rlx_param_counts = {"model/params": float(total), "model/trainable_params": float(trainable)}
    log(f"[rlx] model {cfg.name}: {total:,} parameters, {trainable:,} trainable")
    return model


class AdapterDisabledReference:
    """The reference policy of a LoRA model: the same module with its adapter switched off."""

    def __init__(self, model):
        self.model = model

    def __call__(self, **kwargs):
        import torch

        with torch.no_grad(), self.model.disable_adapter():
            return self.model(**kwargs)

    def eval(self):
        return self


def make_reference(model):
    if hasattr(model, "disable_adapter") and hasattr(model, "peft_config"):
        return AdapterDisabledReference(model)
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


@MODELS.register("hub")
def load_hub(cfg, log=print, **task):
    """(model, tokenizer) from ``model.path`` or ``model.hub_id``; ``model.init=random`` builds the
    architecture in ``model.arch`` without weights (no hub access needed). ``task`` (the run's env and data
    nodes, which the embedded model's warm start reads) is not used."""
    if cfg.init == "random":
        model, tok = random_from_arch(cfg, log)
    else:
        model, tok = load_pretrained(cfg.path or cfg.hub_id, cfg.dtype)
    return prepare(model, cfg, log), tok


def random_from_arch(cfg, log=print):
    import torch
    from omegaconf import OmegaConf
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    arch = OmegaConf.to_container(cfg.arch, resolve=True)
    model_type = arch.pop("model_type")
    if arch.get("head_dim") is None:
        arch.pop("head_dim", None)
    rope_theta = arch.pop("rope_theta", None)
    try:
        tok = AutoTokenizer.from_pretrained(cfg.path or cfg.hub_id, padding_side="left")
    except (OSError, ValueError):
        from rlx.data.arithmetic import ArithmeticTask
        from rlx.models.tiny import build_tokenizer

        log(f"[rlx] {cfg.hub_id} tokenizer not reachable: using the embedded tokenizer (init=random is for throughput)")
        tok = build_tokenizer(ArithmeticTask(eval_size=10, dev_size=10).corpus(), 300)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    conf = AutoConfig.for_model(model_type, **arch, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    if rope_theta is not None:
        conf.rope_parameters = {"rope_type": "default", "rope_theta": rope_theta}
    model = AutoModelForCausalLM.from_config(conf, dtype=getattr(torch, cfg.dtype))
    model.generation_config = GenerationConfig(pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    return model, tok
