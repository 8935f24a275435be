"""Load policies (and reference copies): the embedded tiny model and hub checkpoints share one path."""

from __future__ import annotations

from rlx.registry import MODELS


def _load_pretrained(path, dtype: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    tok = AutoTokenizer.from_pretrained(path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, tok


@MODELS.register("embedded")
def load_embedded(cfg, log=print):
    """(model, tokenizer) of the embedded model; ``model.path`` overrides the cached build."""
    from rlx.models.tiny import ensure_tiny

    path = cfg.path or ensure_tiny(cfg, log=log)
    return _load_pretrained(path, cfg.dtype)


@MODELS.register("hub")
def load_hub(cfg, log=print):
    """(model, tokenizer) from a hub id or local dir (``model.path`` wins over ``model.hub_id``)."""
    return _load_pretrained(cfg.path or cfg.hub_id, cfg.dtype)
