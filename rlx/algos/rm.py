"""Reward-model training: the Bradley–Terry pairwise ranking loss (InstructGPT, Ouyang et al. 2022,
arXiv:2203.02155 §3.5 eq. 1; docs/algorithm_notes.md §2.3).

K responses of one prompt, ranked by people, give all K·(K−1)/2 ordered pairs (y_w better than y_l);
all K go through the reward model together and the pair losses of a prompt are averaged in one
update (training pairs one at a time reuses each response K−1 times and over-fits, §2.3):

    L_RM = −1/C(K,2) · Σ_{(w,l)} log σ(r_θ(x, y_w) − r_θ(x, y_l))

r_θ is a scalar head on a causal-LM backbone read at the last token (``rlx.models.value_head``).
A plain preference pair is the case K = 2. Equal ranks form no pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rlx.algos.base import Algorithm, check
from rlx.registry import ALGOS


def ranked_pair_mask(ranks: torch.Tensor) -> torch.Tensor:
    """Bool [B, K, K]: True at (i, j) when response i is ranked strictly better (lower rank) than j."""
    return ranks.unsqueeze(-1) < ranks.unsqueeze(-2)


def bradley_terry_loss(scores: torch.Tensor, ranks: torch.Tensor | None = None, valid_mask: torch.Tensor | None = None):
    """(loss, metrics) for ``scores`` [B, K] with ``ranks`` [B, K] (0 = best; default: column order).

    The loss averages −log σ(s_w − s_l) over each prompt's pairs, then over prompts. ``valid_mask``
    [B, K] drops missing responses (prompts with fewer than K). Metrics: ``rm/accuracy`` (share of
    pairs ordered correctly, a tie counts ½), ``rm/margin`` (mean s_w − s_l).
    """
    B, K = scores.shape
    if ranks is None:
        ranks = torch.arange(K, device=scores.device).expand(B, K)
    pairs = ranked_pair_mask(ranks)
    if valid_mask is not None:
        pairs = pairs & valid_mask.unsqueeze(-1) & valid_mask.unsqueeze(-2)
    diff = scores.unsqueeze(-1) - scores.unsqueeze(-2)          # [B, K, K]: s_i − s_j
    per_pair = -F.logsigmoid(diff)
    n_pairs = pairs.sum((-1, -2))
    has = n_pairs > 0
    per_prompt = (per_pair * pairs).sum((-1, -2)) / n_pairs.clamp(min=1)
    loss = per_prompt[has].mean() if has.any() else scores.sum() * 0.0
    with torch.no_grad():
        d = diff[pairs]
        metrics = {"rm/accuracy": ((d > 0).float() + 0.5 * (d == 0).float()).mean().item() if d.numel() else 0.0,
                   "rm/margin": d.mean().item() if d.numel() else 0.0, "rm/pairs": float(d.numel()),
                   "loss/total": loss.detach()}
    return loss, metrics


@ALGOS.register("rm")
@dataclass(frozen=True, kw_only=True)
class RewardModelAlgo(Algorithm):
    """``algo=rm``: trained by the ``rm`` trainer (pairs or K-ranked responses, no generation), with an optional
    likelihood term of weight ``likelihood_weight`` on the chosen responses (trainers/rm.py)."""

    likelihood_weight: float
    trainer = "rm"

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.likelihood_weight >= 0, f"algo.likelihood_weight={self.likelihood_weight}: must be >= 0")

    def loss(self, scores, ranks=None, valid_mask=None):
        """(loss, metrics) of the ranking loss for ``scores`` [B, K]."""
        return bradley_terry_loss(scores, ranks, valid_mask)
