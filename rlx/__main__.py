"""``python -m rlx [overrides]``: check the config and pre-flight (files, reward functions, device, memory,
model availability), then run it as a Hydra app (multirun, sweeps and launchers are Hydra's). Nothing loads
and no run dir is created before the checks pass. Exit codes: rlx/config/preflight.py and docs/errors.md
(2 config/pre-flight, 3 non-finite steps, 4 model not available, 5 machine cannot run it); each failure
is one ``rlx:`` line, with its traceback only under ``RLX_DEBUG=1``."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def _config_error(e) -> None:
    if os.environ.get("RLX_DEBUG") == "1":
        raise e
    print(f"rlx: config error: {e}", file=sys.stderr)
    sys.exit(2)


def _discard_unused_run_dir() -> None:
    """Remove the run dir of a run that failed before its first metric (Hydra made it and wrote .hydra/ into it):
    a failed start leaves nothing behind. A dir that holds anything else (metrics, checkpoints, a user's files)
    is kept."""
    import shutil
    from pathlib import Path

    from hydra.core.hydra_config import HydraConfig

    d = Path(HydraConfig.get().runtime.output_dir)
    ours = {".hydra", "__main__.log", "config.yaml", "run_info.json"}
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
        from rlx.trainers.base import NonFiniteError

        try:  # exit 2: a config or resume error, before any model or data loads; 3: non-finite steps
            check_names(cfg)
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
        except MemoryPlanError as e:
            sys.exit(report(PreflightError(f"model too big: {e}", code=5)))
        except ResumeError as e:
            if os.environ.get("RLX_DEBUG") == "1":
                raise
            print(f"rlx: error: {e}", file=sys.stderr)
            sys.exit(2)
        except NonFiniteError as e:
            if os.environ.get("RLX_DEBUG") == "1":
                raise
            print(f"rlx: error: {e}", file=sys.stderr)
            sys.exit(3)
        # data=arithmetic_pref logs its generation accuracy under data.eval_name (docs/offline.md)
        return summary.get("final", {}).get(f"eval/{cfg.data.get('eval_name', cfg.data.name)}/accuracy")

    app()
    from rlx import sweep

    if sweep.EXIT_STATUS:  # a multirun in which some job failed (SweepCallback)
        sys.exit(sweep.EXIT_STATUS)


if __name__ == "__main__":
    main()
