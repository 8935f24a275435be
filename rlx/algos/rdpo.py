"""R-DPO — length-regularised DPO (Park, Rafailov, Ermon & Finn 2024, "Disentangling Length from Quality in Direct
Preference Optimization", arXiv:2403.19159, eq. 9).

    h = log π_θ(y_w|x)/π_ref(y_w|x) − log π_θ(y_l|x)/π_ref(y_l|x)          (sequence sums)
    L = −log σ(β h + α (|y_w| − |y_l|))                                      (|y|: response tokens, EOS included)

The length term comes from a length penalty in the KL-regularised objective, max E[r − α|y|] − β KL: its
optimum gives r(x, y) = β log π*/π_ref + α|y| + β log Z, and the Bradley–Terry model on r gives eq. 9, so α
enters with a plus sign. A pair whose chosen response is longer is then partly explained by length (a larger
argument, a smaller gradient on h), one whose chosen response is shorter asks for a larger h: the policy is
not rewarded for length. α = 0 is DPO (rlx/algos/dpo.py). The sign is the paper's eq. 9 as the oat library
implements it (sail-sg/oat, ``len_reg_alpha``: logits += α/β · (|y_w| − |y_l|) before the β scale).
Implicit reward: β log π_θ/π_ref, the policy's part of r without the α|y| length term (what R-DPO keeps
free of length); ``rdpo/length_gap`` logs the batch mean of |y_w| − |y_l| in tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from rlx.algos.base import check
from rlx.algos.preference import PrefBatch, PreferenceAlgorithm
from rlx.registry import ALGOS


def rdpo_loss(
    chosen_logps,
    rejected_logps,
    ref_chosen_logps,
    ref_rejected_logps,
    chosen_tokens,
    rejected_tokens,
    *,
    beta=0.1,
    alpha=0.0,
):
    """(loss, metrics): batch mean of the R-DPO loss for sequence log-probs and token counts [B]."""
    h = (chosen_logps - ref_chosen_logps) - (rejected_logps - ref_rejected_logps)
    length_gap = chosen_tokens - rejected_tokens
    loss = -F.logsigmoid(beta * h + alpha * length_gap).mean()
    return loss, {
        "loss/policy": loss.detach(),
        "loss/total": loss.detach(),
        "rdpo/length_gap": length_gap.detach().float().mean(),
    }


@ALGOS.register("rdpo")
@dataclass(frozen=True, kw_only=True)
class RDPO(PreferenceAlgorithm):
    beta: float
    alpha: float

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.beta > 0, f"algo.beta={self.beta}: must be > 0")
        check(
            self.alpha >= 0,
            f"algo.alpha={self.alpha}: must be >= 0 (the weight of the length penalty; "
            "0 is DPO, a negative weight would reward length)",
        )

    def implicit_rewards(self, batch: PrefBatch):
        return self.beta * (batch.logps - batch.ref_logps).detach()

    def loss(self, batch: PrefBatch):
        lp, ref, n = batch.logps, batch.ref_logps, batch.n_tokens
        return rdpo_loss(
            lp[:, 0], lp[:, 1], ref[:, 0], ref[:, 1], n[:, 0], n[:, 1], beta=self.beta, alpha=self.alpha
        )
