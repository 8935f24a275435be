"""ReMax (Li et al. 2023, arXiv:2310.10505, Algorithm 1): REINFORCE with the reward of the greedy
response as the baseline — one sampled and one greedy decode per prompt, no critic.

    A = r(x, y) − r(x, ȳ),    y ~ π_θ(·|x),   ȳ = greedy decode of π_θ for x

The same A for every token of y; the gradient is A · Σ_t ∇ log π_θ(y_t | x, y_<t)
(``loss_agg_mode: seq_mean_token_sum``). The loop provides r(x, ȳ) as ``batch.greedy_rewards``
because the algorithm requires ``greedy_baseline``. An unscorable greedy response (NaN) gives A = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlx.algos.reinforce import PolicyGradient, per_token
from rlx.registry import ALGOS


def remax_advantages(rewards: torch.Tensor, greedy_rewards: torch.Tensor) -> torch.Tensor:
    """A_i = r_i − r_greedy(prompt of i), both [N]; 0 where the greedy reward is NaN."""
    adv = rewards.to(torch.float32) - greedy_rewards.to(torch.float32)
    return torch.where(torch.isnan(greedy_rewards), torch.zeros_like(adv), adv)


@ALGOS.register("remax")
@dataclass(frozen=True, kw_only=True)
class ReMax(PolicyGradient):
    min_group_size = 1

    @property
    def requires(self) -> frozenset[str]:
        return super().requires | {"greedy_baseline"}

    def estimate(self, batch, *, kl, kl_coef):
        greedy = batch.greedy_rewards
        if greedy is None:
            raise RuntimeError("remax: batch.greedy_rewards is missing (the loop generates it when the algorithm "
                               "requires greedy_baseline)")
        seq = self.sequence_rewards(batch, kl, kl_coef)
        return (per_token(remax_advantages(seq, greedy), batch.response_mask),
                self.extras(greedy_reward=torch.nanmean(greedy).nan_to_num(0.0)))
