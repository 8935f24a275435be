"""``rlx.run(cfg)``: one run, the same path as ``python -m rlx``.

Writes into the run dir: ``config.yaml`` (resolved), ``run_info.json`` (reproducibility bundle: git
SHA, package versions, seed, data hash, command), ``metrics.jsonl``, ``summary.json`` and
``checkpoints/`` when enabled.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf

from rlx.runtime import run_dir as run_dirs

REPO = Path(__file__).resolve().parent.parent


def default_run_dir(cfg) -> Path:
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:  # not inside a Hydra app (rlx.compose + rlx.run): hydra.run.dir's pattern, unique
        return run_dirs.free_dir(Path("outputs") / cfg.algo.name / cfg.model.name)


def git_sha() -> str | None:
    try:
        sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return (sha + ("-dirty" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("rlx", "torch", "transformers", "hydra-core", "omegaconf", "tokenizers", "mlflow", "wandb", "peft"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def data_hash(data) -> str:
    h = hashlib.sha256()
    for fn in ("eval_set", "dev_set"):
        if hasattr(data, fn):
            h.update(json.dumps(getattr(data, fn)(), sort_keys=True, default=str).encode())
    h.update(json.dumps(getattr(data, "train_batch", lambda c, n: [])(0, 64), sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def run(cfg, run_dir: str | Path | None = None) -> dict:
    """Train as ``cfg`` says; returns the summary (also written to ``summary.json``). ``run_dir`` (default: Hydra's,
    else ``outputs/<algo>/<model>/<date>_<time>_<id>``) must not hold another run's results unless
    ``trainer.resume=true``, nor be in use by a live run (``RunDirError``, rlx/runtime/run_dir.py)."""
    from rlx.catalogue import load as _load_components
    from rlx.config import check_names

    _load_components()
    check_names(cfg)   # registry keys (ConfigError), before any model or data loads
    from rlx.config.preflight import preflight
    from rlx.models.memory import plan_check

    preflight(cfg, memory=plan_check)   # files, reward fns, device, memory, hub model (PreflightError): no run dir yet
    run_dir = Path(run_dir) if run_dir else default_run_dir(cfg)
    # the run owns its dir: locked (rank 0) until it ends; another run's dir is refused (RunDirError, exit 2)
    claim = run_dirs.claim(run_dir, resume=bool(cfg.trainer.resume), log=_say)
    try:
        if cfg.trainer.resume and claim.held:   # only some saved keys may change (rlx/runtime/resume_config.py)
            from rlx.runtime.resume_config import check_resumed

            check_resumed(cfg, run_dir, log=_say)
        return _train(cfg, run_dir)
    finally:
        claim.release()


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _train(cfg, run_dir: Path) -> dict:
    from rlx.catalogue import build
    from rlx.registry import TRAINERS

    if cfg.get("pipeline"):   # experiment=rlhf_pipeline: a run of runs, each stage builds its own algorithm
        trainer = TRAINERS.get("pipeline")(cfg, run_dir)
    else:
        algo = build("algo", cfg.algo)   # the run's one algorithm object (its state is checkpointed)
        trainer = TRAINERS.get(algo.trainer)(cfg, run_dir, algo=algo)
    main = getattr(trainer, "dist", None) is None or trainer.dist.is_main   # rank 0 writes the run dir
    if main:
        _write_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))   # what a resume restores
        info = {"git_sha": git_sha(), "versions": versions(), "seed": cfg.seed, "data_hash": data_hash(trainer.data),
                "command": sys.argv, "run_dir": str(run_dir.resolve())}
        (run_dir / "run_info.json").write_text(json.dumps(info, indent=1))
    summary = trainer.fit()
    summary["run_dir"] = str(run_dir)
    if main:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
        trainer.trackers.log_artifacts(run_dir, summary)
        trainer.console.print(trainer.console.closing_line(summary))
    return summary
