"""UFO — Unary Feedback as Observation (Liu et al. 2025, "A Simple "Try Again" Can Elicit Multi-Turn LLM Reasoning",
arXiv:2507.14295): multi-turn RL in which a wrong answer receives only the observation "try again".

The method is the setting, not a new estimator: GRPO's group advantage over whole episodes of ``env=retry``
(rlx/envs/retry.py), the episode reward being the last attempt's correctness times ``env.turn_discount`` ** (t − 1)
for an answer found at attempt t, so a correct first answer earns most. Observation tokens are context, never
trained (rlx/rollout/episodes.py). The preset (conf/algo/ufo.yaml) selects env=retry.

    A_i = (R_i − mean(R_1..R_G)) / (std(R_1..R_G) + eps),   R_i = γ_turn^(t_i − 1) · 1[answer_i correct]

and GRPO's clipped surrogate (rlx/algos/grpo.py) on every policy token of episode i.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlx.algos.grpo import GRPO
from rlx.registry import ALGOS


@ALGOS.register("ufo")
@dataclass(frozen=True, kw_only=True)
class UFO(GRPO):
    """GRPO over env=retry episodes (module docstring)."""
