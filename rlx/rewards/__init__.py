"""Reward functions: plain callables ``(prompts, completions, **fields) -> list[float]``, registered by name."""

from rlx.rewards import arithmetic, format, gsm8k, latex_math, length, python  # noqa: F401
from rlx.rewards.composite import CompositeReward  # noqa: F401
