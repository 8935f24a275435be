"""QRPO — Quantile Reward Policy Optimization (Matrenok, Moalla & Gulcehre 2025, "Quantile Reward Policy Optimization:
Alignment with Pointwise Regression and Exact Partition Functions", arXiv:2507.08068, Algorithm 1 and Table 4).

    r_q(x, y) = Pr_{y'~π_ref(·|x)}[ r(x, y') ≤ r(x, y) ]                  (quantile reward: uniform on [0, 1])
    Z_q(x) = E_{y'~π_ref}[ e^{r_q(x, y')/β} ] = ∫_0^1 e^{t/β} dt = β (e^{1/β} − 1)     (Table 4, f(t) = t)
    L = E_{(x, y)~D} [ (r_q(x, y) − β log Z_q − β log π_θ(y|x)/π_ref(y|x))² ]           (Algorithm 1)

A pointwise regression onto the closed-form optimum of the KL-regularised objective, π*(y|x) =
π_ref(y|x) e^{r_q/β} / Z_q: the partition function Z(x) is the moment generating function of the reward
distribution under π_ref at 1/β, and the quantile transform makes that distribution U[0, 1] for every
prompt, so Z_q is known exactly. The loss is zero at log π_θ/π_ref = (r_q − β log Z_q)/β. Algorithm 1 and
the authors' reference code (citing eq. 11) write β log Z_q as β log β + 1, dropping β log(1 − e^{−1/β}),
below 5e−6 for β ≤ 0.1; this file uses the exact log Z_q = log β + 1/β + log(1 − e^{−1/β}), right at any β.

The empirical quantile (Algorithm 1): the share of reference rewards S_ref ≤ the response's reward, ties
counted as below (≤), with S_ref the rewards of n completions sampled from π_ref for the prompt,
separate from the training completion y. rlx has no separate reference samples: the record's own K
responses (``layout = "ranked"``, all K in one row) are the sample of the prompt's response distribution,
and each response is scored against the other K − 1 (leave-one-out, so y is not in its own S_ref):

    r_q(y_k) = (1/(K − 1)) Σ_{j≠k} 1[s_j ≤ s_k]                           (s: the data's scores)

so K = 2 (pairs) gives r_q = 1 for the chosen and 0 for the rejected response (1 for both on a tie), and
K = 4 distinct scores give {1, 2/3, 1/3, 0}. The quantile depends only on the order of the scores; data
without scores falls back to the ranking (the trainer's scores 0, −1, …). On ``arithmetic_pref`` the K
responses are drawn over the hidden rule's score levels, not sampled from π_ref: r_q is then a quantile
under the data's response distribution, the stand-in that the embedded data offers. Implicit reward:
β log π_θ/π_ref (the fitted r_q − β log Z_q).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from rlx.algos.base import check
from rlx.algos.preference import PrefBatch, PreferenceAlgorithm
from rlx.registry import ALGOS


def log_partition(beta: float) -> float:
    """log Z_q = log(β (e^{1/β} − 1)) = log β + 1/β + log(1 − e^{−1/β}), without overflow for small β."""
    return math.log(beta) + 1 / beta + math.log1p(-math.exp(-1 / beta))


def quantile_rewards(scores: torch.Tensor) -> torch.Tensor:
    """[B, K] leave-one-out empirical quantile of each response's score among the other K − 1 of its row (ties ≤)."""
    K = scores.shape[1]
    if K < 2:
        raise ValueError(
            "QRPO needs at least 2 responses per prompt: a response's quantile is estimated "
            "against the prompt's other responses"
        )
    below = scores.unsqueeze(1) <= scores.unsqueeze(2)  # [B, k, j] = s_j ≤ s_k
    below &= ~torch.eye(K, dtype=torch.bool, device=scores.device)  # leave response k out
    dtype = scores.dtype if scores.is_floating_point() else torch.get_default_dtype()
    return (below.sum(-1).double() / (K - 1)).to(dtype)


def qrpo_loss(logps, ref_logps, scores, *, beta=0.1):
    """(loss, metrics): mean over all B x K responses of (r_q − β log Z_q − β log π_θ/π_ref)², inputs [B, K]."""
    r_q = quantile_rewards(scores.to(logps.dtype))
    residual = r_q - beta * log_partition(beta) - beta * (logps - ref_logps)
    loss = (residual**2).mean()
    return loss, {
        "loss/policy": loss.detach(),
        "loss/total": loss.detach(),
        "qrpo/quantile_reward": r_q.mean(),
        "qrpo/residual": residual.detach().mean(),
    }


@ALGOS.register("qrpo")
@dataclass(frozen=True, kw_only=True)
class QRPO(PreferenceAlgorithm):
    beta: float
    layout = "ranked"

    def __post_init__(self) -> None:
        super().__post_init__()
        check(
            self.beta > 0,
            f"algo.beta={self.beta}: must be > 0 (the KL scale; the target log-ratio is "
            "(r_q - beta log Z_q)/beta)",
        )

    def implicit_rewards(self, batch: PrefBatch):
        return self.beta * (batch.logps - batch.ref_logps).detach()

    def loss(self, batch: PrefBatch):
        return qrpo_loss(batch.logps, batch.ref_logps, batch.scores, beta=self.beta)
