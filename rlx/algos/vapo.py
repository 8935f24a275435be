"""VAPO — Value-model-based Augmented PPO (Yue et al. 2025, arXiv:2504.05118 §3; built on VC-PPO,
Yuan et al. 2025, arXiv:2503.01491). PPO (``rlx.algos.ppo``) with:

1. value pretraining: the first ``critic_warmup`` steps train only the critic, on samples of the
   initial policy with λ_critic = 1 (Monte-Carlo returns) (VC-PPO §4.1, VAPO §3.1: 50 steps);
2. decoupled GAE: λ_critic = 1.0 (unbiased value targets) and a smaller λ for the actor. The notes
   have this backwards (policy 1, value 0.9: docs/algorithm_notes.md §7); the papers use λ_critic = 1.0,
   λ_actor = 0.95 (VC-PPO) or length-adaptive (VAPO);
3. length-adaptive λ for the actor (VAPO eq. 7), from Σ_t λ^t = 1/(1−λ) := α·ℓ:

       λ_actor(ℓ) = 1 − 1/(α·ℓ)       ℓ = response length, α = 0.05

   clamped to [0, 1]: for ℓ ≤ 1/α the formula is ≤ 0 and λ = 0 (one-step TD advantages);
4. token-level loss (token_mean), Clip-Higher (ε_low 0.2, ε_high 0.28, DAPO arXiv:2503.14476);
5. an NTP loss on positive samples (VAPO eq. 8), L = L_PPO + μ·L_NTP with
   L_NTP = −Σ_{o_i∈𝒯} Σ_t log π_θ(a_t|s_t) / N, 𝒯 = samples whose reward ≥ ``positive_reward``.
   Here N is the mini-batch's valid-token count, the normaliser of the token-level PPO loss (so the
   gradient does not depend on the micro-batch size); VAPO divides by the tokens of 𝒯 only, which is
   the same when every sample is positive;
6. group sampling: ``group_size`` responses per prompt (VAPO: 16), so a batch holds positive and
   negative samples of the same prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rlx.algos.base import check
from rlx.algos.ppo import PPO
from rlx.ops import aggregate
from rlx.registry import ALGOS


def length_adaptive_lambda(lengths: torch.Tensor, alpha: float) -> torch.Tensor:
    """λ_actor = 1 − 1/(α·ℓ) per response [N], clamped to [0, 1] (VAPO arXiv:2504.05118 eq. 7)."""
    lam = 1.0 - 1.0 / (alpha * lengths.float().clamp(min=1))
    return lam.clamp(0.0, 1.0)


def positive_ntp_loss(logp, response_mask, rewards, *, positive_reward: float, mu: float,
                      num_tokens=None):
    """(μ·L_NTP, metrics): −Σ log π over the tokens of samples with reward ≥ ``positive_reward``,
    divided by ``num_tokens`` (the mini-batch's valid tokens; default: this batch's)."""
    positive = (rewards >= positive_reward).unsqueeze(-1) & response_mask
    n = response_mask.sum() if num_tokens is None else num_tokens
    nll = aggregate(-logp, positive, "token_mean", num_tokens=n)
    metrics = {"vapo/ntp_loss": (mu * nll).detach(), "vapo/positive_frac": (rewards >= positive_reward).float().mean()}
    return mu * nll, metrics


@ALGOS.register("vapo")
@dataclass(frozen=True, kw_only=True)
class VAPO(PPO):
    lam: float = field(init=False, default=0.0, repr=False)   # no single λ: λ_critic and a length-adaptive λ_actor
    lambda_critic: float
    length_adaptive_alpha: float
    mu: float
    positive_reward: float

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 <= self.lambda_critic <= 1, f"algo.lambda_critic={self.lambda_critic}: must be in [0, 1]")
        check(self.length_adaptive_alpha > 0, f"algo.length_adaptive_alpha={self.length_adaptive_alpha}: must be > 0")
        check(self.mu >= 0, f"algo.mu={self.mu}: must be >= 0")

    def actor_lambda(self, response_mask):
        return length_adaptive_lambda(response_mask.sum(-1), self.length_adaptive_alpha)

    def critic_lambda(self, response_mask):
        return float(self.lambda_critic)

    def loss(self, logp, mb):
        loss, metrics = super().loss(logp, mb)
        if self.mu > 0:
            ntp, m = positive_ntp_loss(logp, mb.response_mask, mb.rewards, positive_reward=self.positive_reward,
                                       mu=self.mu, num_tokens=mb.num_tokens)
            loss = loss + ntp
            metrics.update(m)
            metrics["loss/total"] = loss.detach()
        return loss, metrics
