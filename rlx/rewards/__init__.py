"""Reward functions: plain callables ``(prompts, completions, **fields) -> list[float]``, registered by name."""

from rlx.rewards import arithmetic, length  # noqa: F401
from rlx.rewards.composite import CompositeReward  # noqa: F401
