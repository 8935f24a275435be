"""Compose and check configs before anything heavy is imported or loaded.

``compose(overrides)`` is the public API path (same files as the CLI). ``check_cli(argv)`` runs
before Hydra's own app: it validates every group choice and key of every job a command would
launch, and raises ``ConfigError`` (exit status 2 in ``__main__``) whose first line names the key
and the closest valid choice.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from rlx.registry import closest

CONF_DIR = (Path(__file__).resolve().parent.parent / "conf").resolve()
GROUPS = ("algo", "model", "reward", "data", "hardware", "tracker", "experiment")


class ConfigError(ValueError):
    """A config that cannot run. The first line names the key and the closest valid choice."""


def group_choices(group: str, conf_dir: Path = CONF_DIR) -> list[str]:
    return sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))


def compose(overrides=(), config_name: str = "config", config_dir: str | None = None) -> DictConfig:
    """The config ``python -m rlx <overrides>`` would run, checked (raises ``ConfigError``)."""
    overrides = list(overrides)
    _check_overrides(overrides)
    cfg = _compose_raw(overrides, config_name, config_dir)
    validate(cfg)
    return cfg


def _compose_raw(overrides, config_name="config", config_dir=None, hydra=False) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    primary = str(Path(config_dir).resolve()) if config_dir else str(CONF_DIR)
    extra = [] if not config_dir else [f"hydra.searchpath=[file://{CONF_DIR}]"]
    try:
        with initialize_config_dir(config_dir=primary, version_base="1.3"):
            return hydra_compose(config_name, overrides=extra + list(overrides), return_hydra_config=hydra)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(_explain(e, overrides)) from None


def _explain(err: Exception, overrides) -> str:
    """Turn Hydra/OmegaConf's composition error into one line with a suggestion."""
    msg = str(err)
    m = re.search(r"Key '([^']+)' is not in struct", msg) or re.search(r"Could not override '([^']+)'", msg)
    full = re.search(r"full_key: ([\w.\[\]]+)", msg)
    if m:
        key = full.group(1) if full else m.group(1)
        return _unknown_key_message(key, overrides) + f"\n(hydra: {msg.splitlines()[0]})"
    return msg.splitlines()[0] + ("\n" + "\n".join(msg.splitlines()[1:]) if "\n" in msg else "")


def _unknown_key_message(key: str, overrides) -> str:
    parent, _, leaf = key.rpartition(".")
    choices_overrides = [o for o in overrides if o.split("=")[0].lstrip("+~") in GROUPS]
    try:
        base = _compose_raw(choices_overrides)
        node = OmegaConf.select(base, parent) if parent else base
    except ConfigError:
        node = None
    valid = list(node.keys()) if isinstance(node, DictConfig) else []
    hint = closest(leaf, valid)
    did = f"; did you mean '{(parent + '.') if parent else ''}{hint}'?" if hint else ""
    return f"unknown config key '{key}'{did} (valid under '{parent or '<root>'}': {', '.join(map(str, valid))})"


def _check_overrides(overrides) -> None:
    """Group choices and '+' additions, checked before composing (clear errors, no Hydra trace)."""
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(f"override '{ov}' has no '=' (expected key=value, e.g. algo=grpo)")
        key, value = ov.split("=", 1)
        bare = key.lstrip("+~")
        if bare.startswith("hydra"):
            continue
        if bare in GROUPS:
            valid = group_choices(bare)
            for choice in _sweep_values(value):
                if choice not in valid and not (bare == "experiment" and choice == "null"):
                    hint = closest(choice, valid)
                    did = f"; did you mean '{hint}'?" if hint else ""
                    raise ConfigError(
                        f"{bare}={choice}: unknown choice for group '{bare}'{did} (valid: {', '.join(valid)})"
                    )
        elif key.startswith("+"):
            raise ConfigError(
                f"'{key}': '+' adds a key the rlx schema does not have; rlx configs are closed. "
                f"Set an existing key instead (drop the '+'), or add the key to conf/ with a comment."
            )


def _sweep_values(value: str) -> list[str]:
    v = value.strip()
    if v.startswith(("choice(", "range(", "interval(", "glob(", "tag(", "shuffle(", "sort(")):
        return []  # Hydra sweep functions: checked per job
    return [x.strip() for x in v.split(",")] if "," in v and not v.startswith("[") else [v]


def check_cli(argv) -> None:
    """Validate what ``python -m rlx argv`` would run, every job of a multirun included."""
    config_dir, config_name, overrides, multirun = None, "config", [], False
    args = list(argv)
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-m", "--multirun"):
            multirun = True
        elif a in ("-cd", "--config-dir", "-cn", "--config-name", "-cp", "--config-path"):
            val = args[i + 1] if i + 1 < len(args) else ""
            if a in ("-cd", "--config-dir"):
                config_dir = val
            elif a in ("-cn", "--config-name"):
                config_name = val
            i += 1
        elif a.startswith("--config-dir="):
            config_dir = a.split("=", 1)[1]
        elif a.startswith("--config-name="):
            config_name = a.split("=", 1)[1]
        elif a.startswith("-"):
            return  # --help, --cfg, --info, shell completion: Hydra's business
        else:
            overrides.append(a)
        i += 1
    plain = [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
    _check_overrides(plain)
    sweep_params = {}
    if config_dir or multirun:
        hcfg = _compose_raw([], config_name, config_dir, hydra=True)
        params = OmegaConf.select(hcfg, "hydra.sweeper.params") or {}
        sweep_params = {k: str(v) for k, v in params.items()}
        _check_overrides([f"{k}={v}" for k, v in sweep_params.items()])
    for job in _jobs(plain, sweep_params if (multirun or sweep_params) else {}):
        cfg = _compose_raw(job, config_name, config_dir)
        validate(cfg)


def _jobs(overrides, sweep_params) -> list[list[str]]:
    """One override list per value of each swept key (others at their first value)."""
    fixed, swept = [], {}
    for ov in overrides:
        key, value = ov.split("=", 1)
        values = _sweep_values(value)
        if len(values) > 1:
            swept[key] = values
        elif values:
            fixed.append(ov)
    for k, v in sweep_params.items():
        if k not in swept:
            vals = _sweep_values(v)
            if vals:
                swept[k] = vals
    if not swept:
        return [fixed]
    first = {k: v[0] for k, v in swept.items()}
    jobs = []
    for k, vals in swept.items():
        for v in vals:
            pick = dict(first, **{k: v})
            jobs.append(fixed + [f"{kk}={vv}" for kk, vv in pick.items()])
    return [list(j) for j, _ in itertools.groupby(sorted(jobs))]


# ---------------------------------------------------------------- value checks (types, ranges)


def validate(cfg: DictConfig) -> None:
    """Types against the group's own defaults, then cross-field ranges. Raises ``ConfigError``."""
    choices = [f"{g}={cfg[g].name}" for g in GROUPS if g in cfg and isinstance(cfg[g], DictConfig) and "name" in cfg[g]]
    base = _compose_raw(choices)
    _check_types(cfg, base, "")
    _check_ranges(cfg)


def _check_types(node, base, prefix) -> None:
    if not isinstance(node, DictConfig) or not isinstance(base, DictConfig):
        return
    for key in node.keys():
        path = f"{prefix}{key}"
        if key not in base or path.startswith("hydra"):
            continue
        child, ref_child = node._get_node(key), base._get_node(key)
        if isinstance(child, DictConfig) or isinstance(ref_child, DictConfig):
            _check_types(child, ref_child, path + ".")
            continue
        val = child if isinstance(child, ListConfig) else child._value()
        ref = ref_child if isinstance(ref_child, ListConfig) else ref_child._value()
        if ref is None or val is None or any(isinstance(x, str) and x.startswith("${") for x in (val, ref)):
            continue
        ok = type(val) is type(ref) or (isinstance(ref, float) and isinstance(val, int) and not isinstance(val, bool))
        ok = ok or (isinstance(ref, (list, ListConfig)) and isinstance(val, (list, ListConfig)))
        if not ok:
            raise ConfigError(
                f"{path}={val!r}: expected {type(ref).__name__} (default {ref!r}), got {type(val).__name__}"
            )


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _check_ranges(cfg: DictConfig) -> None:
    t, a = cfg.trainer, cfg.algo
    _need(t.steps >= 1, f"trainer.steps={t.steps}: must be >= 1")
    _need(t.lr > 0, f"trainer.lr={t.lr}: must be > 0")
    _need(t.update_epochs >= 1, f"trainer.update_epochs={t.update_epochs}: must be >= 1")
    _need(t.eval_every >= 0 and t.save_every >= 0, "trainer.eval_every / trainer.save_every: must be >= 0")
    _need(t.schedule in ("constant", "linear", "cosine"),
          f"trainer.schedule={t.schedule}: valid: constant, linear, cosine")
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
        _need(a.kl_estimator in ("k1", "k2", "k3", "low_var_kl"),
              f"algo.kl_estimator={a.kl_estimator}: valid: k1, k2, k3, low_var_kl")
    if "kl_coef" in a:  # KL inside the reward (rlx.algos.kl_control)
        _need(a.kl_coef >= 0, f"algo.kl_coef={a.kl_coef}: must be >= 0")
        _need(a.kl_penalty in ("k1", "k2", "k3", "low_var_kl"),
              f"algo.kl_penalty={a.kl_penalty}: valid: k1, k2, k3, low_var_kl")
        _need(not a.adaptive_kl or (a.kl_target > 0 and a.kl_horizon > 0),
              f"algo.adaptive_kl=true needs algo.kl_target > 0 and algo.kl_horizon > 0 "
              f"(got {a.kl_target}, {a.kl_horizon})")
    if "loss_agg_mode" in a:
        from rlx.ops import AGG_MODES

        _need(a.loss_agg_mode in AGG_MODES,
              f"algo.loss_agg_mode={a.loss_agg_mode}: valid: {', '.join(AGG_MODES)}"
              + (f"; did you mean '{closest(a.loss_agg_mode, AGG_MODES)}'?" if closest(a.loss_agg_mode, AGG_MODES) else ""))
    if "group_size" in a:
        _need(a.group_size >= a.get("min_group_size", 2),
              f"algo.group_size={a.group_size}: {a.name} needs at least {a.get('min_group_size', 2)} samples per prompt")
        _check_batch_units(cfg)


def _check_batch_units(cfg: DictConfig) -> None:
    t = cfg.trainer
    n = cfg.data.prompts_per_step * cfg.algo.group_size
    mini = t.mini_batch_size or n
    micro = t.micro_batch_size or mini
    _need(cfg.data.prompts_per_step >= 1, f"data.prompts_per_step={cfg.data.prompts_per_step}: must be >= 1")
    _need(n % mini == 0, f"trainer.mini_batch_size={mini}: must divide N = prompts_per_step*group_size = {n}")
    _need(micro >= 1 and (mini % micro == 0 or micro > mini),
          f"trainer.micro_batch_size={micro}: must divide trainer.mini_batch_size={mini}")


def batch_table(cfg: DictConfig) -> str:
    """The batch units of a run as a small table (printed at start)."""
    t = cfg.trainer
    g = cfg.algo.get("group_size", 1)
    b = cfg.data.get("prompts_per_step", cfg.algo.get("batch_size", 0))
    n = b * g
    mini = t.mini_batch_size or n
    micro = min(t.micro_batch_size or mini, mini)
    rows = [("B prompts / step", b), ("G samples / prompt", g), ("N samples / step", n),
            ("mini batch (samples / optimizer step)", mini), ("micro batch (samples / forward)", micro),
            ("update epochs (mu)", t.update_epochs), ("optimizer steps / step", t.update_epochs * (n // max(mini, 1)))]
    w = max(len(r[0]) for r in rows)
    return "\n".join(f"  {k:<{w}}  {v}" for k, v in rows)


def _check_tracker(cfg: DictConfig) -> None:
    """A credential in a tracking URI would land in .hydra/overrides.yaml and the logs: refuse it."""
    uri = OmegaConf.select(cfg, "tracker.mlflow.tracking_uri")
    _need(not (isinstance(uri, str) and re.search(r"://[^/@\s]+@", uri)),
          "tracker.mlflow.tracking_uri: holds credentials (user:secret@host); give them as MLFLOW_TRACKING_TOKEN "
          "or MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD in the environment instead")
