"""RLSC — Reinforcement Learning via Self-Confidence (Li et al. 2025, "Confidence Is All You Need:
Few-Shot RL Fine-Tuning of Language Models", arXiv:2506.06395).

No labels and no reward: maximise the probability that two independent samples agree,

    F(θ) = E_x Σ_y p_θ(y|x)²  = E_x E_{y~p_θ}[p_θ(y|x)]      (docs/algorithm_notes.md §8.8: E[1(y1=y2)] = Σ p²)

whose gradient is 2·E_{y~p_θ}[p_θ(y|x)·∇log p_θ(y|x)]. With responses sampled from the frozen
policy of the step (p_old) this gives the paper's loss, with its smoothing α > 0:

    L = −(1/N) Σ_i (p_old(y_i|x) + α) · Σ_t log p_θ(y_i,t | x, y_i,<t)

p_old(y|x) = exp Σ_t log p_old(y_t|·) is the whole response's probability (stop-gradient). α = 0 is
the exact gradient of F (up to the factor 2); α adds a uniform pull toward every own sample.
``rlsc/confidence`` logs mean p_old(y|x) over the samples, an unbiased estimate of F.

RLSC has no advantage: the loop's advantages are 1 on valid tokens (``adv/*`` log 1) and the weight
is computed in the loss. It is label-free: the training reward only sees pseudo-labels (majority
votes), so ``score/mean`` logs agreement with the group's majority.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlx.algos.base import PolicyAlgorithm, check
from rlx.ops import masked_sum
from rlx.registry import ALGOS
from rlx.rewards.vote import majority_labels


def rlsc_loss(logp, old_logp, response_mask, *, alpha: float = 0.1, num_seqs=None):
    """(loss, metrics) for token log-probs [n, T]; ``num_seqs`` is the mini-batch's sequence count.

    Two one-token responses with p_old = 0.5 and 0.25, α = 0: L = −(0.5·log p_1 + 0.25·log p_2) / 2.
    """
    p_old = masked_sum(old_logp, response_mask, -1).exp()                 # [n], no gradient (old_logp)
    weight = (p_old + alpha).detach()
    seq_logp = masked_sum(logp, response_mask, -1)                        # Σ_t log p_θ
    valid = response_mask.any(-1)
    n = num_seqs if num_seqs is not None else max(int(valid.sum()), 1)
    loss = -(weight * seq_logp * valid).sum() / n
    metrics = {"loss/policy": loss.detach(), "loss/total": loss.detach(),
               "rlsc/confidence": p_old[valid].mean() if valid.any() else torch.zeros(())}
    return loss, metrics


@ALGOS.register("rlsc")
@dataclass(frozen=True, kw_only=True)
class RLSC(PolicyAlgorithm):
    alpha: float
    label_free = True
    takes_is_weights = False   # one weight p_old(y|x) per response: no per-token term to reweight

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.alpha >= 0, f"algo.alpha={self.alpha}: must be >= 0")

    def pseudo_labels(self, answers: list, group_size: int) -> list:
        """Majority votes, only to log agreement (score/mean); the loss does not read rewards."""
        return majority_labels(answers, group_size)

    def advantages(self, batch):
        return batch.response_mask.to(torch.float32), {}

    def loss(self, logp, mb):
        return rlsc_loss(logp, mb.old_logp, mb.response_mask, alpha=float(self.alpha), num_seqs=mb.num_seqs)
