"""ORPO — Monolithic Preference Optimization without Reference Model (Hong et al. 2024, arXiv:2403.07691, eqs. 4–7).

    log P(y|x) = (1/|y|) Σ_t log π_θ(y_t|x, y_<t)                 (length-normalised, eq. 4 / TRL)
    odds(y|x)  = P(y|x) / (1 − P(y|x))
    L_OR  = −log σ( log odds(y_w|x) − log odds(y_l|x) )              (eq. 7)
    L_SFT = −Σ_{chosen tokens} log π_θ / #chosen tokens             (NLL on the chosen responses)
    L     = L_SFT + λ · L_OR                                        (eq. 6; λ = 0.1)

with log(1 − P) = log(1 − exp(log P)) computed stably (``log1mexp``; log P is clamped to ≤ −1e−6 so a
response the model is certain of keeps a finite odds). The length normalisation is what TRL does and
what keeps exp(log P) < 1 (docs/algorithm_notes.md §2.7). No reference model. Implicit reward: λ · log P(y|x).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rlx.algos.base import check
from rlx.algos.preference import PrefBatch, PreferenceAlgorithm
from rlx.registry import ALGOS


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − e^x) for x < 0, accurate on both sides of −log 2 (Mächler 2012, "Accurately computing log(1 − exp(−|a|))")."""
    x = x.clamp(max=-1e-6)
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def orpo_loss(chosen_logps, rejected_logps, chosen_tokens, rejected_tokens, *, lam=0.1):
    """(loss, metrics) of ORPO for sequence log-probs (sums) and token counts [B]."""
    chosen, rejected = chosen_logps / chosen_tokens.clamp(min=1), rejected_logps / rejected_tokens.clamp(min=1)
    log_odds = (chosen - rejected) - (log1mexp(chosen) - log1mexp(rejected))
    l_or = -F.logsigmoid(log_odds).mean()
    nll = -chosen_logps.sum() / chosen_tokens.sum().clamp(min=1)
    loss = nll + lam * l_or
    return loss, {"loss/policy": (lam * l_or).detach(), "loss/total": loss.detach(), "orpo/nll": nll.detach(),
                  "orpo/log_odds_ratio": log_odds.detach().mean()}


@ALGOS.register("orpo")
@dataclass(frozen=True, kw_only=True)
class ORPO(PreferenceAlgorithm):
    lam: float
    reference_free = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.lam >= 0, f"algo.lam={self.lam}: must be >= 0")

    def implicit_rewards(self, batch: PrefBatch):
        return (self.lam * batch.logps / batch.n_tokens.clamp(min=1)).detach()

    def loss(self, batch: PrefBatch):
        lp, n = batch.logps, batch.n_tokens
        return orpo_loss(lp[:, 0], lp[:, 1], n[:, 0], n[:, 1], lam=self.lam)
