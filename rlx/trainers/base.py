"""What every trainer shares: set-up, the step loop, evaluation, logging, checkpoints, resume,
SIGTERM handling and the non-finite guard. Subclasses implement ``train_step`` (and ``setup``).

The loop, read top to bottom:
  0. resume from the newest complete checkpoint (``trainer.resume=true``), else evaluate at step 0
  1. ``train_step()`` -> metrics of one step (the subclass: generate/score/update, or a batch of pairs)
  2. evaluate every ``trainer.eval_every`` steps and at the last step
  3. log one JSON line per step (metrics.jsonl, then the tracker backends)
  4. checkpoint every ``trainer.save_every`` steps, and at once after SIGTERM or Ctrl-C (then exit 143 / 130)
"""

from __future__ import annotations

import functools
import json
import math
import os
import signal
import time
from pathlib import Path

import torch

from rlx.catalogue import build
from rlx.data.prompts import context_warning
from rlx.metrics import peak_mem_gb
from rlx.models import compiled, make_reference, memory
from rlx.models import lean as lean_forward
from rlx.registry import ENGINES
from rlx.rollout.episodes import EpisodeRunner
from rlx.runtime import speed
from rlx.runtime.checkpoint import (
    Checkpointer,
    full_optimizer_state,
    load_optimizer_state,
    rng_state,
    set_rng_state,
)
from rlx.runtime.dist import Dist
from rlx.runtime.schedule import lr_factor
from rlx.track import NullTrackers, Trackers
from rlx.track.samples import record_samples
from rlx.trainers import evaluation


class NonFiniteError(RuntimeError):
    """``trainer.max_bad_steps`` steps in a row had a non-finite loss, gradient or reward (exit status 3)."""


class Trainer:
    def __init__(self, cfg, run_dir: Path, console=None, algo=None):
        from rlx.runtime.console import Console

        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.console = (console or Console(cfg)).attach(self.run_dir)   # its lines also go to <run dir>/console.log
        self.ckpt = Checkpointer(self.run_dir / "checkpoints", keep=cfg.trainer.keep_checkpoints)
        # resume=true with checkpoints of which none is complete fails here, before anything loads
        self.resume_from = self.ckpt.resume_point() if cfg.trainer.resume else None
        hw = cfg.hardware
        if hw.num_threads:
            torch.set_num_threads(hw.num_threads)
        elif advice := speed.thread_advice(hw.num_threads):
            self.console.print(advice)
        self.dist = Dist.from_config(hw)
        if not self.dist.is_main:
            self.console.mute()
        self.device = torch.device(hw.device)
        torch.manual_seed(cfg.seed)
        self.algo = algo if algo is not None else build("algo", cfg.algo)   # built once, by the runner
        self.data = build("data", cfg.data)
        self.reward = build("reward", cfg.reward)
        memory.check(cfg, "ref_logp" in self.algo.requires, log=self.console.print)
        self.env = build("env", cfg.env) if cfg.get("env") is not None else None   # None: single-turn (older configs)
        self.model, self.tok = build("model", cfg.model, log=self.console.print, env=cfg.get("env"), data=cfg.data)
        self.model.to(self.device).train()
        self.autocast = speed.prepare(self.model, hw.get("autocast"), self.device, log=self.console.print)
        self.ref = make_reference(self.model) if "ref_logp" in self.algo.requires else None
        if self.ref is not None and self.autocast:
            speed.bf16_linear_reference(self.ref, self.model)
        if not hw.get("lean_forward", True):   # rlx/models/lean.py: the transformers forward everywhere
            for m in (self.model, self.ref):
                if m is not None:
                    lean_forward.disable(m)
        self.model = self.dist.wrap(self.model)
        why = "hardware.lean_forward=false"
        if hw.get("lean_forward", True):
            why = lean_forward.why_not(self.model) or (
                None if lean_forward.for_model(self.model) is not None else "its logits differ from transformers'")
        self.console.print(f"[rlx] lean forward: {'on' if why is None else f'off ({why})'}")
        self.console.print(compiled.apply((self.model, self.ref), hw.get("compile"), self.device, why is None,
                                          hw.get("compile_backend", "inductor")))
        self.engine = ENGINES.get(cfg.rollout.engine)(cfg.rollout, self.model, self.tok, device=self.device,
                                                      autocast=self.autocast)
        self.episodes = None   # multi-turn envs: rollouts are episodes (rlx/rollout/episodes.py)
        if self.env is not None and self.env.multi_turn:
            self.episodes = EpisodeRunner(self.env, self.engine, self.tok, cfg.rollout.max_new_tokens)
        if hasattr(self.data, "prepare"):   # datasets that format and measure prompts with the tokenizer
            self.data.prepare(self.tok)
            if hasattr(self.data, "summary"):
                self.console.print(f"[rlx] {self.data.summary()}")
        warning = context_warning(self.data, self.model, cfg.rollout.max_new_tokens)
        if warning:
            self.console.print(warning)
        self.step, self.cursor, self.bad_steps, self.skipped = 0, 0, 0, 0
        self.first_eval: dict = {}
        self.setup()
        self.optim = self.make_optimizer()
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.optim, functools.partial(lr_factor, cfg.trainer))
        self._step_bad: str | None = None   # first non-finite quantity of the current step (guard)
        self.first_bad: tuple | None = None  # (quantity, step) that began the current run of bad steps
        self._term = 0   # the signal (SIGTERM, SIGINT) to act on at the end of the step; 0 = none
        self.weights_bad: str | None = None   # set once an update left non-finite weights: no more checkpoints
        self.should_stop = False  # a subclass may end the run early (e.g. SFT's dev target)

    # ------------------------------------------------------------------ hooks for subclasses
    def setup(self) -> None:
        pass

    def train_step(self) -> dict:
        raise NotImplementedError

    def trainable_parameters(self):
        return [p for p in self.model.parameters() if p.requires_grad]

    def make_optimizer(self):
        t = self.cfg.trainer
        fused = self.device.type in ("cpu", "cuda")
        return torch.optim.AdamW(self.trainable_parameters(), lr=t.lr, betas=tuple(t.betas),
                                 weight_decay=t.weight_decay, fused=fused)

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict:
        t = self.cfg.trainer
        resumed_from = self._maybe_resume()
        self.trackers = (Trackers(self.cfg, self.run_dir, truncate_after=self.step if resumed_from else None)
                         if self.dist.is_main else NullTrackers())
        self.trackers.log_config(self.cfg)
        prev = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        t0 = time.perf_counter()
        try:
            if self.step == 0:
                self.first_eval = self.evaluate()
                self.trackers.log({**self.first_eval, **getattr(self.model, "rlx_param_counts", {})}, 0)
            self.console.start(self.step, t.steps, self.first_eval)
            metrics: dict = {}
            while self.step < t.steps and not self.should_stop:
                self.step += 1
                self._step_bad = None
                compile_s = compiled.seconds()
                metrics = self.train_step()
                metrics["perf/compile_s"] = compiled.seconds() - compile_s   # hardware.compile: 0 when off
                if self._step_bad is None and not speed.all_finite(self.trainable_parameters()):
                    self._step_bad = self.weights_bad = "weights after the update"   # finite loss, overflowing lr
                    self.console.print(f"[rlx] step {self.step}: the update left non-finite weights; no checkpoint "
                                       "is written from now on (the newest one is the last good state)")
                if self.step == t.steps or self.should_stop or (t.eval_every and self.step % t.eval_every == 0):
                    metrics.update(self.evaluate())
                metrics["health/skipped_steps"] = float(self.skipped)
                metrics["perf/peak_mem_gb"] = peak_mem_gb()
                self.trackers.log(metrics, self.step)
                self.record_samples()
                self.console.update(self.step, metrics)
                term = self._term   # read once: a signal landing between two reads would exit unsaved
                if (term or (t.save_every and self.step % t.save_every == 0)) and not self.weights_bad:
                    self.save()
                if term:
                    self._interrupted(term, time.perf_counter() - t0, resumed_from, metrics)
                self._count_bad_step()   # after the step's metrics are logged (non-finite ones as "nan"/"inf")
        finally:
            for sig, handler in prev.items():
                signal.signal(sig, handler)
            self.trackers.close()
            self.console.stop()
        summary = self.summary(time.perf_counter() - t0, resumed_from, metrics)
        if t.get("save_model") and self.dist.is_main:
            summary["model_dir"] = str(self.export(self.run_dir / "model"))
        return summary

    def record_samples(self) -> None:
        """Every ``trainer.log_samples_every`` steps: the online trainer's ``last_scored`` (rlx.track.samples)."""
        self._samples = record_samples(self, getattr(self, "_samples", None))

    def export(self, path: Path) -> Path:
        """The trained model as a ``from_pretrained`` dir (``trainer.save_model``; ``model.path=<it>`` loads it)."""
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.model.save_pretrained(path, state_dict=self.dist.full_state_dict(self.model))
        self.tok.save_pretrained(path)
        return path

    def _on_signal(self, signum, frame) -> None:
        """SIGTERM or Ctrl-C: checkpoint at the next step boundary, then exit 143 / 130; a second Ctrl-C exits now."""
        if self._term and signum == signal.SIGINT:
            self.console.print("[rlx] second Ctrl-C: exiting now, without a checkpoint of this step")
            os._exit(130)
        self._term = signum
        if signum == signal.SIGINT:
            self.console.print(f"[rlx] Ctrl-C: saving a checkpoint after step {self.step + 1} (Ctrl-C again: exit now)")

    def _interrupted(self, signum, wall_s: float, resumed_from, metrics: dict):
        """After the checkpoint of a signalled step: summary.json marked interrupted, then exit 143 or 130."""
        name, code = signal.Signals(signum).name, 130 if signum == signal.SIGINT else 143
        if self.dist.is_main:
            summary = {**self.summary(wall_s, resumed_from, metrics), "interrupted": name, "run_dir": str(self.run_dir)}
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
        saved = "no checkpoint (non-finite weights)" if self.weights_bad else f"checkpoint saved at step {self.step}"
        self.console.print(f"[rlx] {name}: {saved} in {self.run_dir}; exiting with {code}")
        raise SystemExit(code)

    def summary(self, wall_s: float, resumed_from, last: dict) -> dict:
        final = {k: v for k, v in last.items() if k.startswith("eval/")}
        return {"algo": self.cfg.algo.name, "steps": self.step, "wall_s": round(wall_s, 2),
                "resumed_from": str(resumed_from) if resumed_from else None,
                "initial": self.first_eval, "final": final, "skipped_steps": self.skipped}

    def guard(self, **values) -> bool:
        """True when every value (loss, grad_norm, reward, ...) is finite. Otherwise the caller skips the
        update: it is counted in ``health/skipped_steps``, and the step counts as bad (``_count_bad_step``)."""
        bad = [k for k, v in values.items() if not math.isfinite(float(v))]
        if not bad:
            return True
        self.skipped += 1
        self._step_bad = self._step_bad or bad[0]
        self.console.print(f"[rlx] step {self.step}: non-finite {', '.join(bad)}; update skipped")
        return False

    def _count_bad_step(self) -> None:
        """At the end of a step: stop after ``trainer.max_bad_steps`` bad steps in a row."""
        if self._step_bad is None:
            self.bad_steps, self.first_bad = 0, None
            return
        self.bad_steps += 1
        self.first_bad = self.first_bad or (self._step_bad, self.step)
        if self.bad_steps >= self.cfg.trainer.max_bad_steps:
            last = self.ckpt.latest() if self.ckpt.entries() else None
            raise NonFiniteError(
                f"non-finite {self.first_bad[0]} at step {self.first_bad[1]}, then {self.bad_steps} bad step(s) in a "
                f"row (trainer.max_bad_steps={self.cfg.trainer.max_bad_steps}); stopping. "
                f"Last complete checkpoint: {last or 'none'}")

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> dict:
        """eval/<data>/accuracy, failures, pass@k and maj@k (rlx/trainers/evaluation.py)."""
        return evaluation.evaluate(self)

    def sample(self, records: list[dict], n: int = 1, greedy: bool = False, keys: list[int] | None = None):
        """``Rollout`` of n samples per record: single-turn completions, or whole episodes with a multi-turn env
        (``keys``: the records' random streams, rlx/rollout/streams.py; an episode's first turn only)."""
        if self.episodes is not None:
            return self.episodes.run(records, n=n, greedy=greedy, keys=keys)
        return self.engine.generate([r["prompt"] for r in records], n=n, greedy=greedy, keys=keys)

    def reward_fields(self, records: list[dict], out, n: int, train: bool = False) -> dict:
        """Keyword fields of a reward call on ``out`` (evaluation.reward_fields)."""
        return evaluation.reward_fields(self.algo, self.reward, records, out, n, train)

    # ------------------------------------------------------------------ checkpoints
    def save(self) -> Path:
        state = {"step": self.step, "cursor": self.cursor, "optim": self.optim.state_dict(),
                 "sched": self.sched.state_dict(), "algo": self.algo.state_dict(), "rng": rng_state(),
                 "bad_steps": self.bad_steps, "skipped": self.skipped, "first_eval": self.first_eval,
                 "first_bad": self.first_bad, "extra": self.extra_state()}
        weights = self.dist.full_state_dict(self.model)
        if self.dist.strategy == "fsdp":
            state["optim"] = full_optimizer_state(self.model, self.optim)
        path = self.ckpt.save(self.step, self.model, state, weights=weights) if self.dist.is_main else None
        self.dist.barrier()
        return path

    def _maybe_resume(self):
        if not self.cfg.trainer.resume:
            return None
        latest = self.resume_from   # checked in __init__: None here means no checkpoint was ever finished
        if latest is None:
            cut = [d.name for d in self.ckpt.entries()]
            why = f"only unfinished writes ({', '.join(cut)})" if cut else "no checkpoint"
            self.console.print(f"[rlx] WARNING: trainer.resume=true but {self.ckpt.root} holds {why}: STARTING FROM "
                               "STEP 0 (to continue a run, pass its dir as hydra.run.dir)")
            return None
        state = Checkpointer.load(latest, self.model)
        load_optimizer_state(self.model, self.optim, state["optim"])
        self.sched.load_state_dict(state["sched"])
        self.algo.load_state_dict(state["algo"])
        self.step, self.cursor = state["step"], state["cursor"]
        self.bad_steps, self.skipped, self.first_eval = state["bad_steps"], state["skipped"], state["first_eval"]
        self.first_bad = state.get("first_bad")
        self.load_extra_state(state["extra"])
        set_rng_state(state["rng"])
        self.console.print(f"[rlx] resumed from {latest} (step {self.step})")
        return latest
