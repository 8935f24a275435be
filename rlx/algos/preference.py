"""What the offline trainer hands a preference algorithm, and the metrics every one of them logs.

A batch is B rows of K responses to one prompt each, as sequence log-probabilities (sum over the
response tokens, EOS included) and token counts; columns are ranked best first (for pairs: chosen,
then rejected; the data's order is authoritative, scores only grade it). The trainer asks the algorithm:

- ``layout``: ``pairs`` (every ordered pair of a record becomes a row of K = 2), ``ranked``
  (all K responses of a record in one row; RRHF) or ``pointwise`` (each response with a desirable /
  undesirable label; KTO — paired data gives chosen = desirable, rejected = undesirable)
- ``requires``: ``ref_logp`` unless the loss is reference-free (then no reference model is loaded),
  ``mismatched`` to add each prompt with another row's response (KTO's KL estimate), and ``seq_kl`` for
  each response's sequential KL Σ_t KL(π_ref(·|x, y_<t) ‖ π_θ(·|x, y_<t)) over the full vocabulary (TDPO;
  needs ``ref_logp``: the reference forward runs every step, as full distributions are not cached)
- ``implicit_rewards(batch)``: the reward each response gets under the loss (for ``pref/*``)
- ``loss(batch)``: ``(loss, metrics)``
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from rlx.algos.base import Algorithm


@dataclass
class PrefBatch:
    """B rows x K responses (ranked best first). All tensors [B, K] unless noted."""

    logps: torch.Tensor                      # Σ_t log π_θ(y_t | x, y_<t) of each response
    n_tokens: torch.Tensor                   # response tokens (EOS included), float
    scores: torch.Tensor                     # the data's scores (grade the ranking; ODPO's offset)
    ref_logps: torch.Tensor | None = None    # the same sums under π_ref (cached per example)
    labels: torch.Tensor | None = None       # bool, True = desirable (pointwise layout)
    kl_logps: torch.Tensor | None = None     # [B] log π_θ(y'|x) of a mismatched response, no gradient
    ref_kl_logps: torch.Tensor | None = None  # [B] the same under π_ref
    seq_kl: torch.Tensor | None = None       # Σ_t KL(π_ref(·|x,y_<t) ‖ π_θ(·|x,y_<t)) ("seq_kl"), gradient via π_θ


@dataclass(frozen=True, kw_only=True)
class PreferenceAlgorithm(Algorithm):
    """The offline loop's algorithm: ``layout``, ``requires`` (ref_logp unless ``reference_free``; mismatched;
    seq_kl), ``implicit_rewards(batch)`` and ``loss(batch)`` on a ``PrefBatch``."""

    trainer: ClassVar[str] = "offline"
    layout: ClassVar[str] = "pairs"
    reference_free: ClassVar[bool] = False

    @property
    def requires(self) -> frozenset[str]:
        return super().requires | (set() if self.reference_free else {"ref_logp"})

    def implicit_rewards(self, batch: PrefBatch) -> torch.Tensor:
        """[B, K] reward of each response under this loss (detached)."""
        raise NotImplementedError

    def loss(self, batch: PrefBatch) -> tuple[torch.Tensor, dict]:
        """(loss, metrics) of one batch."""
        raise NotImplementedError


def ordered_pairs(K: int) -> list[tuple[int, int]]:
    """Column pairs (i, j), i < j: response i is ranked above response j (columns are ranked best first)."""
    return [(i, j) for i in range(K) for j in range(i + 1, K)]


def pref_metrics(rewards: torch.Tensor, logps: torch.Tensor, labels=None) -> dict:
    """The preference vocabulary over every ordered pair of responses of each row.

    pref/accuracy: share of pairs whose chosen (higher-ranked) reward is higher; a tie counts 1/2 (so a
    policy equal to its reference scores 0.5, chance, not 0). pref/margin: mean (r_chosen − r_rejected).
    logps/chosen, logps/rejected: mean sequence log-prob (sum over tokens) of each side.
    Rows of one response (unpaired data) report rewards and log-probs by label only.
    """
    r, lp = rewards.detach().float(), logps.detach().float()
    pairs = ordered_pairs(r.shape[1])
    if pairs:
        rc, rr = torch.cat([r[:, i] for i, _ in pairs]), torch.cat([r[:, j] for _, j in pairs])
        lc, lr = torch.cat([lp[:, i] for i, _ in pairs]), torch.cat([lp[:, j] for _, j in pairs])
        acc = ((rc > rr).float() + 0.5 * (rc == rr).float()).mean()
        return {"pref/accuracy": acc.item(), "pref/margin": (rc - rr).mean().item(),
                "pref/chosen_reward": rc.mean().item(), "pref/rejected_reward": rr.mean().item(),
                "logps/chosen": lc.mean().item(), "logps/rejected": lr.mean().item()}
    out = {}
    if labels is not None:
        for name, sel in (("chosen", labels), ("rejected", ~labels)):
            if sel.any():
                out[f"pref/{name}_reward"] = r[sel].mean().item()
                out[f"logps/{name}"] = lp[sel].mean().item()
    return out
