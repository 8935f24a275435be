"""A resumed run keeps its own config (docs/reliability.md "Resume keeps the run's config").

``python -m rlx trainer.resume=true hydra.run.dir=D`` runs the config saved in ``D/config.yaml``
(``resume_config``): of the command's own overrides, those of ``SAFE_AT_RESUME`` are applied (how long
it runs, where, what it prints, how it checkpoints, where metrics also go), and any other one whose value
differs from the saved one is refused with ``RunDirError`` (exit 2) naming the key, the saved value and the
given one; an override equal to the saved value is fine. ``rlx.run(cfg)`` has no command line, so
``check_resumed`` compares every key of ``cfg`` with the saved config: an unsafe difference is refused,
a safe one is used and said in one note.
"""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from rlx.runtime.run_dir import RunDirError

# Overrides a resumed run accepts (a key or a whole group: hardware.num_threads, hardware=gpu): how long it runs,
# where it runs, where metrics also go, what it prints and how it checkpoints; not what it trains.
SAFE_AT_RESUME = ("trainer.resume", "trainer.steps", "trainer.progress", "trainer.log_every", "trainer.save_every",
                  "trainer.keep_checkpoints", "trainer.save_model", "hardware", "tracker")
RESUME_HELP = ("a resumed run keeps the config saved in its dir; at resume only " + ", ".join(SAFE_AT_RESUME)
               + " may change (docs/reliability.md)")


def is_safe(key: str) -> bool:
    return any(key == s or key.startswith(s + ".") for s in SAFE_AT_RESUME)


def flat(node, prefix: str = "") -> dict:
    """``{"a.b": leaf}`` of a container (lists are leaves)."""
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    if not isinstance(node, dict):
        return {prefix: node}
    out = {}
    for k, v in node.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.update(flat(v, key) if isinstance(v, dict) and v else {key: v})
    return out


def saved_config(d: Path, log=print) -> DictConfig | None:
    """``d/config.yaml`` (the resolved config the run wrote), None when absent or unreadable (said so)."""
    path = Path(d) / "config.yaml"
    if not path.is_file():
        return None
    try:
        cfg = OmegaConf.load(path)
    except Exception as e:  # noqa: BLE001 - a torn or hand-broken file: the command's config is used instead
        log(f"[rlx] WARNING: {path} is unreadable ({type(e).__name__}); the resume uses this command's config")
        return None
    return cfg if isinstance(cfg, DictConfig) else None


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+").split("@", 1)[0]


def _plain(x):
    return OmegaConf.to_container(x, resolve=True) if isinstance(x, (DictConfig, ListConfig)) else x


def _is_interpolation(cfg: DictConfig, key: str) -> bool:
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    return isinstance(node, DictConfig) and leaf in node and OmegaConf.is_interpolation(node, leaf)


def _fmt(v) -> str:
    return json.dumps(v) if isinstance(v, (list, dict)) else str(v)


def resume_config(given: DictConfig, saved: DictConfig, typed, base: DictConfig | None, d: Path) -> DictConfig:
    """The config of a resumed run: ``base`` (the defaults of the saved run's group choices, so that keys added
    since and interpolations are kept) with every saved value, then the ``typed`` overrides of ``given`` (what
    the command composed) that are in ``SAFE_AT_RESUME``. Another typed override whose value differs from the
    saved one raises ``RunDirError`` naming the key, the saved value and the given one."""
    merged = OmegaConf.create(OmegaConf.to_container(base, resolve=False)) if base is not None else OmegaConf.create()
    leaves = sorted(flat(saved).items(), key=lambda kv: _is_interpolation(merged, kv[0]))   # literals first
    for k, v in leaves:
        try:
            same = _plain(OmegaConf.select(merged, k, default="\0missing", throw_on_missing=False)) == v
        except Exception:  # noqa: BLE001 - an interpolation of base that does not resolve: the saved value
            same = False
        if not same:
            OmegaConf.update(merged, k, v, force_add=True, merge=False)
    bad, safe = [], []
    for ov in typed:
        k = _key(ov)
        if not k or ov.startswith("~") or k.startswith("hydra"):
            continue
        node = given.get(k) if "." not in k else None
        if isinstance(node, DictConfig) and "name" in node:   # a group choice (algo=dpo): its name
            now, was = node.name, OmegaConf.select(merged, f"{k}.name")
        elif k == "experiment":   # a _global_ bundle: the top-level sections it adds
            now, was = sorted(given.keys()), sorted(saved.keys())
            if now == was:
                continue
            added, gone = sorted(set(now) - set(was)), sorted(set(was) - set(now))
            now, was = ov.split("=", 1)[1], f"a run {'without ' + ', '.join(added) if added else 'with ' + ', '.join(gone)}"
        else:
            now, was = _plain(OmegaConf.select(given, k)), _plain(OmegaConf.select(merged, k))
        if is_safe(k):
            safe.append(k)
        elif now != was:
            bad.append(f"{k}={_fmt(now)} (saved: {_fmt(was)})")
    if bad:
        raise RunDirError(f"trainer.resume=true: {'; '.join(bad)} differ{'s' if len(bad) == 1 else ''} from the run's "
                          f"config ({Path(d) / 'config.yaml'}): {RESUME_HELP}; drop "
                          f"{'it' if len(bad) == 1 else 'them'}, or start a new run in another hydra.run.dir")
    for k in safe:
        OmegaConf.update(merged, k, _plain(OmegaConf.select(given, k)), force_add=True, merge=False)
    OmegaConf.set_struct(merged, True)
    return merged


def check_resumed(cfg: DictConfig, d: Path, log=print) -> None:
    """``trainer.resume=true`` into ``d``: every key of ``cfg`` outside ``SAFE_AT_RESUME`` must equal the saved
    config's (keys only one of them has are not compared); a changed safe key is said in one note."""
    saved = saved_config(d, log)
    if saved is None:
        return
    now, was = flat(cfg), flat(saved)
    diff = [k for k in now if k in was and now[k] != was[k]]
    bad = [f"{k}={_fmt(now[k])} (saved: {_fmt(was[k])})" for k in diff if not is_safe(k)]
    if bad:
        raise RunDirError(f"trainer.resume=true: the config differs from the run's ({Path(d) / 'config.yaml'}) at "
                          f"{'; '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}: {RESUME_HELP}; resume with the "
                          "saved config, or start a new run in another dir")
    changed = [k for k in diff if k != "trainer.resume"]
    if changed:
        parts = [f"{k}={_fmt(now[k])} (was {_fmt(was[k])}"
                 + ("; the run is extended" if k == "trainer.steps" and now[k] > was[k] else "")
                 + (f"; the {cfg.trainer.schedule} lr schedule follows the new total"
                    if k == "trainer.steps" and cfg.trainer.get("schedule") not in (None, "constant") else "") + ")"
                 for k in changed]
        log(f"[rlx] resume of {d}: its saved config, with {', '.join(parts)}")
