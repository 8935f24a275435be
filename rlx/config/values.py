"""Value checks of a composed config (ranges, choices, batch units, algorithm options): the part of
``rlx.config``'s validation that reads values rather than keys. ``ConfigError`` lives here so both
modules raise the same error; ``rlx.config`` re-exports it."""

from __future__ import annotations

import re

from omegaconf import DictConfig, OmegaConf

from rlx.config.choices import (
    AGG_MODES,
    CLIP_MODES,
    DTYPES,
    IS_CORRECTIONS,
    KL_ESTIMATORS,
    KL_ESTIMATORS_ALL,
    SCHEDULES,
)
from rlx.registry import closest


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
    if "eps_low" in a and "eps_high" in a:
        _need(a.eps_low >= 0, f"algo.eps_low={a.eps_low}: must be >= 0")
        _need(a.eps_high >= a.eps_low,
              f"algo.eps_high={a.eps_high}: must be >= algo.eps_low={a.eps_low} (clip-higher, DAPO)")
    if "beta" in a:
        _need(a.beta >= 0, f"algo.beta={a.beta}: must be >= 0")
    if "kl_estimator" in a:
        _choice("algo.kl_estimator", a.kl_estimator, KL_ESTIMATORS_ALL)
    _check_policy_options(cfg)
    if "kl_coef" in a:  # KL inside the reward (rlx.algos.kl_control)
        _need(a.kl_coef >= 0, f"algo.kl_coef={a.kl_coef}: must be >= 0")
        _choice("algo.kl_penalty", a.kl_penalty, KL_ESTIMATORS)
        _need(not a.adaptive_kl or (a.kl_target > 0 and a.kl_horizon > 0),
              f"algo.adaptive_kl=true needs algo.kl_target > 0 and algo.kl_horizon > 0 "
              f"(got {a.kl_target}, {a.kl_horizon})")
    if "loss_agg_mode" in a:
        _choice("algo.loss_agg_mode", a.loss_agg_mode, AGG_MODES)
    if "group_size" in a:
        _need(a.group_size >= a.get("min_group_size", 2),
              f"algo.group_size={a.group_size}: {a.name} needs at least {a.get('min_group_size', 2)} samples per prompt")
        _check_batch_units(cfg)
    _check_preference(cfg)


def _check_preference(cfg: DictConfig) -> None:
    """Keys of the offline preference algorithms (rlx/algos/dpo.py ... rrhf.py) and preference data."""
    a, d = cfg.algo, cfg.data
    if "label_smoothing" in a:
        _need(0 <= a.label_smoothing < 0.5, f"algo.label_smoothing={a.label_smoothing}: must be in [0, 0.5) "
              "(the probability that a pair's label is flipped; 0.5 carries no preference)")
    if "tau" in a:
        _need(a.tau > 0, f"algo.tau={a.tau}: must be > 0 (IPO's target margin is 1/(2 tau))")
    for key in ("gamma", "lam", "lambda_d", "lambda_u", "alpha", "sft_weight"):
        if isinstance(a.get(key), (int, float)):
            _need(a[key] >= 0, f"algo.{key}={a[key]}: must be >= 0")
    if "responses_per_prompt" in d:
        _need(2 <= d.responses_per_prompt <= 4, f"data.responses_per_prompt={d.responses_per_prompt}: must be in "
              "[2, 4] (one response per score level of the hidden rule)")
    for key, valid in (("bad_rows", ("error", "drop")), ("long_prompts", ("error", "drop", "truncate")),
                       ("wrong_answers", ("random", "near"))):
        if key in d:
            _choice(f"data.{key}", d[key], valid)


def _check_policy_options(cfg: DictConfig) -> None:
    """Shared loss options (entropy bonus, dual-clip, clip mode) and DAPO's sampling/shaping keys."""
    a = cfg.algo
    if "entropy_coef" in a:
        _need(a.entropy_coef >= 0, f"algo.entropy_coef={a.entropy_coef}: must be >= 0")
    if a.get("clip_ratio_c") is not None:
        _need(a.clip_ratio_c > 1, f"algo.clip_ratio_c={a.clip_ratio_c}: must be > 1 (dual-clip), or null for off")
    if "clip_mode" in a:
        _choice("algo.clip_mode", a.clip_mode, CLIP_MODES)
    if "eps_high_is" in a:
        _need(a.eps_high_is >= 0 and 0 <= a.eps_low_is <= 1,
              f"algo.eps_low_is={a.eps_low_is}, algo.eps_high_is={a.eps_high_is}: need 0 <= eps_low_is <= 1 "
              f"and eps_high_is >= 0")
    if "max_gen_rounds" in a:
        _need(a.max_gen_rounds >= 1, f"algo.max_gen_rounds={a.max_gen_rounds}: must be >= 1")
    if "overlong_buffer_len" in a:
        L = cfg.rollout.max_new_tokens
        _need(1 <= a.overlong_buffer_len < L,
              f"algo.overlong_buffer_len={a.overlong_buffer_len}: must be in [1, rollout.max_new_tokens={L}) "
              f"(L_max - L_cache is the length that goes unpunished)")


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
    if hw.get("num_threads") is not None:
        _need(hw.num_threads >= 1, f"hardware.num_threads={hw.num_threads}: must be >= 1, or null (torch's default)")
    if "std_eps" in cfg.algo:
        _need(cfg.algo.std_eps >= 0, f"algo.std_eps={cfg.algo.std_eps}: must be >= 0")
    for node, key, low in ((cfg.data, "eval_size", 0), (cfg.data, "dev_size", 0), (cfg.data, "prompts_per_step", 1),
                           (cfg.algo, "batch_size", 1)):
        if isinstance(node.get(key), int):
            _need(node[key] >= low, f"{'data' if node is cfg.data else 'algo'}.{key}={node[key]}: must be >= {low}")


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


def check_correction_support(cfg: DictConfig) -> None:
    """rollout.is_correction needs an online algorithm whose loss takes per-token weights (``takes_is_weights``);
    builds the algorithm, so it runs with ``check_names``, after the light checks."""
    name = cfg.rollout.get("is_correction", "none")
    if name == "none" or cfg.get("pipeline"):
        return
    from rlx.catalogue import build

    algo = build("algo", cfg.algo)
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
