"""REINFORCE++ (Hu 2025, arXiv:2501.03262 §3, eq. 8-10): one response per prompt, the KL to the
reference inside a token-level reward, and advantages normalised over the whole batch.

    r_t   = 𝟙[t = T] · r(x, y) − β · KL_t,         KL_t = log π_old(y_t|·) − log π_ref(y_t|·)   (k1, eq. 9)
    A_t   = Σ_{s≥t} γ^{s−t} r_s  =  r(x, y) − β Σ_{s≥t} KL_s          (γ = 1, eq. 8)
    Â_t   = (A_t − mean_batch A) / std_batch A                         (all valid tokens of the batch, eq. 10)

then the PPO-clipped surrogate without a critic (rlx.algos.reinforce.pg_loss). No per-prompt
baseline: the paper argues that prompt-level baselines over-fit easy prompts; the batch mean is the
baseline. Because there is one sample per prompt the preset raises ``data.prompts_per_step`` so that
N = B·G matches the group methods' N. A token-level reward term (``reward=prm``: a reward at each reasoning
step's end token) adds its rewards (``Batch.token_rewards``) to r_t before the returns.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlx.algos.base import check
from rlx.algos.kl_control import kl_penalized_token_rewards, returns_to_go
from rlx.algos.reinforce import KLInReward
from rlx.ops import masked_whiten
from rlx.registry import ALGOS


def batch_normalize(values: torch.Tensor, response_mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(A − mean) / sqrt(var + eps) over every valid token of the batch (unbiased var); 0 at padding."""
    out = masked_whiten(values, response_mask, eps=eps)
    return torch.where(response_mask, out, torch.zeros_like(out))


def reinforce_pp_advantages(scores: torch.Tensor, response_mask: torch.Tensor, kl: torch.Tensor | None = None,
                            kl_coef: float = 0.0, gamma: float = 1.0,
                            dense: torch.Tensor | None = None) -> torch.Tensor:
    """Token advantages [N, T] of REINFORCE++ from sequence scores [N], a bool mask [N, T], per-token KL [N, T]
    (or None) and token-level rewards [N, T] (or None). A hole in the mask (a multi-turn episode's observation
    tokens) is carried through undiscounted by ``returns_to_go`` and left out of the batch statistics; it gets
    advantage 0."""
    kl = torch.zeros_like(response_mask, dtype=torch.float32) if kl is None else kl
    token_rewards = kl_penalized_token_rewards(scores.to(torch.float32), kl, response_mask, kl_coef, dense)
    return batch_normalize(returns_to_go(token_rewards, response_mask, gamma), response_mask)


@ALGOS.register("reinforce_pp")
@dataclass(frozen=True, kw_only=True)
class ReinforcePP(KLInReward):
    min_group_size = 1
    takes_token_rewards = True   # a token-level reward term's rewards join r_t (kl_penalized_token_rewards)
    gamma: float

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 <= self.gamma <= 1, f"algo.gamma={self.gamma}: must be in [0, 1]")

    def estimate(self, batch, *, kl, kl_coef):
        adv = reinforce_pp_advantages(batch.rewards, batch.response_mask, kl, kl_coef, self.gamma, batch.token_rewards)
        return adv, {}
