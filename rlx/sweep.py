"""Sweeps: every job of a Hydra multirun trains in its own child process, and the sweep ends with a
status table and the command that builds its report.

Why a child process: Hydra catches a Python exception in a job and goes on, but a job that is
SIGKILLed (the OOM killer), segfaults or calls ``os._exit`` takes down the process it runs in: the
whole sweep with the basic launcher, and the joblib/loky pool with the joblib launcher
(``TerminatedWorkerError``, every job still in flight lost; docs/reliability.md §1, §4). Here the
launcher's job only writes the job's composed config to ``<job dir>/job.yaml``, runs
``python -m rlx --config-dir <job dir> --config-name job`` with its output in ``job.log``, and
records the outcome in ``job_status.json``; a job that dies is a failed job, and the others go on.

Per job: ``tracker.group`` = ``<study>@<sweep start>`` (the MLflow experiment / W&B group of the
sweep) and ``hardware.num_threads`` = cores // parallel jobs, unless the config sets them.
``SweepCallback`` (``hydra.callbacks`` in conf/config.yaml) writes ``sweep_summary.json``, prints the
report command and makes ``python -m rlx`` exit 1 when any job failed.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf, open_dict

# Set by SweepCallback.on_multirun_end in the sweep's process; __main__ exits with it.
EXIT_STATUS = 0


def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def sweep_group(hydra_cfg) -> str:
    """``algo_ablation@2026-08-30_12-00-00``: the study (config name) and the sweep dir's time stamp."""
    d = Path(str(hydra_cfg.sweep.dir))
    stamp = f"{d.parent.name}_{d.name}" if re.fullmatch(r"\d{4}-\d{2}-\d{2}", d.parent.name) else d.name
    study = hydra_cfg.job.config_name if hydra_cfg.job.config_name != "config" else "multirun"
    return f"{study}@{stamp}"


def threads_per_job(hydra_cfg) -> int:
    cores = len(os.sched_getaffinity(0))
    n_jobs = int(OmegaConf.select(hydra_cfg, "launcher.n_jobs", default=1) or 1)
    n_jobs = cores if n_jobs < 0 else n_jobs
    return max(1, cores // max(1, n_jobs))


def run_isolated(cfg) -> float:
    """Run this multirun job in a child process; return its final eval accuracy (NaN if none)."""
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    job_dir = Path(hc.runtime.output_dir)
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    threads = threads_per_job(hc)
    with open_dict(cfg):
        if "group" in cfg.tracker and not cfg.tracker.group:
            cfg.tracker.group = sweep_group(hc)
        if cfg.hardware.get("num_threads") is None:
            cfg.hardware.num_threads = threads
    OmegaConf.save(cfg, job_dir / "job.yaml")
    cmd = [sys.executable, "-m", "rlx", "--config-dir", str(job_dir), "--config-name", "job",
           f"hydra.run.dir='{job_dir}'", "hydra.output_subdir=null"]
    env = dict(os.environ, OMP_NUM_THREADS=str(cfg.hardware.num_threads),
               MKL_NUM_THREADS=str(cfg.hardware.num_threads), HYDRA_FULL_ERROR="1")
    label = f"job {hc.job.num} ({job_dir.name})"
    print(f"[rlx] {label}: started in {job_dir}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    with open(job_dir / "job.log", "w") as log:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=hc.runtime.cwd).returncode
    status = job_status(job_dir, rc, time.perf_counter() - t0, list(hc.overrides.task), hc.job.num)
    (job_dir / "job_status.json").write_text(json.dumps(status, indent=1))
    if status["status"] == "completed":
        print(f"[rlx] {label}: completed in {status['wall_s']:.0f} s, final {status['metric']} = "
              f"{status['value']}", file=sys.stderr, flush=True)
    else:
        print(f"[rlx] {label}: {status['status'].upper()} ({status['reason']}); log: {job_dir / 'job.log'}",
              file=sys.stderr, flush=True)
    value = status.get("value")
    return float(value) if isinstance(value, (int, float)) else math.nan


def job_status(job_dir: Path, rc: int, wall_s: float, overrides: list, num: int) -> dict:
    status = {"job": num, "overrides": overrides, "returncode": rc, "wall_s": round(wall_s, 1),
              "log": "job.log", "dir": job_dir.name}
    summary_path = job_dir / "summary.json"
    if rc == 0 and summary_path.exists():
        final = json.loads(summary_path.read_text()).get("final", {})
        acc = {k: v for k, v in final.items() if k.endswith("/accuracy")}
        metric = next(iter(acc), next(iter(final), None))
        return dict(status, status="completed", metric=metric, value=final.get(metric), reason="")
    if rc < 0:
        name = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else str(-rc)
        return dict(status, status="killed", signal=name, reason=f"killed by {name}")
    return dict(status, status="failed", reason=failure_reason(job_dir / "job.log", rc))


_EXC_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b")


def failure_reason(log: Path, rc: int) -> str:
    """The exception line of the job's log (``ValueError: ...``), else its last line."""
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()] if log.exists() else []
    for ln in reversed(lines[-40:]):
        if _EXC_LINE.match(ln) or ln.startswith("rlx: "):
            return ln[:300]
    return (lines[-1] if lines else f"exit status {rc}")[:300]


class SweepCallback(Callback):
    """At the end of a multirun: ``sweep_summary.json``, a status line per job, the report command."""

    def __init__(self, by: str | None = None):
        self.by = by

    def on_multirun_start(self, config, **kwargs) -> None:
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        self.group = config.tracker.get("group") or sweep_group(config.hydra)
        if "mlflow" in (config.tracker.get("backends") or []):
            prepare_mlflow(config, self.group)

    def on_multirun_end(self, config, **kwargs) -> None:
        global EXIT_STATUS
        sweep_dir = getattr(self, "sweep_dir", Path(str(config.hydra.sweep.dir)))
        group = getattr(self, "group", sweep_group(config.hydra))
        jobs = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/job_status.json"))]
        jobs.sort(key=lambda j: j["job"])
        bad = [j for j in jobs if j["status"] != "completed"]
        (sweep_dir / "sweep_summary.json").write_text(json.dumps(
            {"group": group, "jobs": jobs, "completed": len(jobs) - len(bad),
             "failed": len(bad)}, indent=1))
        print(f"[rlx] sweep {group}: {len(jobs) - len(bad)} of {len(jobs)} jobs completed",
              file=sys.stderr)
        for j in bad:
            print(f"[rlx]   job {j['job']} {j['status']}: {j['reason']} ({sweep_dir / j['dir'] / j['log']})",
                  file=sys.stderr)
        by = f" --by {self.by}" if self.by else ""
        print(f"[rlx] report: python -m rlx.compare {sweep_dir}{by}", file=sys.stderr, flush=True)
        EXIT_STATUS = 1 if bad else 0


def prepare_mlflow(config, group: str) -> None:
    """Create the sweep's experiment (and a new SQLite store's tables) once, before parallel jobs race."""
    try:
        from mlflow.tracking import MlflowClient

        from rlx.track.mlflow import artifact_location, get_or_create_experiment, probe, resolve_uri

        c = config.tracker.mlflow
        uri = resolve_uri(c)
        probe(uri, float(c.init_timeout_s))
        get_or_create_experiment(MlflowClient(tracking_uri=uri), group, artifact_location(c, uri))
    except Exception as e:  # each job reports its own tracker failure; the sweep goes on
        from rlx.track.meta import redact

        print(f"[rlx] sweep: MLflow not prepared ({type(e).__name__}: {redact(str(e))})", file=sys.stderr)
