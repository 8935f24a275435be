"""Process reward model training: per-step correctness classification with binary cross-entropy (Lightman et al.
2023, "Let's Verify Step by Step", arXiv:2305.20050 §2.6; Uesato et al. 2022, arXiv:2211.14275, process- vs
outcome-based feedback).

z_k is the PRM's logit for "step k is correct", read at the step's end token (rlx/models/prm_head.py), and
y_k ∈ {0, 1} its label; unlabelled steps (PRM800K labels only up to the first wrong step: rlx/data/sums_prm.py)
are masked out. Over the M labelled steps of a batch:

    L = −(1/M) Σ_{(i,k) labelled} [ y_k log σ(z_k) + (1 − y_k) log(1 − σ(z_k)) ]

A step counts as predicted correct when σ(z_k) > ½, i.e. z_k > 0. The paper scores a whole solution as
Π_k σ(z_k) (the probability that every step is correct); as a reward term (``reward=prm``, rlx/rewards/prm.py)
the PRM gives a reward at each step's end instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rlx.algos.base import Algorithm, check
from rlx.ops import masked_mean
from rlx.registry import ALGOS

#: data sets (``data.name``) whose records carry step labels
STEP_LABELS = ("sums_prm", "prm_steps")


def prm_loss(logits: torch.Tensor, labels: torch.Tensor, label_mask: torch.Tensor):
    """(loss, metrics) of step logits ``logits`` [n, S] against ``labels`` [n, S] (1 correct, 0 wrong) where
    ``label_mask`` [n, S] is True (a labelled step). Metrics: ``prm/step_accuracy`` (share of labelled steps
    with (z > 0) = y), ``prm/wrong_step_accuracy`` (the same over the steps labelled wrong: how many slips
    it catches), their counts ``prm/steps`` and ``prm/wrong_steps``, and ``loss/total``."""
    y = labels.to(logits.dtype)
    per_step = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    loss = masked_mean(per_step, label_mask) if label_mask.any() else logits.sum() * 0.0
    with torch.no_grad():
        right = ((logits > 0) == (y > 0.5)).float()
        wrong_mask = label_mask & (y < 0.5)
        metrics = {"prm/step_accuracy": masked_mean(right, label_mask).item(),
                   "prm/wrong_step_accuracy": masked_mean(right, wrong_mask).item(),
                   "prm/steps": float(label_mask.sum()), "prm/wrong_steps": float(wrong_mask.sum()),
                   "loss/total": loss.detach()}
    return loss, metrics


@ALGOS.register("prm")
@dataclass(frozen=True, kw_only=True)
class ProcessRewardModelAlgo(Algorithm):
    """``algo=prm``: trained by the ``prm`` trainer (step-labelled solutions, no generation; trainers/prm.py), with
    the step log-likelihood term of initial weight ``likelihood_weight`` in the logit (rlx/models/prm_head.py)."""

    likelihood_weight: float
    trainer = "prm"

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.likelihood_weight >= 0, f"algo.likelihood_weight={self.likelihood_weight}: must be >= 0")

    def check_config(self, cfg) -> None:
        name = cfg.data.name
        check(name in STEP_LABELS, f"data.name={name}: algo=prm trains on step-labelled solutions (a label per "
              f"reasoning step): data=sums_prm, or data=prm_steps with a file; data={name} has none")

    def loss(self, logits, labels, label_mask):
        """(loss, metrics) of the step classification loss for step logits [n, S]."""
        return prm_loss(logits, labels, label_mask)
