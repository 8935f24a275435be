"""Supervised fine-tuning: maximise log π_θ(y|x) of the reference completion (and its EOS).

    L = −agg_t log π_θ(y_t | x, y_<t)   over completion tokens (response_mask)
"""

from __future__ import annotations

from dataclasses import dataclass

from rlx.algos.base import Aggregated, check
from rlx.ops import aggregate
from rlx.registry import ALGOS


def sft_loss(logp, response_mask, loss_agg_mode="token_mean", **norm):
    loss = aggregate(-logp, response_mask, loss_agg_mode, **norm)
    return loss, {"loss/total": loss.detach()}


@ALGOS.register("sft")
@dataclass(frozen=True, kw_only=True)
class SFT(Aggregated):
    """``algo=sft``: the ``sft`` trainer's batches of ``batch_size`` records; it stops early once the dev set's
    accuracy reaches ``dev_target`` (checked every ``check_every`` steps; 0 = never)."""

    dev_target: float
    check_every: int
    batch_size: int
    trainer = "sft"

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.batch_size >= 1, f"algo.batch_size={self.batch_size}: must be >= 1")
        check(self.check_every >= 0, f"algo.check_every={self.check_every}: must be >= 0")
