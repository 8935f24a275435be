"""The online loop: every policy-gradient algorithm (GRPO, DAPO, GSPO, RLOO, ...) runs here.

One step, numbered as in the code:
  1. take B prompts from the data cursor
  2. generate G responses each (KV cache, left padding), score them with the reward terms
  3. keep the groups the algorithm wants (dynamic sampling may generate again, up to a bound)
  4. behaviour (old) and reference log-probs, once per batch, without gradients; when the update is
     strictly on-policy (one epoch, one mini-batch) the old log-probs are the detached log-probs of
     the training forward itself and no extra forward runs
  5. advantages from the algorithm
  6. μ epochs over mini-batches; gradient accumulation over micro-batches, normalised by the
     mini-batch totals so the gradient does not depend on the micro-batch size
  7. metrics of the vocabulary
The trainer asks the algorithm (needs_ref, group_size, keep, advantages, loss); it never branches
on its name.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from rlx import faults
from rlx.metrics import MetricAccumulator, advantage_metrics, rollout_metrics
from rlx.ops import logprobs_from_logits, masked_mean, position_ids_from_mask
from rlx.registry import TRAINERS
from rlx.trainers.base import Trainer


@dataclass
class Batch:
    """N samples: token ids [N, P+T], attention mask, response mask [N, T] (bool), rewards [N], ..."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    rewards: torch.Tensor
    old_logp: torch.Tensor | None = None
    ref_logp: torch.Tensor | None = None
    advantages: torch.Tensor | None = None
    greedy_rewards: torch.Tensor | None = None   # [N] reward of the prompt's greedy decode (needs_greedy_baseline)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def T(self) -> int:
        return self.response_mask.shape[1]


def token_logprobs(model, input_ids, attention_mask, T: int, with_entropy=False, autocast=False):
    """Log-probs [n, T] of the last T tokens (and their entropies), trimming all-pad columns first.

    Left columns that are padding in every row and right columns past every response are cut before
    the forward; positions come from the attention mask so the cut does not change them.
    """
    n = input_ids.shape[0]
    real = attention_mask.bool().any(0)
    first = int(real.nonzero()[0]) if real.any() else 0
    resp_real = attention_mask[:, -T:].bool().any(0)
    t_keep = int(resp_real.nonzero()[-1]) + 1 if resp_real.any() else 1
    end = input_ids.shape[1] - T + t_keep
    ids, am = input_ids[:, first:end], attention_mask[:, first:end]
    with torch.autocast(ids.device.type, torch.bfloat16, enabled=autocast):
        logits = model(input_ids=ids, attention_mask=am, position_ids=position_ids_from_mask(am),
                       logits_to_keep=t_keep + 1, use_cache=False).logits[:, :-1]
    logp, ent = logprobs_from_logits(logits, ids[:, -t_keep:], with_entropy)
    if t_keep < T:
        pad = torch.zeros(n, T - t_keep, dtype=logp.dtype, device=logp.device)
        logp = torch.cat([logp, pad], 1)
        ent = torch.cat([ent, pad], 1) if ent is not None else None
    return logp, ent


class OnlineTrainer(Trainer):
    def train_step(self) -> dict:
        t0 = time.perf_counter()
        try:
            batch, metrics = self.rollout()                                   # 1-3
        except RuntimeError as e:   # torch.multinomial on non-finite probabilities: the policy overflowed
            if "probability tensor contains" not in str(e):
                raise
            self.guard(logits=math.nan)   # a bad step with no update; the run stops after max_bad_steps
            self.sched.step()
            return {"optim/lr": self.sched.get_last_lr()[0], "perf/step_s": time.perf_counter() - t0}
        t_gen = time.perf_counter() - t0
        # no update this step when nothing was kept (every group filtered) or no reward is finite (every
        # sample failed to score, or a term's value overflowed the weighted sum): guard counts the latter
        if len(batch) == 0 or not self.guard(reward=metrics.get("reward/mean", 0.0)):
            self.sched.step()
            return {**metrics, "loss/total": 0.0, "optim/grad_norm": 0.0, "perf/gen_s": t_gen,
                    "perf/train_s": 0.0, "perf/step_s": time.perf_counter() - t0,
                    "optim/lr": self.sched.get_last_lr()[0]}
        on_policy = self.cfg.trainer.update_epochs == 1 and self._mini(len(batch)) == len(batch)
        need_old = not on_policy or self.algo.needs_old_logp
        metrics.update(self.reference_logprobs(batch, need_old=need_old))   # 4
        batch.advantages = self.algo.advantages(batch.rewards, batch.response_mask, batch=batch,
                                                metrics=metrics)   # 5 (the algorithm may add its extras)
        metrics.update(advantage_metrics(batch.advantages, batch.response_mask))
        metrics.update(self.update(batch, on_policy))                     # 6
        self.sched.step()
        t_all = time.perf_counter() - t0
        metrics.update({"optim/lr": self.sched.get_last_lr()[0], "perf/step_s": t_all, "perf/gen_s": t_gen,
                        "perf/train_s": t_all - t_gen})
        return metrics

    def _mini(self, n: int) -> int:
        return min(self.cfg.trainer.mini_batch_size or n, n)

    # ------------------------------------------------------------------ 1-3
    def rollout(self) -> tuple[Batch, dict]:
        B, G = self.cfg.data.prompts_per_step, self.algo.group_size
        records = self.data.train_batch(self.cursor, B)
        self.cursor += B
        t0 = time.perf_counter()
        out = self.engine.generate([r["prompt"] for r in records], n=G)
        gen_s = time.perf_counter() - t0
        fields = self.reward_fields(records, out, G, train=True)   # no data fields for label-free algorithms
        prompts = [r["prompt"] for r in records for _ in range(G)]
        scored = self.reward.score(prompts, out.texts, **fields)
        metrics = rollout_metrics(scored["total"], scored["score"], scored["terms"], scored["failed"],
                                  out.response_mask, out.truncated, G)
        metrics["perf/tokens_per_s"] = out.gen_tokens / max(gen_s, 1e-9)
        rewards = torch.tensor(scored["total"], dtype=torch.float32)
        failed = torch.tensor(scored["failed"])
        resp_mask = out.response_mask & ~failed.unsqueeze(-1)   # unscorable samples never train
        if failed.any():
            g = rewards.view(-1, G)
            fill = torch.nanmean(g, -1, keepdim=True).nan_to_num(0.0).expand_as(g).reshape(-1)
            rewards = torch.where(failed, fill, rewards)
        ids = torch.cat([out.prompt_ids, out.completion_ids], 1)
        am = torch.cat([out.prompt_mask, out.response_mask.long()], 1)
        batch = Batch(ids, am, resp_mask.to(self.device), rewards.to(self.device))
        if self.algo.needs_greedy_baseline:
            batch.greedy_rewards = self._greedy_rewards(records, G)
        keep = self.algo.keep(rewards.view(-1, G))
        metrics["groups/kept_frac"] = keep.float().mean().item()
        rows = keep.repeat_interleave(G) & self.algo.keep_samples(rewards.view(-1, G)).reshape(-1)
        if not rows.all():
            batch = self._select(batch, rows)
        return batch, metrics

    def _greedy_rewards(self, records: list[dict], G: int) -> torch.Tensor:
        """Total reward [B*G] of one greedy decode per prompt, repeated for its G samples (NaN = unscorable)."""
        prompts = [r["prompt"] for r in records]
        out = self.engine.generate(prompts, n=1, greedy=True)
        fields = {k: [r[k] for r in records] for k in records[0] if k != "prompt"}
        total = self.reward.score(prompts, out.texts, **fields)["total"]
        return torch.tensor(total, dtype=torch.float32).repeat_interleave(G).to(self.device)

    @staticmethod
    def _select(batch: Batch, rows: torch.Tensor) -> Batch:
        return Batch(**{k: (v[rows] if isinstance(v, torch.Tensor) else v) for k, v in vars(batch).items()})

    # ------------------------------------------------------------------ 4
    @torch.no_grad()
    def reference_logprobs(self, batch: Batch, need_old: bool) -> dict:
        metrics = {}
        if self.ref is not None:
            batch.ref_logp = self._forward_all(self.ref, batch)[0]
        if need_old:
            batch.old_logp, ent = self._forward_all(self.model, batch, with_entropy=True)
            metrics["policy/entropy"] = masked_mean(ent, batch.response_mask).item()
        return metrics

    def _forward_all(self, model, batch: Batch, with_entropy=False):
        micro = self.cfg.trainer.micro_batch_size or len(batch)
        outs = [token_logprobs(model, batch.input_ids[i:i + micro], batch.attention_mask[i:i + micro], batch.T,
                               with_entropy, self.autocast) for i in range(0, len(batch), micro)]
        logp = torch.cat([o[0] for o in outs])
        ent = torch.cat([o[1] for o in outs]) if with_entropy else None
        return logp, ent

    # ------------------------------------------------------------------ 6
    def update(self, batch: Batch, on_policy: bool) -> dict:
        t = self.cfg.trainer
        n, mini = len(batch), self._mini(len(batch))
        micro = min(t.micro_batch_size or mini, mini)
        acc, norms = MetricAccumulator(), []
        for _ in range(t.update_epochs):
            order = torch.randperm(n) if n > mini else torch.arange(n)
            for s in range(0, n, mini):
                rows = order[s:s + mini]
                norm = {"num_tokens": batch.response_mask[rows].sum(), "num_seqs": len(rows), "max_len": batch.T}
                losses = [self._micro_step(batch, rows[m:m + micro], norm, on_policy, acc)
                          for m in range(0, len(rows), micro)]
                acc.end_minibatch()
                norms.append(self._optimizer_step(sum(losses)))
        metrics = acc.result()
        metrics["optim/grad_norm"] = sum(norms) / len(norms)
        return metrics

    def _micro_step(self, batch: Batch, rows, norm: dict, on_policy: bool, acc: MetricAccumulator) -> float:
        logp, ent = token_logprobs(self.model, batch.input_ids[rows], batch.attention_mask[rows], batch.T,
                                   with_entropy=on_policy, autocast=self.autocast)
        mask = batch.response_mask[rows]
        old = logp.detach() if on_policy else batch.old_logp[rows]
        ref = batch.ref_logp[rows] if batch.ref_logp is not None else None
        if faults.active("nan_logp", self.step):   # RLX_FAULT=nan_logp@N: as from a forward that overflowed
            logp = logp * math.nan
        loss, m = self.algo.loss(logp, old, batch.advantages[rows], mask, ref, **norm)
        if on_policy:
            m["policy/entropy"] = masked_mean(ent.detach(), mask)
        loss.backward()
        acc.add(m, weight=float(mask.sum()))
        return float(loss.detach())

    def _optimizer_step(self, loss: float) -> float:
        clip = self.cfg.trainer.grad_clip or math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.trainable_parameters(), clip))
        if self.guard(loss=loss, grad_norm=grad_norm):
            self.optim.step()
        self.optim.zero_grad(set_to_none=True)
        return grad_norm


@TRAINERS.register("online")
def build_online(cfg, run_dir, **kw) -> OnlineTrainer:
    return OnlineTrainer(cfg, run_dir, **kw)
