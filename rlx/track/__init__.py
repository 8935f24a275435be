"""Trackers: ``log(metrics, step)``, ``log_config(cfg)``, ``close()``. metrics.jsonl is always on and is
the run's ground truth; other backends are best-effort mirrors: a failing one is reported once and
disabled, and training goes on. A backend with ``where()`` says at start, in one line, where it writes
and how to view or upload it; that line and the failure lines go to stderr and ``<run dir>/console.log``."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from rlx.registry import TRACKERS
from rlx.runtime.console import echo
from rlx.track.meta import redact


def _json_value(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # "nan", "inf": never dropped, and the file stays standard JSON
    return v


def _step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


class JsonlTracker:
    """One JSON object per logged step in ``metrics.jsonl`` (flushed per line)."""

    def __init__(self, run_dir: Path, truncate_after: int | None = None):
        self.path = Path(run_dir) / "metrics.jsonl"
        if truncate_after is not None and self.path.exists():
            # resume: keep the rows up to the checkpoint's step (a torn last line from a kill is dropped),
            # rewritten to a temporary file and renamed, so a kill now cannot lose the kept rows
            keep = [ln for ln in self.path.read_text().splitlines() if _step(ln) is not None
                    and _step(ln) <= truncate_after]
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(ln + "\n" for ln in keep))
            os.replace(tmp, self.path)
        elif truncate_after is None and self.path.exists():
            self.path.unlink()
        self.fh = open(self.path, "a")

    def log(self, metrics: dict, step: int) -> None:
        row = {"step": step, **{k: _json_value(v) for k, v in sorted(metrics.items())}}
        self.fh.write(json.dumps(row) + "\n")
        self.fh.flush()

    def log_config(self, cfg) -> None:
        pass

    def close(self) -> None:
        self.fh.close()


class GuardedTracker:
    """Wraps a backend: its first failure is reported once and the backend is disabled."""

    def __init__(self, name: str, backend, log=None):
        self.name, self.backend, self.failed = name, backend, False
        self.say = log or (lambda msg: echo(None, msg))   # stderr

    def _call(self, method: str, *args) -> None:
        if self.failed:
            return
        try:
            getattr(self.backend, method)(*args)
        except Exception as e:  # a tracker outage must not take the run down
            self.failed = True
            self.say(f"[rlx] tracker '{self.name}' failed in {method}: {type(e).__name__}: {redact(str(e))}; "
                     "disabled for this run")

    def log(self, metrics, step):
        self._call("log", metrics, step)

    def log_config(self, cfg):
        self._call("log_config", cfg)

    def close(self):
        self._call("close")

    def log_artifacts(self, run_dir, summary):
        if hasattr(self.backend, "log_artifacts"):
            self._call("log_artifacts", run_dir, summary)


class NullTrackers:
    """What ranks other than 0 log to: nothing (only rank 0 writes metrics and talks to trackers)."""

    def log(self, metrics: dict, step: int) -> None:
        pass

    def log_config(self, cfg) -> None:
        pass

    def close(self) -> None:
        pass

    def log_artifacts(self, run_dir, summary) -> None:
        pass


class Trackers:
    """The jsonl file plus every configured backend, each guarded. ``log`` prints one line (default: to
    stderr and ``<run dir>/console.log``)."""

    def __init__(self, cfg, run_dir: Path, truncate_after: int | None = None, log=None):
        self.jsonl = JsonlTracker(run_dir, truncate_after)
        self.say = log or (lambda msg: echo(run_dir, msg))
        self.backends = []
        for name in cfg.tracker.backends:
            try:
                backend = TRACKERS.get(name)(cfg, run_dir)
            except Exception as e:
                self.say(f"[rlx] tracker '{name}' could not start: {type(e).__name__}: {redact(str(e))}; "
                         "continuing without it")
                continue
            self.backends.append(GuardedTracker(name, backend, self.say))
            try:
                where = backend.where() if hasattr(backend, "where") else None
            except Exception as e:   # saying where must not stop the backend
                where = f"[rlx] tracker '{name}': cannot say where it writes ({type(e).__name__}: {redact(str(e))})"
            if where:
                self.say(where)

    def log(self, metrics: dict, step: int) -> None:
        self.jsonl.log(metrics, step)
        for b in self.backends:
            b.log(metrics, step)

    def log_config(self, cfg) -> None:
        for b in self.backends:
            b.log_config(cfg)

    def close(self) -> None:
        self.jsonl.close()
        for b in self.backends:
            b.close()

    def log_artifacts(self, run_dir: Path, summary: dict) -> None:
        """After ``summary.json`` exists: upload it with the resolved config and ``run_info.json``,
        then end the backends' runs (``close`` leaves a run that ended normally open for this)."""
        for b in self.backends:
            b.log_artifacts(run_dir, summary)


# Registration (each module imports its heavy library only when its tracker is built).
from rlx.track import mlflow as _mlflow  # noqa: E402,F401
from rlx.track import wandb as _wandb  # noqa: E402,F401
