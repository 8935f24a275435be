"""Sampled completions (``trainer.log_samples_every``): every that many steps, the first
``SAMPLE_PROMPTS`` prompts of the step's already-scored rollout, each with its completions, total
rewards and reward terms, as one JSON line per prompt in ``<run dir>/samples.jsonl``; the same rows go
to the tracker backends that have ``log_samples`` (an MLflow artifact, a W&B table). Nothing is
generated for this, so no random number is drawn and no metric of the run changes. With the same seed
and data, every run sees the same prompts at the same step, so ``rlx.compare`` sets them side by side."""

from __future__ import annotations

import json
import math
from pathlib import Path

SAMPLE_PROMPTS = 4      # prompts recorded per logged step (each with all its G completions)


def _num(v):
    v = float(v)
    return v if math.isfinite(v) else None   # unscorable -> null (the file stays standard JSON)


def sample_rows(step: int, prompts: list, completions: list, scored: dict, k: int = SAMPLE_PROMPTS) -> list[dict]:
    """``prompts``/``completions`` are per sample (each prompt repeated G times, as scored); ``scored`` is
    the reward's ``{"total": [...], "terms": {name: [...]}, ...}``. One row per distinct prompt, first k."""
    rows: dict[str, dict] = {}
    terms = scored.get("terms", {}) or {}
    for i, (p, c) in enumerate(zip(prompts, completions)):
        if p not in rows:
            if len(rows) >= k:
                break
            rows[p] = {"step": int(step), "prompt": p, "completions": [], "rewards": [],
                       "terms": {name: [] for name in terms}}
        row = rows[p]
        row["completions"].append(c)
        row["rewards"].append(_num(scored["total"][i]))
        for name, vals in terms.items():
            row["terms"][name].append(_num(vals[i]))
    return list(rows.values())


class SampleLog:
    """``samples.jsonl`` of one run. On its first write after a resume it drops the rows of steps not
    before that write's step (the killed run logged them past its checkpoint)."""

    def __init__(self, run_dir: Path):
        self.path, self.fresh = Path(run_dir) / "samples.jsonl", True

    def write(self, rows: list[dict]) -> None:
        if self.fresh and self.path.exists() and rows:
            keep = []
            for ln in self.path.read_text().splitlines():
                try:
                    if json.loads(ln)["step"] < rows[0]["step"]:
                        keep.append(ln)
                except (ValueError, KeyError, TypeError):
                    break   # a torn last line
            self.path.write_text("".join(ln + "\n" for ln in keep))
        self.fresh = False
        with open(self.path, "a") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)


def log_samples(trackers, log: SampleLog, step: int, prompts, completions, scored) -> list[dict]:
    """Write the step's sample rows to ``samples.jsonl`` and every backend that takes them."""
    rows = sample_rows(step, prompts, completions, scored)
    if not rows:
        return rows
    log.write(rows)
    for b in getattr(trackers, "backends", []):
        if hasattr(b.backend, "log_samples"):
            b._call("log_samples", rows, step)
    return rows


def record_samples(trainer, log: SampleLog | None) -> SampleLog | None:
    """``Trainer.record_samples``: ``trainer.last_scored`` = (prompts, completions, scored) of the rollout
    it last scored (per sample, as the reward saw them), logged when the step is a multiple of
    ``trainer.log_samples_every`` (0 = off), on rank 0 only. Returns the run's ``SampleLog``."""
    every, last = trainer.cfg.trainer.get("log_samples_every", 0), getattr(trainer, "last_scored", None)
    if every and last is not None and trainer.step % every == 0 and trainer.dist.is_main:
        log = log or SampleLog(trainer.run_dir)
        log_samples(trainer.trackers, log, trainer.step, *last)
    return log
