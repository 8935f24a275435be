"""The embedded model's build: the tokenizer and ~1M-parameter Qwen3 of ``rlx/models/tiny.py``, warm-started
by rlx's own SFT (``trainers/sft.warm_start``) on first use and cached under ``$RLX_CACHE``. The model
source ``embedded`` is registered here, above the models layer, because building it trains."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from omegaconf import OmegaConf

from rlx.data.arithmetic import ArithmeticTask
from rlx.models import load_pretrained, prepare
from rlx.models.tiny import _lock, build_model, build_tokenizer, cache_root, recipe_hash
from rlx.registry import DATA, ENVS, MODELS
from rlx.runtime.run_dir import is_main_rank
from rlx.trainers.sft import env_warm_start, warm_start


def warm_task(env_cfg, data_cfg) -> dict | None:
    """The warm-start task, part of the cache key: a multi-turn env's (its name, warm-start settings and demo keys,
    and the data set it draws records from), or a data set's with its own ``warm_start`` node (data=sums); None
    otherwise (the embedded arithmetic build of ``model.warm_start``)."""
    data = None if data_cfg is None else {k: v for k, v in OmegaConf.to_container(data_cfg, resolve=True).items()
                                          if k not in ("prompts_per_step", "eval_k")}
    if env_cfg is not None and ENVS.get(env_cfg.name)(env_cfg).multi_turn:
        env = ENVS.get(env_cfg.name)(env_cfg)
        return {"env": env_cfg.name, "warm_start": OmegaConf.to_container(env_cfg.warm_start, resolve=True),
                "demo_keys": {k: env_cfg[k] for k in env.demo_keys}, "data": data}
    if data is not None and data.get("warm_start") is not None:
        return {"data": data}
    return None


def ensure_tiny(cfg, log=print, env=None, data=None) -> Path:
    """Directory of the embedded model for this recipe, building it if it is not cached. With a multi-turn
    ``env`` (and its ``data`` node) the build learns that env's format from its demonstrations (env_warm_start).
    A data node with ``warm_start_data`` (data=sums_steps) uses the build of that data node instead (the same model
    and cache entry as a run on that data set)."""
    import torch

    if data is not None and data.get("warm_start_data") is not None:   # a data set that borrows another's build
        data = data.warm_start_data
    task = warm_task(env, data)
    key = recipe_hash(cfg, task)
    out = cache_root() / f"tiny-{key}"
    if _cached(out):
        return out
    if not is_main_rank():   # under torchrun rank 0 builds: transformers' save_pretrained writes nothing on the others
        return _wait_for_build(out, log)
    # The build seeds and draws from torch's global generator; fork_rng restores the caller's state after it,
    # so a run that builds the model (cold cache) samples exactly as one that loads it (warm cache).
    with _lock(cache_root() / f".tiny-{key}.lock"), torch.random.fork_rng(devices=[]):
        if _cached(out):
            return out
        t0 = time.perf_counter()
        if task is None:
            model, tok, info = _build_arithmetic(cfg, log)
        elif "env" in task:
            model, tok, info = _build_for_env(cfg, env, data, log)
        else:
            model, tok, info = _build_for_data(cfg, data, log)
        _save(model, tok, out, {"params": sum(p.numel() for p in model.parameters()), "recipe": key, **info}, t0,
              log)
    return out


def _cached(out: Path) -> bool:
    """A complete build: its record and its weights (an entry without weights, as a non-zero rank once wrote, is
    built again)."""
    return (out / "rlx_build.json").exists() and (out / "config.json").exists()


def _wait_for_build(out: Path, log, timeout_s: float = 3600.0, poll_s: float = 1.0) -> Path:
    """``out`` once rank 0 has cached it (its ``rlx_build.json`` is written last, then the directory renamed)."""
    log(f"[rlx] waiting for rank 0 to build the embedded model at {out}")
    t0 = time.monotonic()
    while not _cached(out):
        if time.monotonic() - t0 > timeout_s:
            raise TimeoutError(f"rank 0 did not cache the embedded model at {out} within {timeout_s:.0f} s")
        time.sleep(poll_s)
    return out


def _build_arithmetic(cfg, log):
    w = cfg.warm_start
    task = ArithmeticTask(ops=w.task.ops, max_operand=w.task.max_operand, seed=w.task.seed)
    tok = build_tokenizer(task.corpus(), cfg.vocab_size)
    model = build_model(cfg, tok)
    if cfg.init != "pretrained":
        return model, tok, {}
    log(f"[rlx] building the embedded model (first use): SFT warm start to dev accuracy {w.dev_target}")
    return model, tok, warm_start(model, tok, task, w, log=log)


def _build_for_data(cfg, data_cfg, log):
    task = DATA.get(data_cfg.name)(data_cfg)
    tok = build_tokenizer(task.corpus(), cfg.vocab_size)
    model = build_model(cfg, tok)
    if cfg.init != "pretrained":
        return model, tok, {"data": data_cfg.name}
    w = OmegaConf.merge(OmegaConf.to_container(cfg.warm_start, resolve=True),
                        OmegaConf.to_container(data_cfg.warm_start, resolve=True))
    log(f"[rlx] building the embedded model for data={data_cfg.name} (first use): SFT on its worked solutions to "
        f"dev accuracy {w.dev_target}")
    return model, tok, {"data": data_cfg.name, **warm_start(model, tok, task, w, log=log)}


def _build_for_env(cfg, env_cfg, data_cfg, log):
    data, env = DATA.get(data_cfg.name)(data_cfg), ENVS.get(env_cfg.name)(env_cfg)
    corpus = data.corpus() + [r["prompt"] + "".join(seg[0] for seg in env.demo(r))
                              for r in data.train_batch(10**7, 2000)] + env.corpus_extra()
    tok = build_tokenizer(corpus, cfg.vocab_size)
    model = build_model(cfg, tok)
    if cfg.init != "pretrained":
        return model, tok, {"env": env_cfg.name}
    w = OmegaConf.merge(OmegaConf.to_container(cfg.warm_start, resolve=True),
                        OmegaConf.to_container(env_cfg.warm_start, resolve=True))
    until = f"{w.max_steps} steps" if w.dev_target is None else f"dev accuracy {w.dev_target}"
    log(f"[rlx] building the embedded model for env={env_cfg.name} (first use): SFT on its demonstrations for {until}")
    return model, tok, {"env": env_cfg.name, **env_warm_start(model, tok, data, env, w, log=log)}


def _save(model, tok, out: Path, info: dict, t0: float, log) -> None:
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    info["build_s"] = round(time.perf_counter() - t0, 2)
    (tmp / "rlx_build.json").write_text(json.dumps(info, indent=1))
    shutil.rmtree(out, ignore_errors=True)   # an incomplete entry (no weights) is replaced
    os.replace(tmp, out)
    log(f"[rlx] embedded model cached at {out} ({info['params']:,} params, {info['build_s']} s)")


@MODELS.register("embedded")
def load_embedded(cfg, log=print, env=None, data=None):
    """(model, tokenizer) of the embedded model; ``model.path`` overrides the cached build. A multi-turn ``env``
    (with its ``data`` node) selects the build warm-started on that env's demonstrations."""
    path = cfg.path or ensure_tiny(cfg, log=log, env=env, data=data)
    model, tok = load_pretrained(path, cfg.dtype)
    return prepare(model, cfg, log), tok
