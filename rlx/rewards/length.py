"""Length rewards: DAPO's soft overlong punishment, shared by the ``length`` reward term and by
algorithms that shape rewards inside the loop (DAPO's ``shape_rewards``).

Soft overlong punishment (Yu et al. 2025, DAPO, arXiv:2503.14476 §3.4), with L_max the longest
allowed response and L_cache the soft-punishment buffer before it:

    R_length(y) = 0                                    |y| <= L_max - L_cache
                = ((L_max - L_cache) - |y|) / L_cache   L_max - L_cache < |y| <= L_max
                = -1                                    |y| > L_max

which is the single expression clamp(((L_max - L_cache) - |y|) / L_cache, -1, 0). verl and OpenRLHF
multiply it by an ``overlong_penalty_factor`` (1.0 in DAPO).
"""

from __future__ import annotations

import torch

from rlx.registry import REWARDS


def soft_overlong_punishment(lengths, max_length: int, cache_length: int, penalty_factor: float = 1.0):
    """Penalties (<= 0) for response lengths in tokens: a tensor for a tensor, a list for a list.

    L_max = 20480, L_cache = 4096 (the paper's values): |y| = 16384 -> 0, 18432 -> -0.5,
    20480 -> -1, 30000 -> -1 (docs/algorithm_notes.md §8.9).
    """
    if cache_length <= 0 or cache_length > max_length:
        raise ValueError(f"cache_length={cache_length}: must be in (0, max_length={max_length}]")
    lo = max_length - cache_length
    if isinstance(lengths, torch.Tensor):
        return ((lo - lengths.float()) / cache_length).clamp(-1.0, 0.0) * penalty_factor
    return [min(0.0, max(-1.0, (lo - n) / cache_length)) * penalty_factor for n in lengths]


@REWARDS.register("length")
def build_length(cfg):
    """Reward term: the soft overlong punishment of each completion's length in tokens.

    Reads ``completion_ids`` (the response tokens up to and including EOS, passed by the loop, as in
    TRL). ``cfg.max_length`` is L_max (normally ``${rollout.max_new_tokens}``), ``cfg.cache_length`` L_cache.
    """
    max_length, cache_length = int(cfg.max_length), int(cfg.cache_length)
    factor = float(cfg.get("penalty_factor", 1.0))
    soft_overlong_punishment([max_length], max_length, cache_length)  # bad settings fail at build time

    def length(prompts, completions, completion_ids, **fields) -> list[float]:
        return soft_overlong_punishment([len(ids) for ids in completion_ids], max_length, cache_length, factor)

    return length
