"""``python -m rlx [overrides]``: check the config and pre-flight (files, reward functions, device, memory,
model availability), then run it as a Hydra app (multirun, sweeps and launchers are Hydra's). Nothing loads
and no run dir is created before the checks pass. Exit codes: rlx/config/preflight.py and docs/errors.md
(2 config/pre-flight/run dir, 3 non-finite steps, 4 model not available, 5 machine cannot run it, 6 disk full at a
checkpoint); each failure
is one ``rlx:`` line, with its traceback only under ``RLX_DEBUG=1``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def _config_error(e) -> None:
    if os.environ.get("RLX_DEBUG") == "1":
        raise e
    print(f"rlx: config error: {e}", file=sys.stderr)
    sys.exit(2)


def _error(e, code: int = 2) -> None:
    if os.environ.get("RLX_DEBUG") == "1":
        raise e
    print(f"rlx: error: {e}", file=sys.stderr)
    sys.exit(code)


def _explicit_run_dir(argv) -> str | None:
    """The ``hydra.run.dir=`` a single-run command names (None for a multirun, or a dir with interpolations)."""
    if "-m" in argv or "--multirun" in argv:
        return None
    dirs = [a.split("=", 1)[1].strip().strip("'\"") for a in argv if a.lstrip("+").startswith("hydra.run.dir=")]
    return dirs[-1] if dirs and dirs[-1] and "${" not in dirs[-1] else None


def _resumed(cfg, run_dir: Path, typed: list[str]):
    """``trainer.resume=true`` into a dir that holds a run's ``config.yaml``: that config, with only the safe ones
    of this command's overrides ``typed`` (rlx/runtime/resume_config.py; RunDirError for the others)."""
    from omegaconf import DictConfig, open_dict

    from rlx.config import ConfigError
    from rlx.config.compose import GROUPS, _compose_raw, group_choices
    from rlx.runtime.resume_config import resume_config, saved_config
    from rlx.runtime.run_dir import is_main_rank

    saved = saved_config(run_dir, log=lambda m: is_main_rank() and print(m, file=sys.stderr))
    if saved is None:
        return cfg
    known = {g for g in GROUPS if isinstance(saved.get(g), DictConfig) and saved[g].get("name") in group_choices(g)}
    exp = [o.lstrip("+") for o in typed if o.lstrip("+").startswith("experiment=")]
    try:   # the current defaults of the saved run's choices: keys added since, interpolations
        base = _compose_raw([f"{g}={saved[g].name}" for g in sorted(known)] + exp)
        with open_dict(base):
            for g in set(GROUPS) - known - {"experiment"}:
                base.pop(g, None)   # a preset rlx does not have (--config-dir): the saved node alone
    except ConfigError:
        base = None
    return resume_config(cfg, saved, typed, base, run_dir)


def _discard_unused_run_dir() -> None:
    """Remove the run dir of a run that failed before its first metric (Hydra made it and wrote .hydra/ into it):
    a failed start leaves nothing behind. A dir that holds anything else (metrics, checkpoints, a user's files)
    is kept."""
    import shutil
    from pathlib import Path

    from hydra.core.hydra_config import HydraConfig

    d = Path(HydraConfig.get().runtime.output_dir)
    ours = {".hydra", "__main__.log", "config.yaml", "run_info.json", "console.log"}
    if d.is_dir() and {c.name for c in d.iterdir()} <= ours:
        shutil.rmtree(d, ignore_errors=True)


def main() -> None:
    from rlx.config import CONF_DIR, ConfigError, check_cli
    from rlx.config.preflight import PreflightError, preflight, report

    try:
        cfgs = check_cli(sys.argv[1:])
    except ConfigError as e:
        _config_error(e)
    try:
        from rlx.models.memory import plan_check

        for cfg in cfgs:
            preflight(cfg, memory=plan_check)
    except PreflightError as e:
        sys.exit(report(e))
    # registers ${rlx.run_id:}, the unique suffix of hydra.run.dir
    from rlx.runtime.run_dir import RunDirError, check

    run_dir = _explicit_run_dir(sys.argv[1:])
    if run_dir and len(cfgs) == 1:   # another run's dir is refused before Hydra writes its .hydra/ into it
        try:
            check(Path(run_dir), bool(cfgs[0].trainer.resume))
            if cfgs[0].trainer.resume:   # a resume that would change the run's config, too
                _resumed(cfgs[0], Path(run_dir), [a for a in sys.argv[1:] if "=" in a and not a.startswith("-")])
        except RunDirError as e:
            _error(e)

    import hydra

    @hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
    def app(cfg):
        from rlx.config import batch_table
        from rlx.runner import run
        from rlx.sweep import in_multirun, run_isolated

        if in_multirun():  # each sweep job trains in its own process (rlx/sweep.py says why)
            return run_isolated(cfg)
        from rlx.config import check_names
        from rlx.data.rows import BadRowError
        from rlx.models.memory import MemoryPlanError
        from rlx.runtime.checkpoint import ResumeError
        from rlx.runtime.disk import DiskFullError
        from rlx.trainers.base import NonFiniteError

        try:  # exit 2: a config, run dir or resume error, before any model or data loads; 3: non-finite steps
            check_names(cfg)
            if cfg.trainer.resume:   # the run's own config, from its dir
                from hydra.core.hydra_config import HydraConfig

                hc = HydraConfig.get()
                cfg = _resumed(cfg, Path(hc.runtime.output_dir), list(hc.overrides.task))
            print(f"[rlx] {cfg.algo.name} on {cfg.model.name} / {cfg.data.name}, seed {cfg.seed}\n"
                  f"{batch_table(cfg)}", file=sys.stderr)
            summary = run(cfg)
        except ConfigError as e:
            _discard_unused_run_dir()
            _config_error(e)
        except PreflightError as e:
            _discard_unused_run_dir()
            sys.exit(report(e))
        except BadRowError as e:   # a data row, named by file and line (rlx/data/rows.py)
            _discard_unused_run_dir()
            if os.environ.get("RLX_DEBUG") == "1":
                raise
            print(f"rlx: data error: {e}", file=sys.stderr)
            sys.exit(2)
        except RunDirError as e:   # another run's dir, or a resume that would change the run's config: kept as it is
            _error(e)
        except MemoryPlanError as e:
            sys.exit(report(PreflightError(f"model too big: {e}", code=5)))
        except ResumeError as e:
            _error(e)
        except NonFiniteError as e:
            _error(e, 3)
        except DiskFullError as e:   # a checkpoint write ran out of space: one line, the partial write removed
            _error(e, 6)
        # data=arithmetic_pref logs its generation accuracy under data.eval_name (docs/offline.md)
        return summary.get("final", {}).get(f"eval/{cfg.data.get('eval_name', cfg.data.name)}/accuracy")

    app()
    from rlx import sweep

    if sweep.EXIT_STATUS:  # a multirun in which some job failed (SweepCallback)
        sys.exit(sweep.EXIT_STATUS)


if __name__ == "__main__":
    main()
