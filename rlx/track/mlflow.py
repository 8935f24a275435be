"""MLflow mirror (``tracker=mlflow``): one ``MlflowClient.log_batch`` per logged step.

Store: ``tracker.mlflow.tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else a SQLite file
``outputs/mlflow.db`` under the launch dir, with artifacts in ``outputs/mlartifacts`` (mlflow's own
default would put them in ``./mlruns`` relative to the cwd: docs/environment.md §5.2). An ``http(s)``
server is probed with a capped timeout first, so an unreachable one fails at start in seconds
instead of after mlflow's default retries (7 × 120 s); later requests are capped the same way.
``rlx.track.Trackers`` reports a failure once and disables the backend.

The experiment is the run's group (the sweep, or ``default``); the run carries tags algo, model,
data, seed, config_hash, sweep; the resolved config flattened as params; at the end the resolved
config, ``summary.json`` and ``run_info.json`` as artifacts (redacted: ``rlx.track.meta``).
At start one line says where the run is (``view_line``): store, experiment and run id, and how to
see it: ``mlflow ui --backend-store-uri <store>`` for a local store, the run's page on a server.
Credentials belong in ``MLFLOW_TRACKING_TOKEN`` / ``_USERNAME`` / ``_PASSWORD``, never in the URI.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shlex
import sys
import time
import urllib.request
from pathlib import Path

from rlx.registry import TRACKERS
from rlx.track import meta

# MLflow metric names allow alphanumerics, _ - . / and space (mlflow/utils/validation.py).
_BAD_KEY_CHARS = re.compile(r"[^\w\-./ ]")


def mlflow_key(name: str) -> str:
    """``eval/gsm8k/pass@8`` -> ``eval/gsm8k/pass_at_8`` (verl's sanitiser does the same for ``@``)."""
    return _BAD_KEY_CHARS.sub("_", name.replace("@", "_at_"))


def resolve_uri(c) -> str:
    if c.tracking_uri:
        return str(c.tracking_uri)
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{(Path('outputs') / 'mlflow.db').resolve()}"


def artifact_location(c, uri: str) -> str | None:
    if c.artifact_location:
        loc = str(c.artifact_location)
        return loc if "://" in loc or loc.startswith("mlflow-artifacts:") else Path(loc).resolve().as_uri()
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()
    return None  # a server's own default (proxied artifacts)


def local_store(uri: str) -> str | None:
    """The store URI ``mlflow ui`` can open from any directory (relative paths made absolute), or None
    when the store is not local (a server, Databricks)."""
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        return uri if path.startswith("/") else f"sqlite:///{Path(path).resolve()}"
    if uri.startswith("file:"):
        return uri
    if "://" not in uri and not uri.startswith("databricks"):
        return Path(uri).resolve().as_uri()   # a plain path: mlflow's file store
    if uri.split(":", 1)[0].split("+")[0] in ("postgresql", "mysql", "mssql"):
        return uri   # a database store: `mlflow ui` opens it too (credentials masked in what is printed)
    return None


def view_line(uri: str, experiment: str, exp_id: str, run_id: str) -> str:
    """One line: which run, where, and how to view it (credentials masked)."""
    head = f"[rlx] mlflow: run {run_id} in experiment '{experiment}' (id {exp_id})"
    if uri.startswith(("http://", "https://")):
        return f"{head}; view: {meta.redact(uri).rstrip('/')}/#/experiments/{exp_id}/runs/{run_id}"
    store = local_store(uri)
    if store is None:
        return f"{head} at {meta.redact(uri)}"
    env = "MLFLOW_ALLOW_FILE_STORE=true " if store.startswith("file:") else ""   # mlflow 3 refuses it otherwise
    return f"{head}; view: {env}mlflow ui --backend-store-uri {shlex.quote(meta.redact(store))}"


def probe(uri: str, timeout_s: float) -> None:
    """Raise within ``timeout_s`` when an http(s) tracking server does not answer ``/health``."""
    if uri.startswith(("http://", "https://")):
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as r:
            if r.status != 200:
                raise ConnectionError(f"{meta.redact(uri)}/health answered {r.status}")


def get_or_create_experiment(client, name: str, location: str | None) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # another job of the sweep created it first
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


@TRACKERS.register("mlflow")
class MlflowTracker:
    def __init__(self, cfg, run_dir: Path):
        c = cfg.tracker.mlflow
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(c.request_timeout_s)))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(int(c.max_retries)))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        uri = resolve_uri(c)
        probe(uri, float(c.init_timeout_s))
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        self.group = meta.group(cfg)
        exp_id = get_or_create_experiment(self.client, self.group, artifact_location(c, uri))
        run = self.client.create_run(exp_id, run_name=meta.run_name(cfg, run_dir), tags=meta.tags(cfg))
        self.run_id, self.done = run.info.run_id, False
        self.view = view_line(uri, self.group, exp_id, self.run_id)
        (Path(run_dir) / "mlflow_run.json").write_text(json.dumps(
            {"tracking_uri": meta.redact(uri), "experiment": self.group, "experiment_id": exp_id,
             "run_id": self.run_id}, indent=1))
        atexit.register(self._finish_quietly)  # if log_artifacts is never called (the API path)

    def where(self) -> str:
        return self.view

    def log(self, metrics: dict, step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(mlflow_key(k), float(v), now, step) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch, synchronous=True)

    def log_samples(self, rows: list[dict], step: int) -> None:
        """``rlx.track.samples``: the run's sample rows so far as the artifact ``samples.jsonl``."""
        self.samples = getattr(self, "samples", "") + "".join(json.dumps(r) + "\n" for r in rows)
        self.client.log_text(self.run_id, self.samples, "samples.jsonl")

    def log_config(self, cfg) -> None:
        from mlflow.entities import Param

        params = [Param(k[:250], v[:6000]) for k, v in meta.flat_params(cfg).items()]
        for i in range(0, len(params), 100):  # log_batch takes at most 100 params
            self.client.log_batch(self.run_id, params=params[i:i + 100], synchronous=True)

    def close(self) -> None:
        """End of metrics. A run ended by an exception is closed now (FAILED, or KILLED for SIGTERM);
        a finished one stays open for ``log_artifacts``."""
        exc = sys.exc_info()[1]
        if exc is not None:
            self._finish("KILLED" if isinstance(exc, (SystemExit, KeyboardInterrupt)) else "FAILED")

    def log_artifacts(self, run_dir: Path, summary: dict) -> None:
        try:
            for name, text in meta.artifact_texts(run_dir).items():
                self.client.log_text(self.run_id, text, name)
        finally:
            self._finish("FINISHED")

    def _finish_quietly(self) -> None:
        try:
            self._finish("FINISHED")
        except Exception:
            pass  # already reported by the guard, or the server is gone at exit

    def _finish(self, status: str) -> None:
        if not self.done:
            self.done = True
            self.client.set_terminated(self.run_id, status=status)
