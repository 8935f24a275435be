"""SPO: Self-Play Preference Optimization (Swamy et al. 2024, "A Minimaximalist Approach to Reinforcement Learning
from Human Feedback", arXiv:2401.04056, ICML 2024).

SPO learns the Minimax Winner of a preference function P (a two-player zero-sum game whose payoff is P) by letting
one policy play against itself: sample several responses from the policy, compare them with P, and give each
response the proportion of the others it wins against as its reward, for any RL algorithm to maximise. No reward
model is fitted, so preferences that no reward explains (intransitive, stochastic) are handled as they are.

In a group of G responses to one prompt, with P(y_i, y_j) ∈ [0, 1] and P(y_i, y_j) + P(y_j, y_i) = 1:

    w_i = 1/(G−1) · Σ_{j≠i} P(y_i, y_j)                           (win rate against the rest of the group)
    A_i = w_i − mean_j w_j = w_i − ½                              (Σ_i w_i = C(G, 2)/(G−1) = G/2)

and the update is GRPO's clipped surrogate with A_i on every token of response i (``ClippedGroupLoss``: the
paper runs PPO and SAC on the win-rate reward; the group mean is the baseline, no division by a std).

The preference function here comes from the run's reward, the comparison the embedded tasks offer:

    P(y_i, y_j) = 1[r_i > r_j] + ½·1[r_i = r_j]                   (``score_preferences``; a tie counts ½)

With a binary reward this makes A a fixed multiple of Dr. GRPO's r − r̄: A = G/(2(G−1))·(r_i − r̄), for every
number k of correct samples (the winners' and losers' win rates differ by G/(2(G−1))). Samples whose reward
failed (all-False response mask) are neither scored nor opponents.

A pairwise preference model (an LLM judge, PairRM) would replace ``score_preferences``: ``win_rates`` takes any P
[B, G, G] with P + Pᵀ = 1. The loop scores samples one at a time (``reward.score`` in OnlineTrainer._generate_round),
so such a judge needs a reward call per group there, carried to ``advantages`` on the Batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlx.algos.group import GroupAlgorithm
from rlx.algos.grpo import ClippedGroupLoss
from rlx.algos.reinforce import per_token
from rlx.ops import group_normalize
from rlx.registry import ALGOS


def score_preferences(scores: torch.Tensor) -> torch.Tensor:
    """P [B, G, G] for scores [B, G]: P[b, i, j] = 1 if s_i > s_j, ½ if equal, 0 if below (P + Pᵀ = 1)."""
    s_i, s_j = scores.unsqueeze(-1), scores.unsqueeze(-2)
    return (s_i > s_j).to(torch.float32) + 0.5 * (s_i == s_j).to(torch.float32)


def opponents(valid: torch.Tensor) -> torch.Tensor:
    """Bool [B, G, G]: j is an opponent of i (both valid, j ≠ i), for the valid samples [B, G]."""
    G = valid.shape[-1]
    return valid.unsqueeze(-1) & valid.unsqueeze(-2) & ~torch.eye(G, dtype=torch.bool, device=valid.device)


def win_rates(prefs: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Win rates [B, G] from a preference matrix [B, G, G] and the valid samples [B, G]: the mean of P(y_i, y_j)
    over the other valid samples j of the group; 0 for an invalid sample or one with no valid opponent.

    Rewards [1, 0, 1, 0.5]: w = [(1 + ½ + 1)/3, 0, (½ + 1 + 1)/3, (0 + 1 + 0)/3] = [5/6, 0, 5/6, 1/3].
    """
    pair = opponents(valid)
    wins = torch.where(pair, prefs, torch.zeros_like(prefs)).sum(-1)
    n = pair.sum(-1)
    return torch.where(n > 0, wins / n.clamp(min=1), torch.zeros_like(wins))


@ALGOS.register("spo")
@dataclass(frozen=True, kw_only=True)
class SPO(ClippedGroupLoss, GroupAlgorithm):
    """Win rates against the group as the reward, centred by the group mean (½); GRPO's surrogate and options."""

    def advantages(self, batch):
        mask, G = batch.response_mask, self.group_size
        valid = mask.any(-1)
        scores = batch.rewards.view(-1, G)
        w = win_rates(score_preferences(scores), valid.view(-1, G)).reshape(-1)
        adv = group_normalize(w, G, scale=False, valid_mask=valid)
        pair = opponents(valid.view(-1, G))
        ties = (scores.unsqueeze(-1) == scores.unsqueeze(-2)) & pair   # comparisons P scores ½
        return per_token(adv, mask), {f"{self.name}/tie_frac": (ties.sum() / pair.sum().clamp(min=1)).item()}
