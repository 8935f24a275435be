"""What a trainer may ask an algorithm. Trainers never branch on an algorithm's name.

An online algorithm answers: which trainer runs it (``trainer``), whether it needs a reference model
(``needs_ref``) or a critic (``needs_critic``), how many samples per prompt (``group_size``), which
groups to keep (``keep``), the advantages, and the loss. Extra state (e.g. an adaptive KL
coefficient) round-trips through ``state_dict`` so that resume is exact.
"""

from __future__ import annotations

import torch


class Algorithm:
    trainer = "online"
    needs_critic = False

    def __init__(self, cfg):
        self.cfg = cfg
        self.name = cfg.name

    @property
    def needs_ref(self) -> bool:
        return float(self.cfg.get("beta", 0.0)) > 0

    @property
    def group_size(self) -> int:
        return int(self.cfg.get("group_size", 1))

    def keep(self, rewards: torch.Tensor) -> torch.Tensor:
        """Bool [B]: which prompt groups (rewards [B, G]) go into the update. Default: all."""
        return torch.ones(rewards.shape[0], dtype=torch.bool)

    def advantages(self, rewards: torch.Tensor, response_mask: torch.Tensor, **batch) -> torch.Tensor:
        """Token-level advantages [N, T] from sequence rewards [N]."""
        raise NotImplementedError

    def loss(self, logp, old_logp, advantages, response_mask, ref_logp=None, **norm):
        """(loss, metrics) for one micro-batch; ``norm`` carries mini-batch totals for aggregation."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
