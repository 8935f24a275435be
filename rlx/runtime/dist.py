"""Multi-process training under ``torchrun``: ``hardware=ddp`` and ``hardware=fsdp`` (FSDP2).

Rollouts (``rollout.shard``, on by default): each rank generates, scores and computes the log-probs of its
own B/world prompts of a round, from per-prompt random streams (rlx/rollout/streams.py), and the ranks then
exchange them (``all_gather_object``) so that every rank holds the single process's batch
(rlx/trainers/rollouts.py); with ``rollout.shard=false`` every rank generates the whole batch, as the same
seed makes it identical. Either way the run equals a single process with the same global batch (to float
rounding). Training: each mini-batch is split into
``world`` contiguous shards; the losses use the mini-batch totals as normalisers, so summing the
ranks' gradients (all-reduce SUM for DDP; loss × world under FSDP2's averaging reduce-scatter)
gives exactly the single-process gradient. Only rank 0 logs, writes checkpoints and talks to
trackers; checkpoints hold full state dicts that load on one process.
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist


class Dist:
    def __init__(self, strategy: str = "none", backend: str = "gloo", timeout_s: float = 600.0):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.strategy = strategy if self.world > 1 else "none"
        self.backend = backend
        if self.world > 1 and backend == "nccl" and torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))   # "cuda" is then this rank's GPU
        if self.world > 1 and not dist.is_initialized():
            # a collective that waits longer than timeout_s (a rank died) raises on the others: they exit non-zero
            dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))

    @classmethod
    def from_config(cls, hw) -> "Dist":
        return cls(hw.get("strategy", "none"), hw.get("backend", "gloo"), float(hw.get("timeout_s", 600.0)))

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def loss_scale(self) -> float:
        """FSDP2 averages gradients over ranks; our losses are already normalised globally."""
        return float(self.world) if self.strategy == "fsdp" else 1.0

    def share(self, n: int) -> slice:
        """This rank's contiguous share of n items (all of them in one process); shares differ by at most one."""
        return self.share_of(n, self.rank) if self.enabled else slice(0, n)

    def share_of(self, n: int, rank: int) -> slice:
        """Rank ``rank``'s contiguous share of n items: the first n mod world ranks take one more."""
        q, r = divmod(n, self.world)
        lo = rank * q + min(rank, r)
        return slice(lo, lo + q + (rank < r))

    def sum_int(self, n: int) -> int:
        """n summed over the ranks (one all-reduce)."""
        if not self.enabled:
            return n
        t = torch.tensor([n], dtype=torch.long, device="cuda" if self.backend == "nccl" else "cpu")
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return int(t.item())

    def all_gather_object(self, obj) -> list:
        """Every rank's ``obj`` (picklable), in rank order ([obj] in one process)."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def shard(self, rows: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous share of ``rows`` (all rows in one process)."""
        if not self.enabled:
            return rows
        return rows.tensor_split(self.world)[self.rank]

    def wrap(self, model):
        if self.strategy != "fsdp":
            return model
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cpu" if not torch.cuda.is_available() else "cuda", (self.world,))
        inner = getattr(model, "model", model)
        for layer in getattr(inner, "layers", []):
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model

    def sync_grads(self, params, every_strategy: bool = False) -> None:
        """DDP (or any strategy under torchrun with ``every_strategy``: a module replicated outside FSDP, the critic):
        one flattened all-reduce (SUM) of every gradient. A rank that ran no rows contributes zeros."""
        if not self.enabled or (self.strategy != "ddp" and not every_strategy):
            return
        if every_strategy:
            for p in params:
                if p.grad is None and p.requires_grad:
                    p.grad = torch.zeros_like(p)
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        i = 0
        for g in grads:
            g.copy_(flat[i:i + g.numel()].view_as(g))
            i += g.numel()

    def reduce_metrics(self, sums: dict, weights: dict, ext: dict, losses: dict):
        """Combine a MetricAccumulator's parts across ranks (sums, extremes, loss partial sums)."""
        if not self.enabled:
            return sums, weights, ext, losses
        keys = sorted(sums)
        lkeys = sorted(losses)
        t = torch.tensor([sums[k] for k in keys] + [weights[k] for k in keys] + [losses[k] for k in lkeys],
                         dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        n = len(keys)
        sums = dict(zip(keys, t[:n].tolist()))
        weights = dict(zip(keys, t[n:2 * n].tolist()))
        losses = dict(zip(lkeys, t[2 * n:].tolist()))
        out_ext = {}
        for k in sorted(ext):
            v = torch.tensor([ext[k]], dtype=torch.float64)
            dist.all_reduce(v, op=dist.ReduceOp.MAX if k.endswith("_max") else dist.ReduceOp.MIN)
            out_ext[k] = v.item()
        return sums, weights, out_ext, losses

    def full_state_dict(self, model, every_rank: bool = False) -> dict:
        """The model's whole state dict: on rank 0 (on the CPU) for a checkpoint, or on ``every_rank`` (FSDP2)."""
        if self.strategy != "fsdp":
            return model.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        opts = StateDictOptions(full_state_dict=True, cpu_offload=not every_rank)   # offload: rank 0's only
        return get_model_state_dict(model, options=opts)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
