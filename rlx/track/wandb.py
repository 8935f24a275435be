"""W&B mirror (``tracker=wandb``): one ``run.log(metrics, step=step)`` per logged step.

Mode ``auto`` runs offline when ``WANDB_MODE`` says offline/disabled or there is no login
(``WANDB_API_KEY`` or a netrc entry for the W&B host), online otherwise. The offline run lands in
``<run dir>/wandb/offline-run-*`` (``wandb sync`` uploads it later). An online ``wandb.init`` that
does not answer within ``tracker.wandb.init_timeout_s`` (W&B's default is 90 s, then it raises:
docs/reliability.md §1) falls back to offline with one warning; ``finish`` is capped by
``finish_timeout_s`` (W&B's default blocks until everything is uploaded).

Group = the sweep (or ``default``); tags algo, model, data, seed, config hash; the resolved config
flattened as the run config; at the end the resolved config, ``summary.json`` and ``run_info.json``
as run files (redacted: ``rlx.track.meta``). The console is not captured (rlx writes its own lines to
``<run dir>/console.log``). At start one line says where the run is: the offline run dir and the
``wandb sync <dir>`` that uploads it, or the online run's URL.
"""

from __future__ import annotations

import netrc
import os
import shlex
import sys
from pathlib import Path
from urllib.parse import urlparse

from rlx.registry import TRACKERS
from rlx.runtime.console import echo
from rlx.track import meta


def logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def choose_mode(mode: str) -> str:
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE", "").lower()
    if env in ("offline", "dryrun", "disabled"):
        return "offline" if env == "dryrun" else env
    return "online" if logged_in() else "offline"


@TRACKERS.register("wandb")
class WandbTracker:
    def __init__(self, cfg, run_dir: Path):
        import wandb

        c = cfg.tracker.wandb
        self.wandb, self.run_dir = wandb, Path(run_dir)
        root = Path(c.dir) if c.dir else self.run_dir
        root.mkdir(parents=True, exist_ok=True)
        tags = meta.tags(cfg)
        self.kwargs = dict(project=c.project, entity=c.entity or None, group=meta.group(cfg),
                           name=meta.run_name(cfg, run_dir), job_type=str(cfg.algo.name),
                           tags=[f"{k}:{v}"[:64] for k, v in tags.items() if k != "sweep"],
                           config=meta.flat_params(cfg), dir=str(root))
        self.settings = dict(init_timeout=float(c.init_timeout_s), finish_timeout=float(c.finish_timeout_s),
                             console="off", silent=True)
        self.mode = choose_mode(str(c.mode))
        try:
            self.run = self._init(self.mode)
        except Exception as e:
            if self.mode != "online":
                raise
            reason = (meta.redact(str(e)).splitlines() or [""])[0]
            echo(run_dir, f"[rlx] tracker 'wandb': online init failed ({type(e).__name__}: {reason}); "
                          "logging offline instead (wandb sync uploads it later)")
            self.mode, self.run = "offline", self._init("offline")
        self.done = False

    def where(self) -> str:
        """The offline run dir and the command that uploads it, or the online run's page."""
        if self.mode == "disabled":
            return "[rlx] wandb: disabled (tracker.wandb.mode / WANDB_MODE); nothing is recorded"
        if self.mode == "offline" or getattr(self.run, "offline", False):
            sync = Path(self.run.settings.sync_dir).resolve()
            return f"[rlx] wandb: offline run in {sync}; upload: wandb sync {shlex.quote(str(sync))}"
        return f"[rlx] wandb: run {meta.redact(str(self.run.url))}"

    def _init(self, mode: str):
        return self.wandb.init(mode=mode, settings=self.wandb.Settings(**self.settings), **self.kwargs)

    def log(self, metrics: dict, step: int) -> None:
        self.run.log(dict(metrics), step=step)

    def log_samples(self, rows: list[dict], step: int) -> None:
        """``rlx.track.samples``: one W&B table ``samples`` per logged step, a row per completion."""
        cols = ["step", "prompt", "completion", "reward"] + sorted(rows[0]["terms"])
        data = [[r["step"], r["prompt"], c, r["rewards"][i]] + [r["terms"][t][i] for t in cols[4:]]
                for r in rows for i, c in enumerate(r["completions"])]
        self.run.log({"samples": self.wandb.Table(columns=cols, data=data)}, step=step)

    def log_config(self, cfg) -> None:
        pass  # given to wandb.init as the run config

    def close(self) -> None:
        """End of metrics. A run ended by an exception finishes now with exit code 1 (143 after
        SIGTERM); a finished one stays open for ``log_artifacts``."""
        exc = sys.exc_info()[1]
        if exc is not None:
            code = exc.code if isinstance(exc, SystemExit) and isinstance(exc.code, int) else 1
            self._finish(code)

    def log_artifacts(self, run_dir: Path, summary: dict) -> None:
        try:
            files = Path(self.run.dir)
            for name, text in meta.artifact_texts(run_dir).items():
                dest = files / f"rlx_{name}"  # W&B keeps its own config.yaml in the same folder
                dest.write_text(text)
                self.run.save(str(dest), base_path=str(files), policy="now")
            self.run.summary.update({k: v for k, v in summary.get("final", {}).items()})
        finally:
            self._finish(0)

    def _finish(self, exit_code: int) -> None:
        if not self.done:
            self.done = True
            self.run.finish(exit_code=exit_code)
