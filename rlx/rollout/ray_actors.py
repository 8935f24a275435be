"""``rollout.engine=ray``: generation in Ray actors, each holding a copy of the policy and rlx's HF engine.

The trainer's ``generate(prompts, n, keys=...)`` splits the prompts into ``rollout.ray_actors`` contiguous shares,
one per actor; the actors decode their shares at the same time (one CPU each by default, ``rollout.ray_cpus``) and
the shares come back as one ``Rollout`` in order (``concat_rollouts``). Every prompt samples from its own random
stream (rlx/rollout/streams.py), so the tokens are the ones the in-process engine picks (tested). After each
update the trainer calls ``sync_weights``: the policy's state dict is put once in Ray's object store and every
actor loads it, so the actors always sample from the current policy. The driver joins the cluster ``ray.init()``
reaches (``RAY_ADDRESS``), else starts a local instance of ``ray_actors`` × ``ray_cpus`` CPUs. Single-turn
completions only (multi-turn envs generate from token ids in the trainer's process: rollout.engine=hf).
"""

from __future__ import annotations

import torch

from rlx.registry import ENGINES
from rlx.rollout.base import Rollout, RolloutEngine, concat_rollouts


class _Worker:
    """One actor: a CPU copy of the policy and an ``HFEngine`` over it (one torch thread unless told)."""

    def __init__(self, model, tokenizer, cfg, threads: int):
        from rlx.rollout.hf import HFEngine

        torch.set_num_threads(threads)
        self.model = model.eval()
        self.engine = HFEngine(self.model, tokenizer, cfg)

    def generate(self, prompts, n, greedy, keys) -> Rollout:
        return self.engine.generate(prompts, n=n, greedy=greedy, keys=keys)

    def load(self, state: dict) -> None:
        self.model.load_state_dict(state)


class RayEngine(RolloutEngine):
    def __init__(self, model, tokenizer, cfg, actors: int = 2, cpus: float = 1.0):
        import ray

        if actors < 1:
            raise ValueError(f"rollout.ray_actors={actors}: must be >= 1")
        if not ray.is_initialized():
            ray.init(num_cpus=None if _has_address() else int(actors * cpus), include_dashboard=False,
                     log_to_driver=False)
        self.ray, self.tok, self.n_actors = ray, tokenizer, actors
        worker = ray.remote(num_cpus=cpus)(_Worker)
        cpu_model = _cpu_copy(model)
        self.actors = [worker.remote(cpu_model, tokenizer, cfg, max(1, int(cpus))) for _ in range(actors)]

    def generate(self, prompts: list[str], n: int = 1, greedy: bool = False, keys: list[int] | None = None) -> Rollout:
        k = min(self.n_actors, len(prompts))
        bounds = [round(i * len(prompts) / k) for i in range(k + 1)]
        refs = [a.generate.remote(prompts[lo:hi], n, greedy, None if keys is None else keys[lo:hi])
                for a, lo, hi in zip(self.actors, bounds, bounds[1:])]
        return concat_rollouts(self.ray.get(refs), self.tok.pad_token_id)

    def sync_weights(self, model) -> None:
        state = self.ray.put({k: v.detach().cpu() for k, v in model.state_dict().items()})
        self.ray.get([a.load.remote(state) for a in self.actors])


def _has_address() -> bool:
    import os

    return bool(os.environ.get("RAY_ADDRESS"))


def _cpu_copy(model):
    import copy

    return copy.deepcopy(model).cpu() if next(model.parameters()).device.type != "cpu" else model


@ENGINES.register("ray")
def build_ray(cfg, model, tokenizer, device="cpu", autocast=False) -> RayEngine:
    return RayEngine(model, tokenizer, cfg, actors=int(cfg.get("ray_actors", 2)), cpus=float(cfg.get("ray_cpus", 1.0)))
