"""Rule rewards for the embedded arithmetic task: plain callables ``(prompts, completions, **fields)``."""

from __future__ import annotations

import re

from rlx.registry import REWARDS

_INT = re.compile(r"-?\d+")


@REWARDS.register("arithmetic_correct")
def build_arithmetic_correct(cfg=None):
    def arithmetic_correct(prompts, completions, answer, **fields) -> list[float]:
        """1.0 when the completion (decoded up to EOS, stripped) equals the answer exactly, else 0.0
        (a None answer, e.g. a group with no majority in label-free RL, matches nothing)."""
        return [1.0 if a is not None and c.strip() == str(a).strip() else 0.0 for c, a in zip(completions, answer)]

    # The answer a completion gives, for majority votes (TTRL, maj@k): a bare integer, else none.
    arithmetic_correct.extract_answer = lambda completion: completion.strip() if _INT.fullmatch(completion.strip()) else None
    return arithmetic_correct


@REWARDS.register("integer_format")
def build_integer_format(cfg=None):
    def integer_format(prompts, completions, **fields) -> list[float]:
        """1.0 when the completion is a bare integer (format term), else 0.0."""
        return [1.0 if _INT.fullmatch(c.strip()) else 0.0 for c in completions]

    return integer_format
