"""GRPO-λ — a length penalty only for the groups that already answer well (Dai, Liu & Si 2025, "Stable
Reinforcement Learning for Efficient Reasoning", arXiv:2505.18086; docs/algorithm_notes.md §2.21).

A length penalty on every sample shortens the chain of thought but makes accuracy collapse early in training.
GRPO-λ decides per group (prompt), every batch: the groups are ranked by their correctness ratio
c_g = #{i in g: correct} / G, the top λ fraction get the length-penalised (efficiency) reward, the others keep
the correctness reward (accuracy priority):

    r'_i = r_i + α·ℓ_i   if the group of i is in the top ⌊λ·B⌋ (and has c_g > 0),   r'_i = r_i   otherwise
    ℓ_i = λ_i if i is correct, min(0, λ_i) if not,   λ_i = 0.5 − (|y_i| − min_g|y|) / (max_g|y| − min_g|y|)

ℓ is the length reward of Kimi k1.5 (arXiv:2501.12599, "length penalty"; open-r1's ``len_reward``) over the
lengths |y| in tokens of the group's responses (0 for the whole group when they are all equally long);
"correct" is r_i ≥ ``correct_reward``. Ties in c_g go to the earlier group; a group with no correct sample is
never chosen (its length reward could only punish long wrong answers, the pressure the paper keeps away from
hard prompts). Then GRPO unchanged: A_i = (r'_i − mean r') / (std r' + eps) and the clipped surrogate
(algos/grpo.py). Reported: −47.3% CoT length with +1.48% average accuracy over GSM8K, GPQA, MATH-500,
AMC 2023 and AIME 2024.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from rlx.algos.base import check
from rlx.algos.grpo import GRPO
from rlx.registry import ALGOS


def kimi_length_reward(lengths: torch.Tensor, correct: torch.Tensor, valid: torch.Tensor | None = None):
    """ℓ [B, G] for lengths and correctness [B, G]: λ_i = 0.5 − (|y_i| − min) / (max − min) over the group's
    valid samples; ℓ = λ if correct, min(0, λ) if not; 0 where the group's lengths are all equal or the sample
    is invalid.

    Lengths [2, 4, 6], all correct → [0.5, 0, −0.5]; lengths [3, 5, 5], correct [1, 1, 0] → [0.5, −0.5, −0.5].
    """
    lengths = lengths.to(torch.float32)
    valid = torch.ones_like(correct, dtype=torch.bool) if valid is None else valid
    lo = torch.where(valid, lengths, torch.full_like(lengths, math.inf)).amin(-1, keepdim=True)
    hi = torch.where(valid, lengths, torch.full_like(lengths, -math.inf)).amax(-1, keepdim=True)
    span = hi - lo
    lam = 0.5 - (lengths - lo) / torch.where(span > 0, span, torch.ones_like(span))
    ell = torch.where(correct, lam, lam.clamp(max=0.0))
    return torch.where(valid & (span > 0), ell, torch.zeros_like(ell))


def top_lambda_groups(accuracy: torch.Tensor, lambda_frac: float) -> torch.Tensor:
    """Bool [B]: the ⌊λ·B⌋ groups of highest correctness ratio (ties: the earlier group), only groups with a
    correct sample. Ratios [2/3, 0, 1, 1/3] with λ = 0.5 → groups 2 and 0."""
    B = accuracy.shape[0]
    k = math.floor(lambda_frac * B + 1e-9)
    order = torch.sort(-accuracy, stable=True).indices[:k]
    chosen = torch.zeros(B, dtype=torch.bool, device=accuracy.device)
    chosen[order] = True
    return chosen & (accuracy > 0)


def grpo_lambda_rewards(rewards: torch.Tensor, lengths: torch.Tensor, group_size: int, *, lambda_frac: float,
                        length_coef: float, correct_reward: float):
    """(shaped rewards [N], chosen groups [B], ℓ [N]) for sequence rewards and lengths [N] (G contiguous per
    prompt). A non-finite reward (a sample that failed to score) stays as it is and counts for nothing."""
    r = rewards.view(-1, group_size)
    valid = torch.isfinite(r)
    correct = valid & (r >= correct_reward)
    accuracy = correct.sum(-1) / valid.sum(-1).clamp(min=1)
    chosen = top_lambda_groups(accuracy.to(torch.float32), lambda_frac)
    ell = kimi_length_reward(lengths.view(-1, group_size), correct, valid) * chosen.unsqueeze(-1)
    return (r + length_coef * ell).reshape(-1), chosen, ell.reshape(-1)


@ALGOS.register("grpo_lambda")
@dataclass(frozen=True, kw_only=True)
class GRPOLambda(GRPO):
    lambda_frac: float
    length_coef: float
    correct_reward: float

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 <= self.lambda_frac <= 1, f"algo.lambda_frac={self.lambda_frac}: must be in [0, 1] (the "
                                          f"share of groups that get the length reward; 0 = GRPO)")
        check(self.length_coef >= 0, f"algo.length_coef={self.length_coef}: must be >= 0")

    def shape_rewards(self, rewards, response_mask, max_new_tokens):
        shaped, chosen, ell = grpo_lambda_rewards(rewards, response_mask.sum(-1).cpu(), self.group_size,
                                                  lambda_frac=float(self.lambda_frac),
                                                  length_coef=float(self.length_coef),
                                                  correct_reward=float(self.correct_reward))
        picked = chosen.repeat_interleave(self.group_size)
        return shaped, {f"{self.name}/efficiency_frac": chosen.float().mean().item(),
                        f"{self.name}/length_reward": ell[picked].mean().item() if picked.any() else 0.0}
