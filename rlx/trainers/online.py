"""The online loop: every policy-gradient algorithm (GRPO, DAPO, GSPO, RLOO, ...) runs here.

One step, numbered as in the code:
  1. take B prompts from the data cursor (first, when the algorithm asks, the reference becomes the policy's copy)
  2. generate G responses each (KV cache, left padding), score them with the reward terms, then the
     algorithm's shaping (``shape_rewards``, e.g. DAPO's overlong penalty)
  3. keep the groups the algorithm wants (dynamic sampling may generate again, up to a bound)
  4. behaviour (old) and reference log-probs, once per batch, without gradients; when the update is strictly
     on-policy (one epoch, one mini-batch) the old ones are the training forward's, detached (no extra forward)
  5. advantages from the algorithm
  6. μ epochs over mini-batches; gradient accumulation over micro-batches, normalised by the
     mini-batch totals so the gradient does not depend on the micro-batch size; where the engine
     recorded its log-probs, their mismatch with the old log-probs is measured per micro-batch and,
     with ``rollout.is_correction``, turned into per-token importance weights for the loss
     (rollout/correction.py)
  7. metrics of the vocabulary
The trainer asks the algorithm (``requires``, group_size, keep, advantages, loss: rlx/algos/base.py); it never
branches on its name.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from rlx.batch import Batch, LossInputs, concat_batches, token_reward_matrix  # noqa: F401 (Batch: re-exported)
from rlx.metrics import MetricAccumulator, advantage_metrics, merged_extra_metrics, merged_rollout_metrics
from rlx.models.logprobs import token_logprobs
from rlx.ops import masked_mean
from rlx.registry import TRAINERS
from rlx.rollout.correction import CORRECTIONS, logp_mismatch
from rlx.runtime import faults, speed
from rlx.trainers import minibatch, reference
from rlx.trainers.base import Trainer


@dataclass(frozen=True)
class Sampler:
    """What ``algo.sample_completions`` works with: ``generate(records, n)`` → a ``Rollout`` of n completions per
    record; the policy ``model`` it samples from (EEPO changes its parameters between calls, then restores them);
    the forward's ``autocast`` (``rlx.models.logprobs.token_logprobs``); the tokenizer's ``pad_id``."""

    generate: Callable
    model: torch.nn.Module
    autocast: object
    pad_id: int


class OnlineTrainer(Trainer):
    def setup(self) -> None:
        from rlx.trainers.critic import Critic
        from rlx.trainers.ptx import PretrainTerm

        needs = self.algo.requires
        self.critic = Critic(self) if "values" in needs else None   # PPO family: a separate value model
        self.ptx = PretrainTerm(self) if "ptx" in needs else None   # PPO-ptx: a pretraining LM term
        self.is_weights = CORRECTIONS[self.cfg.rollout.get("is_correction", "none")]   # None = no correction

    def train_step(self) -> dict:
        t0 = time.perf_counter()
        reference.maybe_refresh(self)   # iterative DPO: π_ref ← π_θ at the steps the algorithm names
        try:
            batch, metrics, select_metrics = self.rollout()                   # 1-3
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
            return {**metrics, **select_metrics, "loss/total": 0.0, "optim/grad_norm": 0.0, "perf/gen_s": t_gen,
                    "perf/train_s": 0.0, "perf/step_s": time.perf_counter() - t0,
                    "optim/lr": self.sched.get_last_lr()[0]}
        on_policy = self.cfg.trainer.update_epochs == 1 and self._mini(len(batch)) == len(batch)
        need_old = not on_policy or "old_logp" in self.algo.requires
        metrics.update(self.reference_logprobs(batch, need_old=need_old))   # 4
        if self.critic is not None:   # 4b: V_old and the value targets (trainers/critic.py)
            self.critic.prepare(batch, self.algo)
        batch.advantages, extras = self.algo.advantages(batch)   # 5 (extras under the algorithm's prefix)
        metrics.update(extras)
        metrics.update(select_metrics)   # the algorithm's sample selection (RAFT: kept_frac), on update steps
        metrics.update(advantage_metrics(batch.advantages, batch.response_mask))
        if self.critic is None or not self.critic.policy_frozen(self.step):   # frozen: value pretraining
            metrics.update(self.update(batch, on_policy))                     # 6
        if self.critic is not None:
            metrics.update(self.critic.update(batch, self.algo))              # 6b
        self.sched.step()
        self.engine.sync_weights(self.model)   # engines holding their own copy of the weights (vLLM)
        t_all = time.perf_counter() - t0
        metrics.update({"optim/lr": self.sched.get_last_lr()[0], "perf/step_s": t_all, "perf/gen_s": t_gen,
                        "perf/train_s": t_all - t_gen})
        return metrics

    @property
    def sampler(self) -> Sampler:
        return Sampler(generate=lambda records, n: self.sample(records, n=n), model=self.model, autocast=self.autocast,
                       pad_id=self.tok.pad_token_id)

    def _mini(self, n: int) -> int:
        return min(self.cfg.trainer.mini_batch_size or n, n)

    # ------------------------------------------------------------------ 1-3
    def rollout(self) -> tuple[Batch, dict, dict]:
        """(batch, rollout metrics, selection metrics): generation rounds of B prompts until ``keep`` has
        accepted B groups; one round unless the algorithm asks for more (``gen_rounds``: dynamic sampling
        refills the batch)."""
        B, G = self.cfg.data.prompts_per_step, self.algo.group_size
        rounds, n_pass, n_kept, n_groups, n_retried, n_retried_kept = [], 0, 0, 0, 0, 0
        max_rounds = self.algo.gen_rounds()
        retry = None   # records the algorithm generates again instead of fresh prompts (GHPO's hinted prompts)
        for _ in range(max(1, max_rounds)):
            batch, raw, keep, records = self._generate_round(B, G, retry)
            n_pass += int(keep.sum())
            n_groups += len(records)
            if retry is not None:
                n_retried, n_retried_kept = n_retried + len(records), n_retried_kept + int(keep.sum())
            keep = keep & (keep.cumsum(0) <= B - n_kept)   # never more than B groups
            n_kept += int(keep.sum())
            rounds.append((batch, raw, keep))
            if n_kept >= B:
                break
            retry = self.algo.retry_records(records, keep)
            if retry is not None and not retry:   # nothing to retry: the batch stays partly filled
                break
        metrics = merged_rollout_metrics([r[1] for r in rounds], G)
        metrics.update(merged_extra_metrics([r[1]["extra_metrics"] for r in rounds]))
        metrics["groups/kept_frac"] = n_pass / n_groups
        if max_rounds > 1:
            metrics[f"{self.algo.name}/gen_rounds"] = float(len(rounds))
            metrics[f"{self.algo.name}/batch_fill"] = n_kept / B
        if self.algo.retries:   # GHPO: how many groups were retried
            metrics[f"{self.algo.name}/retried_groups"] = float(n_retried)
            metrics[f"{self.algo.name}/retried_kept"] = float(n_retried_kept)
        parts, select_metrics = [], {}
        for batch, raw, keep in rounds:
            samples, select_metrics = self.algo.keep_samples(raw["rewards"].view(-1, G))
            rows = keep.repeat_interleave(G) & samples.reshape(-1)
            parts.append(batch if rows.all() else self._select(batch, rows))
        return concat_batches(parts, self.tok.pad_token_id), metrics, select_metrics

    def _generate_round(self, B: int, G: int, retry: list[dict] | None):
        """(batch [n·G], raw rollout data for the metrics, keep [n], the n records): the records the algorithm
        asked to generate again (``retry``), else (None) B fresh prompts."""
        if retry is None:
            retry = self.data.train_batch(self.cursor, B)
            self.cursor += B
        records = retry
        t0 = time.perf_counter()
        # completions (one call, or the algorithm's own schedule: EEPO), or whole episodes with a multi-turn env
        # (independent, or a tree the algorithm grows)
        out = (self.algo.sample_episodes(self.episodes, records, G) if self.episodes
               else self.algo.sample_completions(self.sampler, records, G))
        gen_s = time.perf_counter() - t0
        fields = self.reward_fields(records, out, G, train=True)   # no data fields for label-free algorithms
        prompts = [r["prompt"] for r in records for _ in range(G)]
        scored = self.reward.score(prompts, out.texts, **fields)
        if out.reward_scale is not None:   # an episode's factor on its reward (env=retry's per-turn discount)
            scored["total"] = [t * float(f) for t, f in zip(scored["total"], out.reward_scale)]
        self.last_scored = (prompts, out.texts, scored)   # for Trainer.record_samples (rlx.track.samples)
        # rewards and their bookkeeping live on the CPU (the reward functions return Python numbers); the engine's
        # masks come from the generation device, so they are brought over once here (a no-op on a CPU run)
        gen_mask, truncated = out.response_mask.cpu(), out.truncated.cpu()
        shaped, shape_metrics = self.algo.shape_rewards(torch.tensor(scored["total"], dtype=torch.float32),
                                                        gen_mask, self.cfg.rollout.max_new_tokens)
        scored["total"] = shaped.tolist()
        raw = dict(scored, response_mask=gen_mask, truncated=truncated, gen_s=gen_s,
                   gen_tokens=out.gen_tokens, shape_metrics=shape_metrics, extra_metrics=out.extra_metrics)
        rewards = shaped.clone()
        failed = torch.tensor(scored["failed"])
        resp_mask = gen_mask & ~failed.unsqueeze(-1)   # unscorable samples never train
        if failed.any():
            g = rewards.view(-1, G)
            fill = torch.nanmean(g, -1, keepdim=True).nan_to_num(0.0).expand_as(g).reshape(-1)
            rewards = torch.where(failed, fill, rewards)
        ids = torch.cat([out.prompt_ids, out.completion_ids], 1)
        am = torch.cat([out.prompt_mask, (out.attention if out.attention is not None else out.response_mask.long())], 1)
        batch = Batch(ids.to(self.device), am.to(self.device), resp_mask.to(self.device), rewards.to(self.device))
        batch.token_rewards = token_reward_matrix(scored.get("token_rewards"), batch.T, self.device)   # reward=prm
        if out.turn is not None:
            batch.turn, batch.turn_state = out.turn.to(self.device), out.turn_state.to(self.device)
        if out.tree is not None:
            batch.tree = out.tree.to(self.device)
        if out.engine_logp is not None:
            batch.engine_logp = out.engine_logp.to(self.device)
        if "greedy_baseline" in self.algo.requires:
            batch.greedy_rewards = self._greedy_rewards(records, G)
        raw["rewards"] = rewards
        return batch, raw, self.algo.keep(rewards.view(-1, G)), records

    def _greedy_rewards(self, records: list[dict], G: int) -> torch.Tensor:
        """Total reward [B*G] of one greedy decode per prompt, repeated for its G samples (NaN = unscorable)."""
        prompts = [r["prompt"] for r in records]
        out = self.sample(records, n=1, greedy=True)
        fields = self.reward_fields(records, out, 1, train=True)   # the training reward's fields (completion_ids, ...)
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
        _, micro = minibatch.sizes(self.cfg, len(batch))
        acc, norms = MetricAccumulator(), []
        for rows, norm in minibatch.minibatches(self.cfg, batch.response_mask):
            rows = self.dist.shard(rows)   # this rank's share; norm stays the mini-batch total
            losses = [self._micro_step(batch, rows[m:m + micro], norm, on_policy, acc)
                      for m in range(0, len(rows), micro)]
            if self.ptx is not None:   # γ·∇L_ptx joins the same optimizer step (trainers/ptx.py)
                acc.add(self.ptx.backward(), weight=1.0)
            acc.end_minibatch()
            norms.append(self._optimizer_step(sum(losses)))
        metrics = acc.result(self.dist)
        metrics["optim/grad_norm"] = sum(norms) / len(norms)
        return metrics

    def _micro_step(self, batch: Batch, rows, norm: dict, on_policy: bool, acc: MetricAccumulator) -> float:
        bonus = "entropy" in self.algo.requires   # an entropy bonus needs H_t with gradient
        logp, ent = token_logprobs(self.model, batch.input_ids[rows], batch.attention_mask[rows], batch.T,
                                   with_entropy=on_policy or bonus, autocast=self.autocast)
        mask = batch.response_mask[rows]
        old = logp.detach() if on_policy else batch.old_logp[rows]
        ref = batch.ref_logp[rows] if batch.ref_logp is not None else None
        is_weights, engine_m = self._engine_mismatch(batch, rows, old, mask)   # rollout.is_correction weights
        mb = LossInputs(old_logp=old, advantages=batch.advantages[rows], response_mask=mask,
                        rewards=batch.rewards[rows], ref_logp=ref, entropy=ent if bonus else None,
                        is_weights=is_weights, **norm)
        if faults.active("nan_logp", self.step):   # RLX_FAULT=nan_logp@N: as from a forward that overflowed
            logp = logp * math.nan
        loss, m = self.algo.loss(logp, mb)
        m.update(engine_m)
        if on_policy:
            m["policy/entropy"] = masked_mean(ent.detach(), mask)
        (loss * self.dist.loss_scale).backward()
        acc.add(m, weight=float(mask.sum()))
        return float(loss.detach())

    def _engine_mismatch(self, batch: Batch, rows, old, mask):
        """(importance weights [n, T] or None, metrics): rollout/logp_diff(_max) of the engine's log-probs against
        the old ones where the engine recorded them, and the weights of rollout.is_correction when it is on."""
        if batch.engine_logp is None:
            return None, {}
        engine = batch.engine_logp[rows]
        metrics = logp_mismatch(old, engine, mask)
        if self.is_weights is None:
            return None, metrics
        weights, m = self.is_weights(old, engine, mask, is_cap=float(self.cfg.rollout.is_cap))
        return weights, {**metrics, **m}

    def _optimizer_step(self, loss: float) -> float:
        clip = self.cfg.trainer.grad_clip or math.inf
        self.dist.sync_grads(self.trainable_parameters())
        grad_norm = speed.clip_grad_norm(self.trainable_parameters(), clip)
        if self.guard(loss=loss, grad_norm=grad_norm):
            self.optim.step()
        self.optim.zero_grad(set_to_none=True)
        return grad_norm

    def extra_state(self) -> dict:
        parts = {"critic": self.critic, "ptx": self.ptx}
        return {**reference.state(self), **{k: v.state_dict() for k, v in parts.items() if v is not None}}

    def load_extra_state(self, state: dict) -> None:
        reference.load(self, state)
        for k, v in {"critic": self.critic, "ptx": self.ptx}.items():
            if v is not None:
                v.load_state_dict(state[k])


@TRAINERS.register("online")
def build_online(cfg, run_dir, **kw) -> OnlineTrainer:
    return OnlineTrainer(cfg, run_dir, **kw)
