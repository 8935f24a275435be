"""Reward functions: plain callables ``(prompts, completions, **fields) -> list[float]``, registered by name."""

from rlx.rewards import (  # noqa: F401  (registration; RLHF: learned RM, hidden rule)
    arithmetic,
    format,
    gsm8k,
    hidden_rule,
    judge,
    latex_math,
    length,
    prm,
    python,
    reward_model,
    sums,
)
from rlx.rewards.composite import CompositeReward  # noqa: F401
