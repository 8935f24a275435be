"""What every trainer shares: set-up, the step loop, evaluation, logging, checkpoints, resume,
SIGTERM handling and the non-finite guard. Subclasses implement ``train_step`` (and ``setup``).

The loop, read top to bottom:
  0. resume from the newest complete checkpoint (``trainer.resume=true``), else evaluate at step 0
  1. ``train_step()`` -> metrics of one step (the subclass: generate/score/update, or a batch of pairs)
  2. evaluate every ``trainer.eval_every`` steps and at the last step
  3. log one JSON line per step (metrics.jsonl, then the tracker backends)
  4. checkpoint every ``trainer.save_every`` steps, and at once after SIGTERM (then exit 143)
"""

from __future__ import annotations

import math
import signal
import time
from pathlib import Path

import torch

from rlx.data.prompts import context_warning
from rlx.checkpoint import Checkpointer, rng_state, set_rng_state
from rlx.metrics import peak_mem_gb
from rlx.models import make_reference, memory
from rlx.registry import ENGINES, build
from rlx.rewards.vote import maj_at_k, pass_at_k
from rlx.track import Trackers


class NonFiniteError(RuntimeError):
    pass


class Trainer:
    def __init__(self, cfg, run_dir: Path, console=None):
        from rlx.console import Console

        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.console = console or Console(cfg)
        hw = cfg.hardware
        if hw.num_threads:
            torch.set_num_threads(hw.num_threads)
        self.device = torch.device(hw.device)
        self.autocast = bool(hw.autocast)
        torch.manual_seed(cfg.seed)
        self.algo = build("algo", cfg.algo)
        self.data = build("data", cfg.data)
        self.reward = build("reward", cfg.reward)
        memory.check(cfg, self.algo.needs_ref, log=self.console.print)
        self.model, self.tok = build("model", cfg.model, log=self.console.print)
        self.model.to(self.device).train()
        self.ref = make_reference(self.model) if self.algo.needs_ref else None
        self.engine = ENGINES.get(cfg.rollout.engine)(cfg.rollout, self.model, self.tok, device=self.device,
                                                      autocast=self.autocast)
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
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.optim, self._lr_lambda)
        self.ckpt = Checkpointer(self.run_dir / "checkpoints", keep=cfg.trainer.keep_checkpoints)
        self._term = False
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
        self.trackers = Trackers(self.cfg, self.run_dir, truncate_after=self.step if resumed_from else None)
        self.trackers.log_config(self.cfg)
        prev = signal.signal(signal.SIGTERM, self._on_sigterm)
        t0 = time.perf_counter()
        try:
            if self.step == 0:
                self.first_eval = self.evaluate()
                self.trackers.log({**self.first_eval, **getattr(self.model, "rlx_param_counts", {})}, 0)
            self.console.start(self.step, t.steps, self.first_eval)
            metrics: dict = {}
            while self.step < t.steps and not self.should_stop:
                self.step += 1
                metrics = self.train_step()
                if self.step == t.steps or self.should_stop or (t.eval_every and self.step % t.eval_every == 0):
                    metrics.update(self.evaluate())
                metrics["health/skipped_steps"] = float(self.skipped)
                metrics["perf/peak_mem_gb"] = peak_mem_gb()
                self.trackers.log(metrics, self.step)
                self.console.update(self.step, metrics)
                if self._term or (t.save_every and self.step % t.save_every == 0):
                    self.save()
                if self._term:
                    self.console.print(f"[rlx] SIGTERM: checkpoint saved at step {self.step}; exiting with 143")
                    raise SystemExit(143)
        finally:
            signal.signal(signal.SIGTERM, prev)
            self.trackers.close()
            self.console.stop()
        return self.summary(time.perf_counter() - t0, resumed_from, metrics)

    def _on_sigterm(self, signum, frame) -> None:
        self._term = True  # acted on at the next step boundary

    def summary(self, wall_s: float, resumed_from, last: dict) -> dict:
        final = {k: v for k, v in last.items() if k.startswith("eval/")}
        return {"algo": self.cfg.algo.name, "steps": self.step, "wall_s": round(wall_s, 2),
                "resumed_from": str(resumed_from) if resumed_from else None,
                "initial": self.first_eval, "final": final, "skipped_steps": self.skipped}

    def guard(self, **values) -> bool:
        """True when every value is finite; otherwise count a skipped update and stop after too many."""
        bad = [k for k, v in values.items() if not math.isfinite(float(v))]
        if not bad:
            self.bad_steps = 0
            return True
        self.bad_steps += 1
        self.skipped += 1
        self.console.print(f"[rlx] step {self.step}: non-finite {', '.join(bad)}; update skipped")
        if self.bad_steps >= self.cfg.trainer.max_bad_steps:
            raise NonFiniteError(f"{self.bad_steps} non-finite steps in a row (first bad quantity: {bad[0]} "
                                 f"at step {self.step}); stopping (trainer.max_bad_steps)")
        return False

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> dict:
        """eval/<data>/accuracy (greedy), and with data.eval_k = k > 0 pass@k and maj@k of k samples."""
        records = self.data.eval_set()
        if not records:
            return {}
        name, k = self.data.name, int(self.cfg.data.get("eval_k", 0) or 0)
        scores, _ = self._eval_samples(records, 1, greedy=True)
        out = {f"eval/{name}/accuracy": sum(scores) / len(scores)}
        if k > 0:
            scores, answers = self._eval_samples(records, k, greedy=False)
            out[f"eval/{name}/pass@{k}"] = pass_at_k(scores, k)
            if answers is not None:
                out[f"eval/{name}/maj@{k}"] = maj_at_k(answers, scores, k)
        return out

    def _eval_samples(self, records: list[dict], n: int, greedy: bool):
        """Score-term values [len·n] (unscorable = 0) and the reward's answers (None if it has no extractor)."""
        scores, answers, size = [], [], max(1, 512 // n)
        for i in range(0, len(records), size):
            chunk = records[i:i + size]
            out = self.engine.generate([r["prompt"] for r in chunk], n=n, greedy=greedy)
            prompts = [r["prompt"] for r in chunk for _ in range(n)]
            scored = self.reward.score(prompts, out.texts, **self.reward_fields(chunk, out, n))
            scores += [0.0 if not math.isfinite(s) else s for s in scored["score"]]
            if n > 1 and self.reward.can_extract:
                answers += self.reward.answers(out.texts)
        return scores, (answers if n > 1 and self.reward.can_extract else None)

    def reward_fields(self, records: list[dict], out, n: int, train: bool = False) -> dict:
        """Keyword fields of a reward call on ``out`` (n samples per record, contiguous): the records'
        fields but the prompt, and ``completion_ids`` (response tokens up to and including EOS, as TRL
        passes them). A label-free algorithm's training call gets no data fields, only its pseudo-labels."""
        lens = out.response_mask.sum(-1).tolist()
        fields = {"completion_ids": [row[:m] for row, m in zip(out.completion_ids.tolist(), lens)]}
        if train and self.algo.label_free:
            labels = self.algo.pseudo_labels(self.reward.answers(out.texts), n)
            return fields if labels is None else {**fields, "answer": labels}
        keys = dict.fromkeys(k for r in records for k in r if k != "prompt")
        return {**fields, **{k: [r.get(k) for r in records for _ in range(n)] for k in keys}}

    # ------------------------------------------------------------------ checkpoints
    def _lr_lambda(self, i: int) -> float:
        t = self.cfg.trainer
        if t.warmup_steps and i < t.warmup_steps:
            return (i + 1) / t.warmup_steps
        frac = (i - t.warmup_steps) / max(t.steps - t.warmup_steps, 1)
        if t.schedule == "linear":
            return max(0.0, 1 - frac)
        if t.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
        return 1.0

    def save(self) -> Path:
        state = {"step": self.step, "cursor": self.cursor, "optim": self.optim.state_dict(),
                 "sched": self.sched.state_dict(), "algo": self.algo.state_dict(), "rng": rng_state(),
                 "bad_steps": self.bad_steps, "skipped": self.skipped, "first_eval": self.first_eval,
                 "extra": self.extra_state()}
        return self.ckpt.save(self.step, self.model, state)

    def _maybe_resume(self):
        if not self.cfg.trainer.resume:
            return None
        latest = self.ckpt.latest()
        if latest is None:
            self.console.print(f"[rlx] WARNING: trainer.resume=true but {self.ckpt.root} holds no complete "
                               "checkpoint; starting from step 0")
            return None
        state = Checkpointer.load(latest, self.model)
        self.optim.load_state_dict(state["optim"])
        self.sched.load_state_dict(state["sched"])
        self.algo.load_state_dict(state["algo"])
        self.step, self.cursor = state["step"], state["cursor"]
        self.bad_steps, self.skipped, self.first_eval = state["bad_steps"], state["skipped"], state["first_eval"]
        self.load_extra_state(state["extra"])
        set_rng_state(state["rng"])
        self.console.print(f"[rlx] resumed from {latest} (step {self.step})")
        return latest
