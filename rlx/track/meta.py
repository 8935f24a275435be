"""What every tracker backend records about a run besides its metrics: the group (the sweep, or
``default``), the run name, tags (algo, model, data, seed, config hash), the resolved config
flattened into params, and the redaction that keeps secrets out of all of them.

Secrets: a config key or environment variable whose name ends in ``key``, ``token``, ``secret``,
``password``/``passwd`` or ``credential(s)`` is a secret. Param values under such keys become
``***``; the value of every such environment variable (8 characters or more) is replaced by ``***``
wherever it appears in a param, tag or uploaded text; ``scheme://user:pass@host`` loses its
user-info. Nothing here reads a secret except to remove it.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

SECRET_NAME = re.compile(r"(key|token|secret|passw(or)?d|credentials?)$", re.IGNORECASE)
URL_USERINFO = re.compile(r"([a-z][a-z0-9+.\-]*://)[^/@\s]+@", re.IGNORECASE)
MASK = "***"
# Keys that do not change what a run computes, left out of the config hash: seeds of one arm share it.
HASH_IGNORES = ("seed", "tracker", "hardware.num_threads", "trainer.progress", "trainer.log_every")


def secret_values(env=None) -> list[str]:
    """Values of secret-named environment variables (longest first, so substrings go last)."""
    env = os.environ if env is None else env
    vals = {v for k, v in env.items() if SECRET_NAME.search(k) and len(v) >= 8}
    return sorted(vals, key=len, reverse=True)


def redact(text: str, secrets=None) -> str:
    """``text`` with every secret environment value and URL user-info replaced by ``***``."""
    for s in secret_values() if secrets is None else secrets:
        text = text.replace(s, MASK)
    return URL_USERINFO.sub(r"\1" + MASK + "@", text)


def flat_params(cfg: DictConfig) -> dict[str, str]:
    """The resolved config as ``{"algo.beta": "0.04", ...}``, secrets masked."""
    secrets = secret_values()
    out: dict[str, str] = {}

    def walk(node, prefix: str) -> None:
        for k, v in node.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                walk(v, key + ".")
            elif SECRET_NAME.search(str(k)):
                out[key] = MASK
            else:
                out[key] = redact(str(v), secrets)

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out


def config_hash(cfg: DictConfig) -> str:
    """sha256 (12 hex) of the resolved config without ``HASH_IGNORES``: equal for the seeds of one arm."""
    c = OmegaConf.to_container(cfg, resolve=True)
    for path in HASH_IGNORES:
        *parents, leaf = path.split(".")
        node = c
        for p in parents:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    return hashlib.sha256(OmegaConf.to_yaml(OmegaConf.create(c)).encode()).hexdigest()[:12]


def group(cfg: DictConfig) -> str:
    """MLflow experiment / W&B group: ``tracker.group`` (set per sweep by rlx.sweep), else ``default``."""
    return cfg.tracker.get("group") or "default"


def run_name(cfg: DictConfig, run_dir: Path) -> str:
    """A sweep job keeps its dir name (``3_dapo_s1``); a single run gets ``<algo>_s<seed>_<dir name>``."""
    if cfg.tracker.get("group"):
        return Path(run_dir).name
    return f"{cfg.algo.name}_s{cfg.seed}_{Path(run_dir).name}"


def tags(cfg: DictConfig) -> dict[str, str]:
    return {"algo": str(cfg.algo.name), "model": str(cfg.model.name), "data": str(cfg.data.name),
            "seed": str(cfg.seed), "config_hash": config_hash(cfg), "sweep": group(cfg)}


def artifact_texts(run_dir: Path) -> dict[str, str]:
    """The run's text artifacts (resolved config, summary, reproducibility bundle), redacted."""
    secrets = secret_values()
    out = {}
    for name in ("config.yaml", "summary.json", "run_info.json"):
        path = Path(run_dir) / name
        if path.exists():
            out[name] = redact(path.read_text(), secrets)
    return out
