"""SimPO — Simple Preference Optimization with a reference-free reward (Meng et al. 2024, arXiv:2405.14734, eq. 6).

    r(x, y) = (β/|y|) log π_θ(y|x)                                  (length-normalised, no reference model)
    L = −log σ(r(x, y_w) − r(x, y_l) − γ)                            (γ: target reward margin)

No reference model is loaded (``reference_free``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from rlx.algos.base import check
from rlx.algos.preference import PrefBatch, PreferenceAlgorithm
from rlx.registry import ALGOS


def simpo_loss(chosen_logps, rejected_logps, chosen_tokens, rejected_tokens, *, beta=2.0, gamma=1.0):
    """(loss, metrics): batch mean of the SimPO loss for sequence log-probs and token counts [B]."""
    chosen = beta * chosen_logps / chosen_tokens.clamp(min=1)
    rejected = beta * rejected_logps / rejected_tokens.clamp(min=1)
    loss = -F.logsigmoid(chosen - rejected - gamma).mean()
    return loss, {"loss/policy": loss.detach(), "loss/total": loss.detach()}


@ALGOS.register("simpo")
@dataclass(frozen=True, kw_only=True)
class SimPO(PreferenceAlgorithm):
    beta: float
    gamma: float
    reference_free = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.beta > 0, f"algo.beta={self.beta}: must be > 0")
        check(self.gamma >= 0, f"algo.gamma={self.gamma}: must be >= 0")

    def implicit_rewards(self, batch: PrefBatch):
        return (self.beta * batch.logps / batch.n_tokens.clamp(min=1)).detach()

    def loss(self, batch: PrefBatch):
        lp, n = batch.logps, batch.n_tokens
        return simpo_loss(lp[:, 0], lp[:, 1], n[:, 0], n[:, 1], beta=self.beta, gamma=self.gamma)
