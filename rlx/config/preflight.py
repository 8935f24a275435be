"""Pre-flight checks of a valid config, before any model or data loads and before a run dir exists:
files and paths exist, custom reward functions import, the device is in this torch build, the model
fits (a memory plan the caller passes in: ``rlx.models.memory.plan_check``) and a hub model is cached
or the hub answers within ``HUB_TIMEOUT_S``.

Exit codes of ``python -m rlx`` (the one place they are defined; docs/errors.md):

  0  the run finished (a multirun: every job)
  1  an unexpected error: a bug, with its traceback
  2  config or pre-flight error: unknown key or choice, wrong type or range, missing data/reward file,
     a reward function that does not import, a resume that cannot resume
  3  training stopped: too many non-finite steps in a row (trainer.max_bad_steps)
  4  model not available: a hub model neither cached nor downloadable (offline, or the hub does not
     answer), or a model.path that does not exist
  5  this machine cannot run it: the device is not in this torch build, or the model does not fit

Every failure prints one ``rlx: ...`` line with a hint; ``RLX_DEBUG=1`` re-raises it with its traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from omegaconf import DictConfig

from rlx.runtime.user_code import load_module

EXIT_OK, EXIT_BUG, EXIT_CONFIG, EXIT_NONFINITE, EXIT_MODEL, EXIT_MACHINE = 0, 1, 2, 3, 4, 5
HUB_TIMEOUT_S = 3.0
FILE_SUFFIXES = (".jsonl", ".json", ".gz", ".parquet", ".csv", ".txt", ".arrow")
_HUB_OK: set = set()   # hub ids already found cached or reachable in this process


class PreflightError(Exception):
    """A run that cannot start; ``code`` is its exit status, ``hint`` what to do."""

    def __init__(self, what: str, hint: str = "", code: int = EXIT_CONFIG):
        super().__init__(what)
        self.what, self.hint, self.code = what, hint, code

    def line(self) -> str:
        return f"rlx: {self.what}" + (f"; hint: {self.hint}" if self.hint else "")


def preflight(cfg: DictConfig, memory=None) -> None:
    """Raise ``PreflightError`` for the first thing that would stop the run after it started loading.
    ``memory(cfg)`` (optional) raises on a model that cannot fit. A pipeline (experiment=rlhf_pipeline) fills
    model.path / reward.path per stage from earlier stages: each stage's ``rlx.run`` checks its own."""
    if cfg.get("pipeline"):
        return check_device(cfg)
    check_paths(cfg)
    check_rewards(cfg)
    check_device(cfg)
    check_launch(cfg)
    if memory is not None:
        try:
            memory(cfg)
        except RuntimeError as e:   # rlx.models.memory.MemoryPlanError
            raise PreflightError(f"model too big: {str(e).split('. Try')[0]}",
                                 "model.lora.rank=16, model.gradient_checkpointing=true, a smaller "
                                 "trainer.micro_batch_size, or hardware=fsdp", EXIT_MACHINE) from None
    check_model(cfg)


def check_launch(cfg: DictConfig, env=os.environ) -> None:
    """hardware=ddp|fsdp runs under torchrun (it sets WORLD_SIZE), and sharded rollouts give every rank the same
    number of whole prompts: data.prompts_per_step divisible by the world size."""
    strategy = cfg.hardware.get("strategy", "none")
    if strategy in ("ddp", "fsdp") and "WORLD_SIZE" not in env:
        raise PreflightError(f"hardware={cfg.hardware.get('name', strategy)} (hardware.strategy={strategy}) was started "
                             "without torchrun: there is one process and no rank to share the work with",
                             f"torchrun --nproc_per_node 2 -m rlx hardware={strategy} ...; or hardware=cpu for "
                             "one process")
    world = int(env.get("WORLD_SIZE", "1"))
    B = cfg.data.get("prompts_per_step")
    if world > 1 and cfg.rollout.get("shard", True) and isinstance(B, int) and B % world:
        raise PreflightError(f"data.prompts_per_step={B} is not divisible by the world size {world} (WORLD_SIZE): "
                             "sharded rollouts give every rank B/world whole prompts",
                             f"data.prompts_per_step={B + world - B % world} (a multiple of {world}), or "
                             "rollout.shard=false")


def _looks_local(p: str) -> bool:
    return p.startswith(("/", "./", "../", "~")) or p.endswith(FILE_SUFFIXES)


def check_paths(cfg: DictConfig) -> None:
    d = cfg.data
    if "path" in d and d.path is None and d.get("name") in ("jsonl", "preference", "step_pairs", "prm_steps"):
        raise PreflightError(f"data.path: data={d.name} needs a file (none given)",
                             f"data.path=<file.jsonl> (or a dataset id); see conf/data/{d.name}.yaml")
    for key in ("path", "eval_path"):
        p = d.get(key)
        if isinstance(p, str) and not Path(p).expanduser().exists() and _looks_local(p):
            raise PreflightError(f"data.{key}={p}: no such file", f"check the path (relative to {os.getcwd()})")
    r = cfg.reward
    trained_by = "algo=prm" if r.get("name") == "prm" else "algo=rm"   # reward=prm reads a process reward model
    if "path" in r and r.get("name") in ("rm", "rm_arithmetic_pref", "prm") and r.path is None:
        raise PreflightError(f"reward.path: reward={r.name} needs the directory of a reward model (none given)",
                             f"reward.path=<an {trained_by} run dir>")
    if isinstance(r.get("path"), str) and not Path(r.path).expanduser().exists():
        raise PreflightError(f"reward.path={r.path}: no such directory", f"reward.path=<an {trained_by} run dir>")
    mp = cfg.model.get("path")
    if isinstance(mp, str) and not Path(mp).expanduser().exists():
        raise PreflightError(f"model.path={mp}: no such directory", "model.path=<a from_pretrained dir>, or null "
                             "for the preset's hub id / embedded model", EXIT_MODEL)


def check_rewards(cfg: DictConfig) -> None:
    """Every ``fn: python`` term's function imports and is callable (rlx/rewards/python.py's path forms)."""
    for name, term in (cfg.reward.get("terms") or {}).items():
        if not (isinstance(term, DictConfig) and term.get("fn") == "python"):
            continue
        path, key = term.get("function"), ("reward.fn" if cfg.reward.get("fn") == term.get("function")
                                           else f"reward.terms.{name}.function")
        hint = "reward.fn=my_pkg.rewards:score or reward.fn=path/to/file.py:score"
        if not path or not isinstance(path, str):
            raise PreflightError(f"{key}: not set (reward term '{name}' loads a Python function)", hint)
        try:
            module, module_path, attr = load_module(path)
        except ValueError as e:
            raise PreflightError(f"{key}={path}: {e}", hint) from None
        if not callable(getattr(module, attr, None)):
            names = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
            from rlx.registry import closest

            near = closest(attr, names)
            raise PreflightError(f"{key}={path}: '{module_path}' has no callable '{attr}'"
                                 + (f"; did you mean '{near}'?" if near else ""),
                                 f"callables there: {', '.join(names[:8]) or 'none'}")


def check_device(cfg: DictConfig) -> None:
    hw = cfg.hardware
    dev, backend = str(hw.device), hw.get("backend")
    if dev == "cpu" and backend != "nccl":
        return
    import torch

    if (dev.startswith("cuda") or backend == "nccl") and not torch.cuda.is_available():
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise PreflightError(f"hardware={hw.name}: hardware.device={dev}"
                             + (f", hardware.backend={backend}" if backend == "nccl" else "")
                             + f" needs a CUDA GPU, but {why} (torch {torch.__version__})",
                             "hardware=cpu (or ddp/fsdp with hardware.device=cpu hardware.backend=gloo), or a CUDA "
                             "build of torch on a GPU machine", EXIT_MACHINE)
    if dev.startswith("cuda:") and int(dev.split(":")[1]) >= torch.cuda.device_count():
        raise PreflightError(f"hardware.device={dev}: only {torch.cuda.device_count()} CUDA device(s) visible",
                             "hardware.device=cuda", EXIT_MACHINE)
    if dev == "mps" and not torch.backends.mps.is_available():
        raise PreflightError("hardware.device=mps: MPS is not available here", "hardware.device=cpu", EXIT_MACHINE)


def check_model(cfg: DictConfig) -> None:
    """A hub model (``model.source=hub``, init=pretrained, no model.path) is cached, or the hub answers."""
    m = cfg.model
    if m.get("source") != "hub" or m.get("init") != "pretrained" or m.get("path") or not m.get("hub_id"):
        return
    hub_id = str(m.hub_id)
    if hub_id in _HUB_OK or hub_cached(hub_id):
        _HUB_OK.add(hub_id)
        return
    hint = (f"pre-download it with `huggingface-cli download {hub_id}` (then HF_HUB_OFFLINE=1 works), or set "
            f"model.path=<a local from_pretrained dir>")
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise PreflightError(f"model={m.name}: {hub_id} is not in the local hub cache ({constants.HF_HUB_CACHE}) "
                             "and HF_HUB_OFFLINE=1", hint, EXIT_MODEL)
    from huggingface_hub import HfApi

    try:
        HfApi().model_info(hub_id, timeout=HUB_TIMEOUT_S)
    except Exception as e:  # noqa: BLE001 - offline, DNS, timeout, 401/404: all mean "cannot download"
        raise PreflightError(f"model={m.name}: {hub_id} is not cached and the hub did not answer within "
                             f"{HUB_TIMEOUT_S:g} s ({type(e).__name__}: {str(e).splitlines()[0][:120]})",
                             hint, EXIT_MODEL) from None
    _HUB_OK.add(hub_id)


def hub_cached(hub_id: str) -> bool:
    """config.json and weights (one file or a sharded index) of ``hub_id`` in the local hub cache."""
    from huggingface_hub import try_to_load_from_cache

    def has(f):
        return isinstance(try_to_load_from_cache(hub_id, f), str)

    return has("config.json") and any(has(f) for f in ("model.safetensors", "model.safetensors.index.json",
                                                       "pytorch_model.bin", "pytorch_model.bin.index.json"))


def report(err: PreflightError) -> int:
    """Print ``err``'s line (or re-raise it with RLX_DEBUG=1); returns its exit code."""
    if os.environ.get("RLX_DEBUG") == "1":
        raise err
    print(err.line(), file=sys.stderr)
    return err.code
