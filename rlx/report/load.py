"""Loading for ``rlx.compare``: run dirs (``metrics.jsonl``, ``samples.jsonl``, ``summary.json``,
``job_status.json``, the resolved config) and the runs of an MLflow experiment."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Run:
    name: str
    cfg: dict                       # the resolved config, flattened: {"algo.name": "grpo", ...}
    rows: list = field(default_factory=list)   # metrics.jsonl rows
    summary: dict | None = None
    samples: list = field(default_factory=list)  # samples.jsonl rows (rlx.track.samples)
    status: str = "completed"       # completed | failed | killed | incomplete
    reason: str = ""

    def series(self, key: str) -> tuple[list, list]:
        pts = [(r["step"], r[key]) for r in self.rows if isinstance(r.get(key), (int, float))]
        return [s for s, _ in pts], [float(v) for _, v in pts]


# ----------------------------------------------------------------------------- loading


def flatten(node, prefix: str = "") -> dict:
    out = {}
    for k, v in (node or {}).items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _read_cfg(d: Path) -> dict:
    import yaml

    for name in ("config.yaml", "job.yaml", ".hydra/config.yaml"):
        if (d / name).exists():
            try:
                return flatten(yaml.safe_load((d / name).read_text()))
            except yaml.YAMLError:
                continue
    return {}


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a run killed mid-write: keep what is complete
    return rows


def load_run_dir(d: Path) -> Run:
    rows = read_jsonl(d / "metrics.jsonl")
    summary = json.loads((d / "summary.json").read_text()) if (d / "summary.json").exists() else None
    run = Run(name=d.name, cfg=_read_cfg(d), rows=rows, summary=summary, samples=read_jsonl(d / "samples.jsonl"),
              status="completed" if summary else "incomplete", reason="" if summary else "no summary.json")
    if (d / "job_status.json").exists():
        js = json.loads((d / "job_status.json").read_text())
        run.status, run.reason = js["status"], js.get("reason", "")
    return run


def find_run_dirs(paths) -> list[Path]:
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise SystemExit(f"rlx.compare: {p} does not exist")
        if any((p / f).exists() for f in ("metrics.jsonl", "job_status.json", "summary.json")):
            found.append(p)
            continue
        marks = [m.parent for pat in ("metrics.jsonl", "job_status.json") for m in p.rglob(pat)]
        found += sorted({m for m in marks if "wandb" not in m.parts and "checkpoints" not in m.parts}, key=_natural)
    return list(dict.fromkeys(found))


def _natural(path: Path) -> list:
    """Sort key: job 2 before job 10 (``2_grpo_s2`` < ``10_gspo_s1``)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def load_mlflow(uri: str, experiment: str) -> list[Run]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"rlx.compare: no MLflow experiment '{experiment}' at {uri}")
    runs = []
    for r in client.search_runs([exp.experiment_id], max_results=5000, order_by=["attributes.start_time ASC"]):
        keys = list(r.data.metrics)  # every metric: the dashboard's picker offers them all
        by_step: dict[int, dict] = {}
        for k in keys:
            for m in client.get_metric_history(r.info.run_id, k):
                by_step.setdefault(m.step, {"step": m.step})[k] = m.value
        status = {"FINISHED": "completed", "FAILED": "failed", "KILLED": "killed"}.get(r.info.status, "incomplete")
        wall = (r.info.end_time - r.info.start_time) / 1000 if r.info.end_time else None
        runs.append(Run(name=r.info.run_name or r.info.run_id, cfg=dict(r.data.params),
                        rows=[by_step[s] for s in sorted(by_step)], summary={"wall_s": wall} if wall else None,
                        status=status, reason="" if status == "completed" else f"MLflow status {r.info.status}"))
    return runs
