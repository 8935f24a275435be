"""The live console view: a progress bar with reward, accuracy, entropy and KL, and one closing line
such as ``eval/arithmetic/accuracy 0.31 -> 0.74 in 120 steps (95 s)``.

Once the console knows the run dir (``Console(cfg, run_dir)`` or ``attach(run_dir)``), every line it
prints (the ``[rlx] ...`` lines, the closing lines) is also appended to ``<run dir>/console.log``, and so
is a per-step line every ``trainer.log_every`` steps, also while the live bar replaces those lines on a
terminal. ``log_line`` appends to that file without a console (the trackers' lines). Only rank 0 writes."""

from __future__ import annotations

import sys
import time
from pathlib import Path

SHOW = (("reward/mean", "reward"), ("score/mean", "score"), ("policy/entropy", "entropy"),
        ("policy/kl_ref", "kl"), ("loss/total", "loss"))
LOG_NAME = "console.log"   # in the run dir, beside metrics.jsonl


def log_line(run_dir, msg: str) -> None:
    """Append ``msg`` to ``<run_dir>/console.log`` (opened per line: nothing is lost on a kill)."""
    if run_dir is not None:
        with open(Path(run_dir) / LOG_NAME, "a", encoding="utf-8") as fh:
            fh.write(msg.rstrip("\n") + "\n")


def echo(run_dir, msg: str) -> None:
    """One line on stderr and in ``<run_dir>/console.log``."""
    print(msg, file=sys.stderr, flush=True)
    log_line(run_dir, msg)


class Console:
    def __init__(self, cfg, run_dir=None):
        self.enabled = bool(cfg.trainer.progress) and sys.stderr.isatty()
        self.log_every = cfg.trainer.log_every
        self.progress = None
        self.last_eval: dict = {}
        self.run_dir = None
        if run_dir is not None:
            self.attach(run_dir)

    def attach(self, run_dir) -> Console:
        """Also append every line to ``<run_dir>/console.log`` (a muted console stays silent)."""
        if not getattr(self, "muted", False):
            self.run_dir = Path(run_dir)
        return self

    def mute(self) -> None:
        """Ranks other than 0 stay silent."""
        self.enabled, self.log_every, self.muted, self.run_dir = False, 0, True, None
        self.print = lambda msg: None

    def print(self, msg: str) -> None:
        if self.progress is not None:
            self.progress.console.print(msg, markup=False, highlight=False)
        else:
            print(msg, file=sys.stderr, flush=True)
        log_line(self.run_dir, msg)

    def start(self, step: int, total: int, first_eval: dict) -> None:
        self.t0, self.total, self.last_eval = time.perf_counter(), total, dict(first_eval)
        self.first_eval = dict(first_eval)
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(TextColumn("[bold]rlx"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TextColumn("{task.fields[info]}"), transient=False)
            self.progress.start()
            self.task = self.progress.add_task("train", total=total, completed=step, info="")

    def _info(self, metrics: dict) -> str:
        parts = [f"{short} {metrics[k]:.3f}" for k, short in SHOW if k in metrics]
        parts += [f"acc {v:.3f}" for k, v in self.last_eval.items() if k.endswith("/accuracy")]
        return "  ".join(parts)

    def update(self, step: int, metrics: dict) -> None:
        self.last_eval.update({k: v for k, v in metrics.items() if k.startswith("eval/")})
        due = self.log_every and (step % self.log_every == 0 or step == self.total)
        line = f"[rlx] step {step}/{self.total}  {self._info(metrics)}" if due else None
        if self.progress is not None:
            self.progress.update(self.task, completed=step, info=self._info(metrics))
        elif line:
            print(line, file=sys.stderr, flush=True)
        if line:
            log_line(self.run_dir, line)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def closing_line(self, summary: dict) -> str:
        lines = []
        for k, v in summary["final"].items():
            if k.endswith("/failures") and not v:   # counted in metrics.jsonl; said here only when some failed
                continue
            before = summary["initial"].get(k)
            start = f"{before:.2f} -> " if before is not None else ""
            lines.append(f"{k} {start}{v:.2f} in {summary['steps']} steps ({summary['wall_s']:.0f} s)")
        lines = lines or [f"done: {summary['steps']} steps ({summary['wall_s']:.0f} s)"]
        if summary.get("run_dir"):
            lines.append(f"run dir: {summary['run_dir']}")
        return "\n".join(lines)
