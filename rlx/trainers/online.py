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
Steps 1-3 (generation rounds, scoring, sharded rollouts under torchrun) are ``RolloutRounds``
(rlx/trainers/rollouts.py). The trainer asks the algorithm (``requires``, group_size, keep, advantages, loss:
rlx/algos/base.py); it never branches on its name.
"""

from __future__ import annotations

import math
import time

import torch

from rlx.batch import Batch, LossInputs
from rlx.metrics import MetricAccumulator, advantage_metrics
from rlx.models.logprobs import token_logprobs
from rlx.ops import masked_mean
from rlx.registry import TRAINERS
from rlx.rollout.correction import CORRECTIONS, logp_mismatch
from rlx.runtime import faults, speed
from rlx.trainers import minibatch, reference
from rlx.trainers.base import Trainer
from rlx.trainers.rollouts import RolloutRounds


class OnlineTrainer(RolloutRounds, Trainer):
    def setup(self) -> None:
        from rlx.trainers.critic import Critic
        from rlx.trainers.ptx import PretrainTerm

        needs = self.algo.requires
        self.critic = Critic(self) if "values" in needs else None   # PPO family: a separate value model
        self.ptx = PretrainTerm(self) if "ptx" in needs else None   # PPO-ptx: a pretraining LM term
        self.is_weights = CORRECTIONS[self.cfg.rollout.get("is_correction", "none")]   # None = no correction
        if self.sharded and self.dist.strategy == "fsdp" and hasattr(self.engine, "alive_sum"):
            self.engine.alive_sum = self.dist.sum_int   # every rank decodes while any rank has a row left

    def train_step(self) -> dict:
        t0 = time.perf_counter()
        faults.kill_if("kill_rank", self.step, str(self.dist.rank))   # RLX_FAULT=kill_rank@N:<rank>: a rank dies
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

    def _mini(self, n: int) -> int:
        return min(self.cfg.trainer.mini_batch_size or n, n)

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
        """(log-probs [N, T], entropies or None) of the whole batch, in micro-batches; with sharded rollouts each
        rank runs its contiguous share of the rows and the shares are gathered."""
        n = len(batch)
        micro = self.cfg.trainer.micro_batch_size or n
        share = self._logp_share(n, micro)
        outs = [token_logprobs(model, batch.input_ids[i:min(i + micro, share.stop)],
                               batch.attention_mask[i:min(i + micro, share.stop)], batch.T, with_entropy,
                               self.autocast) for i in range(share.start, share.stop, micro)]
        empty = batch.response_mask.new_zeros(0, batch.T, dtype=torch.float32)
        logp = torch.cat([o[0] for o in outs]) if outs else empty
        ent = (torch.cat([o[1] for o in outs]) if outs else empty) if with_entropy else None
        if share.stop - share.start == n:
            return logp, ent
        parts = self.dist.all_gather_object((logp.cpu(), None if ent is None else ent.cpu()))
        logp = torch.cat([p[0] for p in parts]).to(self.device)
        return logp, (torch.cat([p[1] for p in parts]).to(self.device) if with_entropy else None)

    def _logp_share(self, n: int, micro: int) -> slice:
        """The rows this rank's log-prob passes run: its share with sharded rollouts, else all. Under FSDP every
        rank must run as many forwards as the others, so unequal micro-batch counts (a batch that ``keep`` left
        uneven) fall back to all rows."""
        if not self.sharded:
            return slice(0, n)
        shares = [self.dist.share_of(n, r) for r in range(self.dist.world)]
        counts = {-(-(s.stop - s.start) // micro) for s in shares}
        if self.dist.strategy == "fsdp" and len(counts) > 1:
            return slice(0, n)
        return self.dist.share(n)

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
