"""SimPO — Simple Preference Optimization with a reference-free reward (Meng et al. 2024, arXiv:2405.14734, eq. 6).

    r(x, y) = (β/|y|) log π_θ(y|x)                                  (length-normalised, no reference model)
    L = −log σ(r(x, y_w) − r(x, y_l) − γ)                            (γ: target reward margin)

No reference model is loaded (``needs_ref`` is False).
"""

from __future__ import annotations

import torch.nn.functional as F

from rlx.algos.preference import PrefBatch, PreferenceAlgorithm
from rlx.registry import ALGOS


def simpo_loss(chosen_logps, rejected_logps, chosen_tokens, rejected_tokens, *, beta=2.0, gamma=1.0):
    """(loss, metrics): batch mean of the SimPO loss for sequence log-probs and token counts [B]."""
    chosen = beta * chosen_logps / chosen_tokens.clamp(min=1)
    rejected = beta * rejected_logps / rejected_tokens.clamp(min=1)
    loss = -F.logsigmoid(chosen - rejected - gamma).mean()
    return loss, {"loss/policy": loss.detach(), "loss/total": loss.detach()}


class SimPO(PreferenceAlgorithm):
    reference_free = True

    def implicit_rewards(self, batch: PrefBatch):
        return (self.cfg.beta * batch.logps / batch.n_tokens.clamp(min=1)).detach()

    def loss(self, batch: PrefBatch):
        lp, n = batch.logps, batch.n_tokens
        return simpo_loss(lp[:, 0], lp[:, 1], n[:, 0], n[:, 1], beta=self.cfg.beta, gamma=self.cfg.gamma)


@ALGOS.register("simpo")
def build_simpo(cfg) -> SimPO:
    return SimPO(cfg)
