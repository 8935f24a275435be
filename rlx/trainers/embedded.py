"""The embedded model's build: the tokenizer and ~1M-parameter Qwen3 of ``rlx/models/tiny.py``, warm-started
by rlx's own SFT (``trainers/sft.warm_start``) on first use and cached under ``$RLX_CACHE``. The model
source ``embedded`` is registered here, above the models layer, because building it trains."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from rlx.data.arithmetic import ArithmeticTask
from rlx.models import load_pretrained, prepare
from rlx.models.tiny import _lock, build_model, build_tokenizer, cache_root, recipe_hash
from rlx.registry import MODELS
from rlx.trainers.sft import warm_start


def ensure_tiny(cfg, log=print) -> Path:
    """Directory of the embedded model for this recipe, building it if it is not cached."""
    import torch

    out = cache_root() / f"tiny-{recipe_hash(cfg)}"
    if (out / "rlx_build.json").exists():
        return out
    # The build seeds and draws from torch's global generator; fork_rng restores the caller's state after it,
    # so a run that builds the model (cold cache) samples exactly as one that loads it (warm cache).
    with _lock(cache_root() / f".tiny-{recipe_hash(cfg)}.lock"), torch.random.fork_rng(devices=[]):
        if (out / "rlx_build.json").exists():
            return out
        t0 = time.perf_counter()
        w = cfg.warm_start
        task = ArithmeticTask(ops=w.task.ops, max_operand=w.task.max_operand, seed=w.task.seed)
        tok = build_tokenizer(task.corpus(), cfg.vocab_size)
        model = build_model(cfg, tok)
        info = {"params": sum(p.numel() for p in model.parameters()), "recipe": recipe_hash(cfg)}
        if cfg.init == "pretrained":
            log(f"[rlx] building the embedded model (first use): SFT warm start to dev accuracy {w.dev_target}")
            info.update(warm_start(model, tok, task, w, log=log))
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        info["build_s"] = round(time.perf_counter() - t0, 2)
        (tmp / "rlx_build.json").write_text(json.dumps(info, indent=1))
        os.replace(tmp, out)
        log(f"[rlx] embedded model cached at {out} ({info['params']:,} params, {info['build_s']} s)")
    return out


@MODELS.register("embedded")
def load_embedded(cfg, log=print):
    """(model, tokenizer) of the embedded model; ``model.path`` overrides the cached build."""
    path = cfg.path or ensure_tiny(cfg, log=log)
    model, tok = load_pretrained(path, cfg.dtype)
    return prepare(model, cfg, log), tok
