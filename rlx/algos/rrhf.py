"""RRHF — Rank Responses to align language models with Human Feedback (Yuan et al. 2023, arXiv:2304.05302, eqs. 1–4).

    p_i = (1/|y_i|) Σ_t log π_θ(y_{i,t} | x, y_{i,<t})               (mean token log-likelihood, eq. 1)
    L_rank = Σ_{r_i < r_j} max(0, p_i − p_j)                           (eq. 2; no margin)
    L_ft   = −Σ_t log π_θ(y_{i',t} | x, y_{i',<t}),  i' = argmax_i r_i   (SFT on the best response, eq. 3)
    L = L_rank + w · L_ft                                              (eq. 4: w = 1)

over the K responses of each prompt, ranked best first (so r_i < r_j ⇔ column i after column j);
summed over pairs within a prompt, averaged over prompts. Only the policy is loaded (no reference).
Implicit reward: p_i.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlx.algos.base import check
from rlx.algos.preference import PrefBatch, PreferenceAlgorithm
from rlx.registry import ALGOS


def rrhf_loss(logps, n_tokens, *, sft_weight=1.0):
    """(loss, metrics) of RRHF for sequence log-probs and token counts [B, K] ranked best first."""
    p = logps / n_tokens.clamp(min=1)
    K = p.shape[1]
    above = torch.triu(torch.ones(K, K, dtype=torch.bool, device=p.device), diagonal=1)   # i ranked above j
    worse_minus_better = p.unsqueeze(1) - p.unsqueeze(2)                                   # [B, i, j] = p_j − p_i
    rank = torch.relu(worse_minus_better)[:, above].sum(-1).mean()
    ft = -logps[:, 0].mean()
    loss = rank + sft_weight * ft
    return loss, {"loss/policy": rank.detach(), "loss/total": loss.detach(), "rrhf/sft": ft.detach()}


@ALGOS.register("rrhf")
@dataclass(frozen=True, kw_only=True)
class RRHF(PreferenceAlgorithm):
    sft_weight: float
    layout = "ranked"
    reference_free = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.sft_weight >= 0, f"algo.sft_weight={self.sft_weight}: must be >= 0")

    def implicit_rewards(self, batch: PrefBatch):
        return (batch.logps / batch.n_tokens.clamp(min=1)).detach()

    def loss(self, batch: PrefBatch):
        return rrhf_loss(batch.logps, batch.n_tokens, sft_weight=self.sft_weight)
