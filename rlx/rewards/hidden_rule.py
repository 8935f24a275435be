"""The hidden preference rule of ``data=arithmetic_pref`` as reward terms, for measuring: the RLHF
pipeline gives them weight 0 and logs the rule as the score, so that the reward-model score (what PPO
optimises) and the true score (what people would prefer) appear side by side, the true score split
into its two features (correct answer, bare integer: ``integer_format`` in rewards/arithmetic.py)."""

from __future__ import annotations

from rlx.data.arithmetic_pref import true_score
from rlx.registry import REWARDS


@REWARDS.register("arithmetic_pref_true")
def build_arithmetic_pref_true(cfg=None):
    def arithmetic_pref_true(prompts, completions, answer, **fields) -> list[float]:
        """1[first integer == answer] − 0.5·1[not a bare integer] (rlx/data/arithmetic_pref.py)."""
        return [true_score(p, c, a) for p, c, a in zip(prompts, completions, answer)]

    return arithmetic_pref_true


@REWARDS.register("first_integer_correct")
def build_first_integer_correct(cfg=None):
    def first_integer_correct(prompts, completions, answer, **fields) -> list[float]:
        """1.0 when the first integer of the completion equals the answer ("85!" counts), else 0.0:
        the correctness half of the hidden rule (its other half is ``integer_format``: a bare integer)."""
        return [float(true_score(p, c, a) > 0) for p, c, a in zip(prompts, completions, answer)]

    return first_integer_correct
