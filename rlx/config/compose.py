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

from omegaconf import DictConfig, OmegaConf

from rlx.config.checks import check_all, check_resolves, yaml_error
from rlx.config.values import ConfigError, _check_ranges, _check_values, check_algorithm  # noqa: F401 (re-exported)
from rlx.registry import closest

CONF_DIR = (Path(__file__).resolve().parents[2] / "conf").resolve()
GROUPS = ("algo", "model", "reward", "data", "env", "hardware", "tracker", "experiment")


def group_choices(group: str, conf_dir: Path = CONF_DIR, extra_dir=None) -> list[str]:
    dirs = [Path(conf_dir)] + ([Path(extra_dir)] if extra_dir else [])
    return sorted({p.stem for d in dirs for p in (d / group).glob("*.yaml")})


def compose(overrides=(), config_name: str = "config", config_dir: str | None = None) -> DictConfig:
    """The config ``python -m rlx <overrides>`` would run, checked (raises ``ConfigError``)."""
    overrides = list(overrides)
    _check_overrides(overrides)
    cfg = _compose_raw(overrides, config_name, config_dir)
    validate(cfg)
    check_names(cfg)
    return cfg


def _compose_raw(overrides, config_name="config", config_dir=None, hydra=False) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    own = config_dir and (Path(config_dir) / f"{config_name}.yaml").is_file()  # else: presets only, rlx's config
    primary = str(Path(config_dir).resolve()) if own else str(CONF_DIR)
    extra = [] if not config_dir else [f"hydra.searchpath=[file://{CONF_DIR if own else Path(config_dir).resolve()}]"]
    outer = GlobalHydra.instance().hydra if GlobalHydra.instance().is_initialized() else None
    GlobalHydra.instance().clear()   # inside a running Hydra app (a pipeline composing its stages): set aside
    try:
        with initialize_config_dir(config_dir=primary, version_base="1.3"):
            return hydra_compose(config_name, overrides=extra + list(overrides), return_hydra_config=hydra)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(yaml_error(e) or _explain(e, overrides)) from None
    except Exception as e:  # a YAML syntax error in a config file surfaces as yaml's own error
        if not yaml_error(e):
            raise
        raise ConfigError(yaml_error(e)) from None
    finally:
        if outer is not None:   # ... and restored
            GlobalHydra.instance().clear()
            GlobalHydra.instance().initialize(outer)


def _explain(err: Exception, overrides) -> str:
    """Turn Hydra/OmegaConf's composition error into one line with a suggestion."""
    msg = str(err)
    m = re.search(r"Key '([^']+)' is not in struct", msg) or re.search(r"Could not override '([^']+)'", msg)
    full = re.search(r"full_key: ([\w.\[\]]+)", msg)
    if m:
        key = full.group(1) if full else m.group(1)
        return _unknown_key_message(key, overrides) + f"\n(hydra: {msg.splitlines()[0]})"
    return msg.splitlines()[0] + ("\n" + "\n".join(msg.splitlines()[1:]) if "\n" in msg else "")


def _base(choices: tuple = ()) -> DictConfig:
    """The composed defaults for these group choices (cached, read-only: only ever compared against)."""
    if choices not in _BASE_CACHE:
        base = _compose_raw(list(choices))
        OmegaConf.set_readonly(base, True)
        _BASE_CACHE[choices] = base
    return _BASE_CACHE[choices]


_BASE_CACHE: dict = {}


def _group_overrides(overrides) -> tuple:
    return tuple(o.lstrip("+") for o in overrides if "=" in o and o.split("=")[0].lstrip("+~") in GROUPS
                 and not o.startswith("~") and len(_sweep_values(o.split("=", 1)[1])) == 1)


def _missing_key(key: str, overrides, root: DictConfig | None = None) -> tuple[str, str | None, list[str]] | None:
    """None if ``key`` exists (in ``root``, default: the composed defaults for these overrides' group
    choices), else (first missing prefix, corrected full key or None, the valid names at that level)."""
    try:
        node = root if root is not None else _base(_group_overrides(overrides))
    except ConfigError:
        return key, None, []
    parts = key.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, DictConfig):
            return ".".join(parts[:i + 1]), None, []
        if part not in node:
            valid = [str(k) for k in node.keys()]
            hint = closest(part, valid)
            fixed = ".".join(parts[:i] + [hint] + parts[i + 1:]) if hint else None
            return ".".join(parts[:i + 1]), fixed, valid
        node = node._get_node(part)
    return None


def _unknown_key_message(key: str, overrides) -> str:
    missing = _missing_key(key, overrides)
    bad, fixed, valid = missing if missing else (key, None, [])
    where = bad.rpartition(".")[0] or "<root>"
    inside = f" (in '{key}')" if bad != key else ""
    did = f"; did you mean '{fixed}'?" if fixed else ""
    listing = f"valid under '{where}': {', '.join(valid)}" if valid else f"'{where}' has no sub-keys"
    return f"unknown config key '{bad}'{inside}{did} ({listing})"


def _check_overrides(overrides, config_dir=None) -> None:
    """Group choices and '+' additions, checked before composing (clear errors, no Hydra trace)."""
    for ov in overrides:
        if "=" not in ov and not ov.startswith("~"):
            raise ConfigError(f"override '{ov}' has no '=' (expected key=value, e.g. trainer.steps=100)")
        key, value = ov.split("=", 1) if "=" in ov else (ov, "")
        bare = key.lstrip("+~")
        if not bare:
            raise ConfigError(f"override '{ov}' has no key before '=' (expected key=value, e.g. trainer.steps=100)")
        if bare.startswith("hydra"):
            continue
        if key.startswith("~") and bare != "experiment":
            missing = _missing_key(bare, overrides)
            if missing:
                raise ConfigError(_unknown_key_message(bare, overrides))
            raise ConfigError(f"'{key}': '~' would delete '{bare}', which every run needs; rlx configs are closed: "
                              f"set it instead ({bare}=<value>)")
        if bare in GROUPS:
            valid = group_choices(bare, CONF_DIR, config_dir)
            for choice in _sweep_values(value):
                if choice not in valid and not (bare == "experiment" and choice == "null"):
                    hint = closest(choice, valid)
                    did = f"; did you mean '{bare}={hint}'?" if hint else ""
                    listing = f"valid: {', '.join(valid)}" if valid else f"conf/{bare}/ has no presets yet"
                    raise ConfigError(f"{bare}={choice}: unknown choice for group '{bare}'{did} ({listing})")
        elif key.startswith("+"):
            missing = _missing_key(bare, overrides)
            if missing is None:
                raise ConfigError(f"'{key}': {bare} already exists; drop the '+' ({bare}={value})")
            raise ConfigError(f"'{key}': {_unknown_key_message(bare, overrides)}; rlx configs are closed: '+' "
                              "cannot add keys (set an existing one, or add the key to conf/ with a comment)")


def _sweep_values(value: str) -> list[str]:
    v = value.strip()
    if v.startswith(("choice(", "range(", "interval(", "glob(", "tag(", "shuffle(", "sort(")):
        return []  # Hydra sweep functions: checked per job
    return [x.strip() for x in v.split(",")] if "," in v and not v.startswith(("[", "{")) else [v]


def check_cli(argv) -> list[DictConfig]:
    """Validate what ``python -m rlx argv`` would run, every job of a multirun included; returns their configs."""
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
            return []  # --help, --cfg, --info, shell completion: Hydra's business
        else:
            overrides.append(a)
        i += 1
    plain = [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
    hcfg = _compose_raw([], config_name, config_dir, hydra=True) if config_dir or multirun else None
    if hcfg is not None and str(OmegaConf.select(hcfg, "hydra.mode")).endswith("MULTIRUN"):
        multirun = True   # a sweep file (hydra.mode: MULTIRUN) sweeps without -m
    if not multirun:   # Hydra takes a comma list on the command line as a sweep only with -m
        for o in overrides:
            value = o.split("=", 1)[1] if "=" in o else ""
            n = 0 if value.strip().startswith(("'", '"')) else len(_sweep_values(value))
            if n > 1:
                raise ConfigError(f"{o}: a sweep over {n} values needs -m (python -m rlx -m ... {o}); "
                                  f"for a list value write [a,b]")
    _check_overrides(plain, config_dir)
    sweep_params = {}
    if hcfg is not None:
        params = OmegaConf.select(hcfg, "hydra.sweeper.params") or {}
        sweep_params = {k: str(v) for k, v in params.items()}
        _check_overrides([f"{k}={v}" for k, v in sweep_params.items()], config_dir)
    cfgs = []
    for job in _jobs(plain, sweep_params if (multirun or sweep_params) else {}):
        cfgs.append(_compose_raw(job, config_name, config_dir))
        validate(cfgs[-1])
    for cfg in cfgs:   # after every job's light checks: the algorithms check their own keys (imports torch)
        check_algorithm(cfg)
    return cfgs


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
    choices = [f"{g}={cfg[g].name}" for g in GROUPS if g in cfg and isinstance(cfg[g], DictConfig) and "name" in cfg[g]
               and cfg[g].name in group_choices(g)]   # a user preset (--config-dir) is checked against the default
    base = _base(tuple(choices))
    check_resolves(cfg, _missing_key)
    check_all(cfg, base)
    _check_ranges(cfg)
    _check_values(cfg)


def check_names(cfg: DictConfig) -> None:
    """Registry keys the config names (rollout engine, model source, reward functions, tracker backends)
    exist, and the algorithm takes the rollout correction the config turns on. This imports the components
    (torch among them), so it runs after the light checks: from ``compose``, and in ``rlx.run`` / ``python -m rlx`` before any model or data is loaded."""
    from rlx.catalogue import load as _load_components
    from rlx.registry import ENGINES, MODELS, REWARDS, TRACKERS

    _load_components()

    def known(key: str, name, reg) -> None:
        if name not in reg.names():
            hint = closest(str(name), reg.names())
            did = f"; did you mean '{hint}'?" if hint else ""
            raise ConfigError(f"{key}={name!r}: unknown {reg.kind}{did} (valid: {', '.join(reg.names())})")

    known("rollout.engine", cfg.rollout.engine, ENGINES)
    if "source" in cfg.model:
        known("model.source", cfg.model.source, MODELS)
    for name, term in (cfg.reward.get("terms") or {}).items():
        if isinstance(term, DictConfig) and term.get("fn"):
            known(f"reward.terms.{name}.fn", term.fn, REWARDS)
    for i, backend in enumerate(cfg.tracker.get("backends") or []):
        known(f"tracker.backends[{i}]", backend, TRACKERS)
    check_algorithm(cfg)


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
            ("update epochs (mu)", t.update_epochs), ("optimizer steps / step", t.update_epochs * -(-n // max(mini, 1)))]
    w = max(len(r[0]) for r in rows)
    return "\n".join(f"  {k:<{w}}  {v}" for k, v in rows)
