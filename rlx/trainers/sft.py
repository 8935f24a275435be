"""Supervised fine-tuning on (prompt, completion) records: ``algo=sft`` runs, and the embedded
model's warm start (``warm_start``), which stops at a dev-accuracy target (docs/calibration.md §2.3:
SFT has a sharp seed-dependent phase transition, so a fixed step count is fragile)."""

from __future__ import annotations

import time

import torch
from omegaconf import OmegaConf

from rlx.algos.sft import sft_loss
from rlx.models.encode import encode_episodes, encode_sft
from rlx.models.logprobs import token_logprobs
from rlx.registry import TRAINERS
from rlx.trainers.base import Trainer


def sft_update(model, tok, optim, records, clip=1.0, loss_agg_mode="token_mean", autocast=False) -> dict:
    ids, am, mask, T = encode_sft(tok, records, next(model.parameters()).device)
    logp, _ = token_logprobs(model, ids, am, T, autocast=autocast)
    loss, metrics = sft_loss(logp, mask, loss_agg_mode)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    return {"loss": loss, "grad_norm": grad_norm, **metrics}


def greedy_accuracy(engine, records, is_correct=None) -> float:
    """Share of greedy completions that are correct: ``is_correct(text, record)`` (a task's own reading, e.g.
    data=sums' answer after '>'), else the stripped text equal to the record's answer."""
    out = engine.generate([r["prompt"] for r in records], n=1, greedy=True)
    ok = is_correct or (lambda t, r: t.strip() == r["answer"])
    return sum(bool(ok(t, r)) for t, r in zip(out.texts, records)) / len(records)


def warm_start(model, tok, task, w, log=print) -> dict:
    """SFT until greedy dev accuracy >= ``w.dev_target`` (checked every ``w.check_every`` steps)."""
    from rlx.rollout.hf import HFEngine

    torch.manual_seed(w.seed)
    engine = HFEngine(model, tok, OmegaConf.create({"max_new_tokens": task.max_completion_tokens(),
                                                    "temperature": 1.0, "top_k": 0, "top_p": 1.0}))
    optim = torch.optim.AdamW(model.parameters(), lr=w.lr, betas=(0.9, 0.98), weight_decay=0.0, fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda i: min(1.0, (i + 1) / 20))
    model.train()
    t0, acc, step = time.perf_counter(), 0.0, 0
    for step in range(1, w.max_steps + 1):
        sft_update(model, tok, optim, task.train_batch((step - 1) * w.batch_size, w.batch_size))
        optim.step()
        optim.zero_grad(set_to_none=True)
        sched.step()
        if step % w.check_every == 0:
            acc = greedy_accuracy(engine, task.dev_set(), getattr(task, "is_correct", None))
            if acc >= w.dev_target:
                break
    eval_acc = greedy_accuracy(engine, task.eval_set(), getattr(task, "is_correct", None))
    log(f"[rlx] warm start: {step} SFT steps, {time.perf_counter() - t0:.1f} s, dev {acc:.3f}, eval {eval_acc:.3f}")
    return {"sft_steps": step, "dev_accuracy": acc, "eval_accuracy": eval_acc}


def episode_accuracy(runner, records) -> float:
    """Share of greedy episodes whose final turn equals the record's answer."""
    out = runner.run(records, n=1, greedy=True)
    return sum(t.strip() == r["answer"] for t, r in zip(out.texts, records)) / len(records)


def env_warm_start(model, tok, task, env, w, log=print) -> dict:
    """SFT on ``env``'s demonstrations of ``task``'s training records (``Env.demo``: only the trained turns carry
    the loss) until the greedy episode accuracy on the dev set reaches ``w.dev_target`` (null: ``w.max_steps`` steps)."""
    from rlx.rollout.episodes import EpisodeRunner
    from rlx.rollout.hf import HFEngine

    torch.manual_seed(w.seed)
    turn_tokens = max(len(tok(seg[0], add_special_tokens=False)["input_ids"])
                      for r in task.dev_set()[:50] for seg in env.demo(r) if seg[1]) + 2
    engine = HFEngine(model, tok, OmegaConf.create({"max_new_tokens": turn_tokens, "temperature": 1.0,
                                                    "top_k": 0, "top_p": 1.0}))
    runner = EpisodeRunner(env, engine, tok, turn_tokens)
    optim = torch.optim.AdamW(model.parameters(), lr=w.lr, betas=(0.9, 0.98), weight_decay=0.0, fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda i: min(1.0, (i + 1) / 20))
    model.train()
    t0, acc, step = time.perf_counter(), 0.0, 0
    for step in range(1, w.max_steps + 1):
        records = task.train_batch((step - 1) * w.batch_size, w.batch_size)
        ids, am, mask, T = encode_episodes(tok, [r["prompt"] for r in records], [env.demo(r) for r in records])
        logp, _ = token_logprobs(model, ids, am, T)
        loss, _ = sft_loss(logp, mask, "token_mean")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        optim.zero_grad(set_to_none=True)
        sched.step()
        if w.dev_target is not None and step % w.check_every == 0:   # null: all max_steps
            acc = episode_accuracy(runner, task.dev_set())
            if acc >= w.dev_target:
                break
    acc = episode_accuracy(runner, task.dev_set()) if w.dev_target is None else acc
    eval_acc = episode_accuracy(runner, task.eval_set())
    log(f"[rlx] warm start on env={env.name}: {step} SFT steps, {time.perf_counter() - t0:.1f} s, dev {acc:.3f}, "
        f"eval {eval_acc:.3f}")
    return {"sft_steps": step, "dev_accuracy": acc, "eval_accuracy": eval_acc}


class SFTTrainer(Trainer):
    """``algo=sft``: SFT on the data set's (prompt, completion) records, with the same loop as RL."""

    def train_step(self) -> dict:
        t0 = time.perf_counter()
        bs = self.algo.batch_size
        records = self.data.train_batch(self.cursor, bs)
        self.cursor += bs
        out = sft_update(self.model, self.tok, self.optim, records, self.cfg.trainer.grad_clip or float("inf"),
                         self.algo.loss_agg_mode, self.autocast)
        if self.guard(loss=out["loss"], grad_norm=out["grad_norm"]):
            self.optim.step()
        self.optim.zero_grad(set_to_none=True)
        self.sched.step()
        a = self.algo
        if a.dev_target > 0 and self.step % a.check_every == 0 and self.data.dev_set():
            self.should_stop = greedy_accuracy(self.engine, self.data.dev_set()) >= a.dev_target
        return {"loss/total": float(out["loss"]), "optim/grad_norm": float(out["grad_norm"]),
                "optim/lr": self.sched.get_last_lr()[0], "perf/step_s": time.perf_counter() - t0}


@TRAINERS.register("sft")
def build_sft_trainer(cfg, run_dir, **kw) -> SFTTrainer:
    return SFTTrainer(cfg, run_dir, **kw)
