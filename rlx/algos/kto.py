"""KTO — Kahneman–Tversky Optimization (Ethayarajh et al. 2024, arXiv:2402.01306, eq. 8), on unpaired
desirable / undesirable examples.

    r_θ(x, y) = log π_θ(y|x) / π_ref(y|x)
    z_0 = max(0, mean_{(x, y') mismatched} r_θ(x, y'))                (batch KL estimate, no gradient)
    v(x, y) = λ_D σ(β (r_θ − z_0))   if y is desirable
              λ_U σ(β (z_0 − r_θ))   if y is undesirable
    L = mean_batch [ λ_y − v(x, y) ]

The KL estimate pairs each prompt of the batch with another row's response (the trainer supplies
them: the algorithm requires ``mismatched``), as TRL's KTOTrainer does. Paired data is used unpaired: chosen =
desirable, rejected = undesirable. Defaults β = 0.1, λ_D = λ_U = 1 (paper: keep
λ_D n_D / (λ_U n_U) in [1, 4/3]). Implicit reward: β r_θ.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlx.algos.base import check
from rlx.algos.preference import PrefBatch, PreferenceAlgorithm
from rlx.registry import ALGOS


def kto_loss(logps, ref_logps, labels, kl_logps, ref_kl_logps, *, beta=0.1, lambda_d=1.0, lambda_u=1.0):
    """(loss, metrics) of KTO for sequence log-probs [N], labels [N] (bool) and mismatched log-probs [M]."""
    r = logps - ref_logps
    z0 = (kl_logps - ref_kl_logps).mean().clamp(min=0).detach() if kl_logps.numel() else r.new_zeros(())
    lam = torch.where(labels, torch.full_like(r, lambda_d), torch.full_like(r, lambda_u))
    v = torch.where(labels, lambda_d * torch.sigmoid(beta * (r - z0)), lambda_u * torch.sigmoid(beta * (z0 - r)))
    loss = (lam - v).mean()
    return loss, {"loss/policy": loss.detach(), "loss/total": loss.detach(), "kto/kl": z0}


@ALGOS.register("kto")
@dataclass(frozen=True, kw_only=True)
class KTO(PreferenceAlgorithm):
    beta: float
    lambda_d: float
    lambda_u: float
    layout = "pointwise"

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.beta > 0, f"algo.beta={self.beta}: must be > 0")
        for key in ("lambda_d", "lambda_u"):
            check(getattr(self, key) >= 0, f"algo.{key}={getattr(self, key)}: must be >= 0")

    @property
    def requires(self) -> frozenset[str]:
        return super().requires | {"mismatched"}

    def implicit_rewards(self, batch: PrefBatch):
        return self.beta * (batch.logps - batch.ref_logps).detach()

    def loss(self, batch: PrefBatch):
        return kto_loss(batch.logps.flatten(), batch.ref_logps.flatten(), batch.labels.flatten(), batch.kl_logps,
                        batch.ref_kl_logps, beta=self.beta, lambda_d=self.lambda_d, lambda_u=self.lambda_u)
