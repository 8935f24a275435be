"""The learning-rate schedule: linear warm-up over ``trainer.warmup_steps``, then constant, linear decay to 0, or
a cosine decay to 0 over the remaining steps (``trainer.schedule``)."""

from __future__ import annotations

import math


def lr_factor(t, i: int) -> float:
    """The factor of ``trainer.lr`` at optimizer step i (0-based) for the ``trainer`` config ``t``."""
    if t.warmup_steps and i < t.warmup_steps:
        return (i + 1) / t.warmup_steps
    frac = (i - t.warmup_steps) / max(t.steps - t.warmup_steps, 1)
    if t.schedule == "linear":
        return max(0.0, 1 - frac)
    if t.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
    return 1.0
