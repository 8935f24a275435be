"""DPO — Direct Preference Optimization (Rafailov et al. 2023, arXiv:2305.18290, eq. 7), with the
conservative variant cDPO (Mitchell 2023, "A note on DPO with noisy preferences", eq. 3) as ``label_smoothing``.

    h = log π_θ(y_w|x)/π_ref(y_w|x) − log π_θ(y_l|x)/π_ref(y_l|x)          (sequence sums)
    L = −(1 − ε) log σ(β h) − ε log σ(−β h)                                  (ε = label_smoothing; ε = 0: DPO)

The minus sign matters: seed 001 writes the loss as log-softmax without it (docs/algorithm_notes.md §7). At
initialisation π_θ = π_ref, h = 0 and L = log 2 for every ε. The implicit reward of a response is
β log π_θ(y|x)/π_ref(y|x); with ε > 0 the loss is minimised at h* = log((1 − ε)/ε)/β instead of h → ∞.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from rlx.algos.base import check
from rlx.algos.preference import PrefBatch, PreferenceAlgorithm
from rlx.registry import ALGOS


def dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta=0.1, label_smoothing=0.0):
    """(loss, metrics): batch mean of the (c)DPO loss for sequence log-probs [B]."""
    h = (chosen_logps - ref_chosen_logps) - (rejected_logps - ref_rejected_logps)
    losses = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    loss = losses.mean()
    return loss, {"loss/policy": loss.detach(), "loss/total": loss.detach()}


@ALGOS.register("dpo")
@dataclass(frozen=True, kw_only=True)
class DPO(PreferenceAlgorithm):
    beta: float
    label_smoothing: float

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.beta > 0, f"algo.beta={self.beta}: must be > 0")
        check(0 <= self.label_smoothing < 0.5, f"algo.label_smoothing={self.label_smoothing}: must be in [0, 0.5) "
              "(the probability that a pair's label is flipped; 0.5 carries no preference)")

    def implicit_rewards(self, batch: PrefBatch):
        return self.beta * (batch.logps - batch.ref_logps).detach()

    def loss(self, batch: PrefBatch):
        lp, ref = batch.logps, batch.ref_logps
        return dpo_loss(lp[:, 0], lp[:, 1], ref[:, 0], ref[:, 1], beta=self.beta, label_smoothing=self.label_smoothing)
