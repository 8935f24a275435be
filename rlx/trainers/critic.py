"""Critic support for the online loop: every algorithm that requires ``values`` (PPO, PPO-ptx, VAPO).

The critic is a separate value model (``rlx.models.value_head``) with its own optimizer, initialised
from the reward model or from the policy (``algo.critic_init``; docs/algorithm_notes.md §2.1 "Critic
architecture", §3.2). The online loop calls, per step:

  4b. ``prepare(batch)``  V_old(s_t) [N, T] without gradients, then the algorithm's value targets
                          R̂ (``algo.value_targets``, called before ``algo.advantages``)
  6b. ``update(batch)``   μ epochs over the same mini-batches as the policy; the algorithm's value
                          loss (``algo.value_loss``); ``value/explained_var`` of V_old against R̂

Under torchrun (ddp or fsdp) the critic is a plain module on every rank: each rank computes V_old for its share of
the rows (gathered after) and the value loss's gradient on its share of each mini-batch; the gradients are summed
over the ranks (one all-reduce per mini-batch) before the identical optimizer step on every rank.

For the first ``algo.critic_warmup`` steps only the critic learns (value pretraining, VC-PPO
arXiv:2503.01491 §4.1 / VAPO arXiv:2504.05118 §3.1). Its weights and optimizer state go into every
checkpoint, so resume is exact.
"""

from __future__ import annotations

import math

import torch

from rlx.metrics import MetricAccumulator, explained_variance
from rlx.models.value_head import load_value_model, token_values, value_model_from_policy
from rlx.trainers import minibatch


class Critic:
    def __init__(self, trainer):
        self.trainer = trainer
        a, t = trainer.algo, trainer.cfg.trainer
        self.model = self._build(trainer, a).to(trainer.device).train()
        self.optim = torch.optim.AdamW(self.model.parameters(), lr=a.critic_lr, betas=tuple(t.betas),
                                       weight_decay=t.weight_decay)
        self.warmup = int(a.critic_warmup)

    @staticmethod
    def _build(trainer, a):
        if a.critic_init == "policy":   # under FSDP2 from the policy's full weights (no deep copy of a wrapped module)
            full = (trainer.dist.full_state_dict(trainer.model, every_rank=True) if trainer.dist.strategy == "fsdp"
                    else None)
            return value_model_from_policy(trainer.model, full)
        if a.critic_init == "reward_model":
            if not a.critic_path:
                raise ValueError("algo.critic_init=reward_model needs algo.critic_path (a dir saved by algo=rm; "
                                 "with reward=rm it defaults to reward.path)")
            model, tok = load_value_model(a.critic_path, trainer.cfg.model.dtype)
            if len(tok) != len(trainer.tok):
                raise ValueError(f"critic at {a.critic_path} has a {len(tok)}-token vocabulary, the policy "
                                 f"{len(trainer.tok)}; they must share the tokenizer")
            return model
        raise ValueError(f"algo.critic_init={a.critic_init}: valid: policy, reward_model")

    def policy_frozen(self, step: int) -> bool:
        """True during value pretraining (the first ``critic_warmup`` steps)."""
        return step <= self.warmup

    # ------------------------------------------------------------------ 4b
    @torch.no_grad()
    def prepare(self, batch, algo) -> None:
        batch.values = self._forward_all(batch).masked_fill(~batch.response_mask, 0.0)
        batch.returns = algo.value_targets(batch)

    def _forward_all(self, batch) -> torch.Tensor:
        """V_old of every row; under torchrun each rank runs its contiguous share and the shares are gathered."""
        n, dist = len(batch), self.trainer.dist
        micro = self.trainer.cfg.trainer.micro_batch_size or n
        share = dist.share(n)
        parts = [self._values(batch, slice(i, min(i + micro, share.stop))) for i in range(share.start, share.stop, micro)]
        values = torch.cat(parts) if parts else batch.response_mask.new_zeros(0, batch.T, dtype=torch.float32)
        if not dist.enabled:
            return values
        return torch.cat([v for v in dist.all_gather_object(values.cpu())]).to(self.trainer.device)

    def _values(self, batch, rows) -> torch.Tensor:
        return token_values(self.model, batch.input_ids[rows], batch.attention_mask[rows], batch.T,
                            autocast=self.trainer.autocast)

    # ------------------------------------------------------------------ 6b
    def update(self, batch, algo) -> dict:
        _, micro = minibatch.sizes(self.trainer.cfg, len(batch))
        acc, norms = MetricAccumulator(), []
        dist = self.trainer.dist
        for rows, norm in minibatch.minibatches(self.trainer.cfg, batch.response_mask):
            rows = dist.shard(rows)   # this rank's share (norm stays the mini-batch total); gradients summed below
            loss = sum(self._micro_step(batch, rows[m:m + micro], norm, algo, acc) for m in range(0, len(rows), micro))
            acc.end_minibatch()
            dist.sync_grads(list(self.model.parameters()), every_strategy=True)
            norms.append(self._optimizer_step(loss))
        metrics = acc.result(dist)
        if self.policy_frozen(self.trainer.step):   # value pretraining: the value loss is all that is optimised
            metrics["loss/total"] = metrics["loss/value"]
        metrics["value/explained_var"] = explained_variance(batch.values, batch.returns, batch.response_mask)
        metrics["value/grad_norm"] = sum(norms) / len(norms)
        return metrics

    def _micro_step(self, batch, rows, norm, algo, acc) -> float:
        if len(rows) == 0:
            return 0.0
        mask = batch.response_mask[rows]
        values = self._values(batch, rows)
        loss, m = algo.value_loss(values, batch.values[rows], batch.returns[rows], mask, **norm)
        loss.backward()
        acc.add(m, weight=float(mask.sum()))
        return float(loss.detach())

    def _optimizer_step(self, loss: float) -> float:
        clip = self.trainer.cfg.trainer.grad_clip or math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip))
        if self.trainer.guard(value_loss=loss, value_grad_norm=grad_norm):
            self.optim.step()
        self.optim.zero_grad(set_to_none=True)
        return grad_norm

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {"model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
                "optim": self.optim.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optim.load_state_dict(state["optim"])
