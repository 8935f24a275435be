"""IPO — Identity Preference Optimisation (Azar et al. 2023, "A General Theoretical Paradigm to Understand
Learning from Human Preferences", arXiv:2310.12036, eq. 17).

    h = log π_θ(y_w|x)/π_ref(y_w|x) − log π_θ(y_l|x)/π_ref(y_l|x)
    L = (h − 1/(2τ))²

A squared loss with a finite target margin 1/(2τ), so it does not drive h to infinity the way the
sigmoid does (the regulariser the seeds describe, docs/algorithm_notes.md §2.5). With ``length_normalize`` each
log-ratio is divided by its response's token count before the difference, as TRL does (its comment:
confirmed with the IPO authors, and the form behind the paper's results); false gives eq. 17 on sums.
The implicit reward is the (normalised) log-ratio itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlx.algos.base import check
from rlx.algos.preference import PrefBatch, PreferenceAlgorithm
from rlx.registry import ALGOS


def ipo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, chosen_tokens, rejected_tokens,
             *, tau=0.1, length_normalize=True):
    """(loss, metrics): batch mean of (h − 1/(2τ))² for sequence log-probs and token counts [B]."""
    chosen, rejected = chosen_logps - ref_chosen_logps, rejected_logps - ref_rejected_logps
    if length_normalize:
        chosen, rejected = chosen / chosen_tokens.clamp(min=1), rejected / rejected_tokens.clamp(min=1)
    loss = ((chosen - rejected - 1 / (2 * tau)) ** 2).mean()
    return loss, {"loss/policy": loss.detach(), "loss/total": loss.detach()}


@ALGOS.register("ipo")
@dataclass(frozen=True, kw_only=True)
class IPO(PreferenceAlgorithm):
    tau: float
    length_normalize: bool

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.tau > 0, f"algo.tau={self.tau}: must be > 0 (IPO's target margin is 1/(2 tau))")

    def implicit_rewards(self, batch: PrefBatch):
        r = (batch.logps - batch.ref_logps).detach()
        return r / batch.n_tokens.clamp(min=1) if self.length_normalize else r

    def loss(self, batch: PrefBatch):
        lp, ref, n = batch.logps, batch.ref_logps, batch.n_tokens
        return ipo_loss(lp[:, 0], lp[:, 1], ref[:, 0], ref[:, 1], n[:, 0], n[:, 1], tau=self.tau,
                        length_normalize=self.length_normalize)
