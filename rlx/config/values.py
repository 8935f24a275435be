"""Value checks of a composed config (ranges, choices, batch units, algorithm options): the part of
``rlx.config``'s validation that reads values rather than keys. ``ConfigError`` lives here so both
modules raise the same error; ``rlx.config`` re-exports it."""

from __future__ import annotations

import re

from omegaconf import DictConfig, OmegaConf

from rlx.config.choices import (
    COMPILE_BACKENDS,
    DTYPES,
    IS_CORRECTIONS,
    SCHEDULES,
)
from rlx.registry import REWARDS, closest


class ConfigError(ValueError):
    """A config that cannot run. The first line names the key and the closest valid choice."""


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _choice(key: str, value, valid) -> None:
    """``key`` must be one of ``valid`` (rlx.config.choices: no heavy imports before the config is checked)."""
    if value not in valid:
        hint = closest(str(value), valid)
        did = f"; did you mean '{hint}'?" if hint else ""
        raise ConfigError(f"{key}={value!r}: not a valid choice{did} (valid: {', '.join(valid)})")


def _check_ranges(cfg: DictConfig) -> None:
    t, a = cfg.trainer, cfg.algo
    _need(t.steps >= 1, f"trainer.steps={t.steps}: must be >= 1")
    _need(t.lr > 0, f"trainer.lr={t.lr}: must be > 0")
    _need(t.update_epochs >= 1, f"trainer.update_epochs={t.update_epochs}: must be >= 1")
    _need(t.eval_every >= 0, f"trainer.eval_every={t.eval_every}: must be >= 0 (0 = only at the ends)")
    _need(t.save_every >= 0, f"trainer.save_every={t.save_every}: must be >= 0 (0 = only on SIGTERM)")
    _choice("trainer.schedule", t.schedule, SCHEDULES)
    _need(cfg.rollout.max_new_tokens >= 1, f"rollout.max_new_tokens={cfg.rollout.max_new_tokens}: must be >= 1")
    _need(cfg.rollout.temperature > 0, f"rollout.temperature={cfg.rollout.temperature}: must be > 0")
    _need(0 < cfg.rollout.top_p <= 1, f"rollout.top_p={cfg.rollout.top_p}: must be in (0, 1]")
    _check_tracker(cfg)
    _check_env(cfg)
    if "group_size" in a:   # the algorithm checks its own minimum (rlx/algos: check_algorithm)
        _need(a.group_size >= 1, f"algo.group_size={a.group_size}: must be >= 1")
        _check_batch_units(cfg)
    _check_data_options(cfg)


def _check_data_options(cfg: DictConfig) -> None:
    """Choices and ranges of the data group's options (preference data, bad rows, long prompts)."""
    d = cfg.data
    if "responses_per_prompt" in d:
        _need(2 <= d.responses_per_prompt <= 4, f"data.responses_per_prompt={d.responses_per_prompt}: must be in "
              "[2, 4] (one response per score level of the hidden rule)")
    for key, valid in (("bad_rows", ("error", "drop")), ("long_prompts", ("error", "drop", "truncate")),
                       ("wrong_answers", ("random", "near"))):
        if key in d:
            _choice(f"data.{key}", d[key], valid)


def _check_batch_units(cfg: DictConfig) -> None:
    t = cfg.trainer
    n = cfg.data.prompts_per_step * cfg.algo.group_size
    mini = t.mini_batch_size or n
    micro = t.micro_batch_size or mini
    _need(cfg.data.prompts_per_step >= 1, f"data.prompts_per_step={cfg.data.prompts_per_step}: must be >= 1")
    near = sorted((d for d in range(1, n + 1) if n % d == 0), key=lambda d: (abs(d - mini), d))[:1] if n > 0 else []
    _need(mini >= n or n % mini == 0, f"trainer.mini_batch_size={mini}: must divide N = data.prompts_per_step*algo.group_size = "
                         f"{n}" + (f"; the closest that does is {near[0]}" if near else ""))
    _need(micro >= 1 and (mini % micro == 0 or micro > mini),
          f"trainer.micro_batch_size={micro}: must divide trainer.mini_batch_size={mini}")


def _check_values(cfg: DictConfig) -> None:
    """Ranges and choices of the keys every run has (trainer, rollout, model, hardware, sizes)."""
    t, r, hw = cfg.trainer, cfg.rollout, cfg.hardware
    _need(t.grad_clip >= 0, f"trainer.grad_clip={t.grad_clip}: must be >= 0 (0 = off)")
    _need(t.weight_decay >= 0, f"trainer.weight_decay={t.weight_decay}: must be >= 0")
    _need(len(t.betas) == 2 and all(0 <= b < 1 for b in t.betas),
          f"trainer.betas={list(t.betas)}: must be two values in [0, 1) (AdamW beta1, beta2)")
    _need(t.warmup_steps >= 0, f"trainer.warmup_steps={t.warmup_steps}: must be >= 0")
    _need(t.keep_checkpoints >= 1, f"trainer.keep_checkpoints={t.keep_checkpoints}: must be >= 1 (resume needs one)")
    _need(t.max_bad_steps >= 1, f"trainer.max_bad_steps={t.max_bad_steps}: must be >= 1")
    for k in ("mini_batch_size", "micro_batch_size"):
        _need(t[k] is None or t[k] >= 1, f"trainer.{k}={t[k]}: must be >= 1, or null (the whole batch)")
    _need(r.top_k >= 0, f"rollout.top_k={r.top_k}: must be >= 0 (0 = off)")
    _check_correction(r)
    if "dtype" in cfg.model:
        _choice("model.dtype", cfg.model.dtype, DTYPES)
    dev = str(hw.device)
    if not re.fullmatch(r"cpu|mps|(cuda|xpu)(:\d+)?", dev):
        hint = closest(dev, ("cpu", "cuda", "mps"))
        raise ConfigError(f"hardware.device={dev!r}: not a torch device" + (f"; did you mean '{hint}'?" if hint else "")
                          + " (valid: cpu, cuda, cuda:<i>, mps, xpu)")
    if hw.get("compile_backend") is not None:   # rlx/models/compiled.py (torch is not imported here)
        _choice("hardware.compile_backend", hw.compile_backend, COMPILE_BACKENDS)
    if hw.get("num_threads") is not None:
        _need(hw.num_threads >= 1, f"hardware.num_threads={hw.num_threads}: must be >= 1, or null (torch's default)")
    for key, low in (("eval_size", 0), ("dev_size", 0), ("prompts_per_step", 1)):
        if isinstance(cfg.data.get(key), int):
            _need(cfg.data[key] >= low, f"data.{key}={cfg.data[key]}: must be >= {low}")


def _check_correction(r: DictConfig) -> None:
    """rollout.engine_logprobs / is_correction / is_cap (rlx/rollout/correction.py)."""
    record, name, cap = r.get("engine_logprobs"), r.get("is_correction", "none"), r.get("is_cap", 2.0)
    _need(record is None or isinstance(record, bool),
          f"rollout.engine_logprobs={record!r}: must be null (auto), true or false")
    _choice("rollout.is_correction", name, IS_CORRECTIONS)
    _need(cap >= 1, f"rollout.is_cap={cap}: must be >= 1 (a cap below 1 would shrink every token's weight)")
    _need(name == "none" or record is not False,
          f"rollout.is_correction={name} needs the engine's log-probs: set rollout.engine_logprobs=null (auto) "
          f"or true, not false")


def _check_env(cfg: DictConfig) -> None:
    """env.* limits (rlx/envs); a multi-turn env needs an engine that generates from token ids (and an online
    algorithm: check_algorithm)."""
    e = cfg.get("env")
    if e is None:
        return
    _need(e.max_turns >= 1, f"env.max_turns={e.max_turns}: must be >= 1")
    _need(e.max_context_tokens >= 2, f"env.max_context_tokens={e.max_context_tokens}: must be >= 2")
    _need(e.tool_timeout_s > 0, f"env.tool_timeout_s={e.tool_timeout_s}: must be > 0")
    if e.name == "single":
        _need(e.max_turns == 1, f"env.max_turns={e.max_turns}: env=single has one turn; choose a multi-turn env "
              "(env=calculator|retry|guess)")
        return
    _need(cfg.rollout.engine == "hf", f"rollout.engine={cfg.rollout.engine}: env={e.name} takes several turns and "
          "needs rollout.engine=hf (generation from token ids)")


def check_algorithm(cfg: DictConfig):
    """Build the algorithm, which checks its own keys and values (rlx/algos/base.py), then its checks against the
    other groups, and the rollout correction it must take. Returns the algorithm; raises ``ConfigError``. Imports the
    algorithms (torch), so it runs after the light checks."""
    from rlx.catalogue import build

    algo = build("algo", cfg.algo)   # raises ConfigError naming the key
    algo.check_config(cfg)
    env = cfg.get("env")
    _need(env is None or env.name == "single" or algo.trainer == "online",
          f"env={env.name if env else ''}: algo={cfg.algo.name} does not roll out (trainer '{algo.trainer}'); a "
          "multi-turn env needs an online algorithm (algo=grpo, gigpo, ...)")
    _check_correction_support(cfg, algo)
    _check_token_rewards(cfg, algo)
    return algo


def _check_token_rewards(cfg: DictConfig, algo) -> None:
    """A token-level reward term (``reward=prm``; rlx/rewards/composite.py) needs an online algorithm that adds
    per-token rewards to its token rewards (``takes_token_rewards``: PPO, REINFORCE++), on single-turn rollouts
    (its rewards are laid on the completion's own tokens). Trainers that do not train on the reward (offline, sft,
    rm, prm) only evaluate with it and are not checked. ``REWARDS`` is filled: check_algorithm runs after the
    components load."""
    if algo.trainer != "online":
        return
    for name, term in (cfg.reward.get("terms") or {}).items():
        fn = term.get("fn") if isinstance(term, DictConfig) else None
        if not (fn in REWARDS.names() and getattr(REWARDS.get(fn), "token_level", False)):
            continue
        _need(algo.takes_token_rewards, f"reward.terms.{name}: fn={fn} gives per-token rewards (a reward at "
              f"each reasoning step), which algo={cfg.algo.name} cannot use (it takes one reward per response); use "
              f"algo=ppo or algo=reinforce_pp, or a reward without this term")
        env = cfg.get("env")
        _need(env is None or env.name == "single", f"reward.terms.{name}: fn={fn} gives per-token rewards "
              f"on a single completion; env={env.name if env else ''} takes several turns (use env=single)")


def _check_correction_support(cfg: DictConfig, algo) -> None:
    """rollout.is_correction needs an online algorithm whose loss takes per-token weights (``takes_is_weights``)."""
    name = cfg.rollout.get("is_correction", "none")
    if name == "none" or cfg.get("pipeline"):
        return
    _need(algo.trainer == "online", f"rollout.is_correction={name}: algo={cfg.algo.name} trains offline "
          f"(trainer '{algo.trainer}', no rollouts to correct); use rollout.is_correction=none")
    _need(algo.takes_is_weights, f"rollout.is_correction={name}: algo={cfg.algo.name} has one importance ratio "
          f"or weight per response, no per-token policy-gradient term to reweight; use rollout.is_correction=none "
          f"(rollout/logp_diff is still logged with rollout.engine_logprobs=true)")


def _check_tracker(cfg: DictConfig) -> None:
    """A credential in a tracking URI would land in .hydra/overrides.yaml and the logs: refuse it."""
    uri = OmegaConf.select(cfg, "tracker.mlflow.tracking_uri")
    _need(not (isinstance(uri, str) and re.search(r"://[^/@\s]+@", uri)),
          "tracker.mlflow.tracking_uri: holds credentials (user:secret@host); give them as MLFLOW_TRACKING_TOKEN "
          "or MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD in the environment instead")
