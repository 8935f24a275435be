"""The hidden preference rule of ``data=arithmetic_pref`` as a reward term, for measuring only: the
RLHF pipeline gives it weight 0 and logs it as the score, so that the reward-model score (what PPO
optimises) and the true score (what people would prefer) appear side by side."""

from __future__ import annotations

from rlx.data.arithmetic_pref import true_score
from rlx.registry import REWARDS


@REWARDS.register("arithmetic_pref_true")
def build_arithmetic_pref_true(cfg=None):
    def arithmetic_pref_true(prompts, completions, answer, **fields) -> list[float]:
        """1[first integer == answer] − 0.5·1[not a bare integer] (rlx/data/arithmetic_pref.py)."""
        return [true_score(p, c, a) for p, c, a in zip(prompts, completions, answer)]

    return arithmetic_pref_true
