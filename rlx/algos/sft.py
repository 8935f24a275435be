"""Supervised fine-tuning: maximise log π_θ(y|x) of the reference completion (and its EOS).

    L = −agg_t log π_θ(y_t | x, y_<t)   over completion tokens (response_mask)
"""

from __future__ import annotations

from rlx.algos.base import Algorithm
from rlx.ops import aggregate
from rlx.registry import ALGOS


def sft_loss(logp, response_mask, loss_agg_mode="token_mean", **norm):
    loss = aggregate(-logp, response_mask, loss_agg_mode, **norm)
    return loss, {"loss/total": loss.detach()}


class SFT(Algorithm):
    trainer = "sft"

    @property
    def needs_ref(self) -> bool:
        return False

    def loss(self, logp, old_logp, advantages, response_mask, ref_logp=None, **norm):
        return sft_loss(logp, response_mask, self.cfg.loss_agg_mode, **norm)


@ALGOS.register("sft")
def build_sft(cfg) -> SFT:
    return SFT(cfg)
