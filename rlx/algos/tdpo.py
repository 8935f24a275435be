"""TDPO — Token-level Direct Preference Optimization (Zeng et al. 2024, ICML, arXiv:2404.11999, §4: the
Bradley-Terry form σ(u − δ) obtained from the token-level MDP via Theorem 4.5, and the two objectives
L_TDPO1 and L_TDPO2).

    D_SeqKL(x, y; π_ref ‖ π_θ) = Σ_t KL(π_ref(·|x, y_<t) ‖ π_θ(·|x, y_<t))      (forward KL, full vocabulary)
    u = β log π_θ(y_w|x)/π_ref(y_w|x) − β log π_θ(y_l|x)/π_ref(y_l|x)           (DPO's margin, sequence sums)
    δ = β D_SeqKL(x, y_l; π_ref ‖ π_θ) − β D_SeqKL(x, y_w; π_ref ‖ π_θ)
    TDPO1:  L = −log σ(u − δ)
    TDPO2:  L = −log σ(u − α δ₂),  δ₂ = β D_SeqKL(x, y_l) − sg(β D_SeqKL(x, y_w))

The stop-gradient sg is on the preferred (chosen) response's KL: TDPO2 pushes down the dispreferred
response's KL, which grows faster under DPO (the paper's Figure 1), and leaves the preferred one's as a
constant; the authors' code detaches ``chosen_position_kl`` likewise. ``variant`` picks the objective;
α weighs δ₂ in TDPO2 only (TDPO1 has no α: the key must be 1 there, so it is never accepted and
ignored). Defaults of the authors' code and README (config/loss/tdpo.yaml): TDPO2, α = 0.5, β = 0.1.
With α = 0 TDPO2 is DPO; with α = 1 it has TDPO1's value but not its gradient; at initialisation
(π_θ = π_ref) both KLs are 0 and u = 0, so L = log 2 in both variants.

The implicit reward of a response is β (log π_θ/π_ref + w · D_SeqKL) with w = 1 (TDPO1) or α (TDPO2), so
that the chosen-minus-rejected margin is the loss's logit u − δ (u − α δ₂); the authors log w = 1 for both.

The KLs need each token's full next-token distribution under both models, so the algorithm requires
``seq_kl``: the offline loop runs the reference forward again every step (the reference cache holds
sequence log-probs only; per-token distributions at full vocabulary cannot be cached per example) and
extends its two-pass micro-batch accumulation to the KL terms (rlx/trainers/offline.py, step 5).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from rlx.algos.base import check, check_choice
from rlx.algos.preference import PrefBatch, PreferenceAlgorithm
from rlx.registry import ALGOS

VARIANTS = ("tdpo1", "tdpo2")


def tdpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, chosen_seq_kl, rejected_seq_kl,
              *, beta=0.1, alpha=1.0, stop_gradient=False):
    """(loss, metrics): batch mean of −log σ(u − α δ) for sequence log-probs and sequential KLs [B].

    ``stop_gradient=False, alpha=1``: TDPO1; ``stop_gradient=True``: TDPO2 (sg on the chosen KL)."""
    u = beta * ((chosen_logps - ref_chosen_logps) - (rejected_logps - ref_rejected_logps))
    kl_w = chosen_seq_kl.detach() if stop_gradient else chosen_seq_kl
    delta = beta * (rejected_seq_kl - kl_w)
    loss = -F.logsigmoid(u - alpha * delta).mean()
    return loss, {"loss/policy": loss.detach(), "loss/total": loss.detach(),
                  "tdpo/seq_kl_chosen": chosen_seq_kl.detach().mean(),
                  "tdpo/seq_kl_rejected": rejected_seq_kl.detach().mean(), "tdpo/delta": delta.detach().mean()}


@ALGOS.register("tdpo")
@dataclass(frozen=True, kw_only=True)
class TDPO(PreferenceAlgorithm):
    beta: float
    variant: str
    alpha: float

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.beta > 0, f"algo.beta={self.beta}: must be > 0")
        check_choice("variant", self.variant, VARIANTS)
        check(self.alpha >= 0, f"algo.alpha={self.alpha}: must be >= 0 (the weight of TDPO2's KL term δ₂)")
        check(self.variant == "tdpo2" or self.alpha == 1, f"algo.alpha={self.alpha}: algo.variant=tdpo1 has no α "
              "(its δ enters with weight 1); set algo.alpha=1 with tdpo1, or use algo.variant=tdpo2")

    @property
    def requires(self) -> frozenset[str]:
        return super().requires | {"seq_kl"}

    def implicit_rewards(self, batch: PrefBatch):
        return self.beta * (batch.logps - batch.ref_logps + self.alpha * batch.seq_kl).detach()

    def loss(self, batch: PrefBatch):
        lp, ref, kl = batch.logps, batch.ref_logps, batch.seq_kl
        return tdpo_loss(lp[:, 0], lp[:, 1], ref[:, 0], ref[:, 1], kl[:, 0], kl[:, 1], beta=self.beta,
                         alpha=self.alpha, stop_gradient=self.variant == "tdpo2")
