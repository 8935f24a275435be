"""Majority vote over answers: TTRL's pseudo-label and the maj@k metric.

TTRL (Zuo et al. 2025, arXiv:2504.16084 §2): for each prompt, the answers extracted from its samples
are counted and the most frequent one, ŷ, is the estimated label; a sample's reward is then 1 when
its answer equals ŷ. Samples with no answer (None) do not vote; a tie goes to the answer seen first.
"""

from __future__ import annotations

from collections import Counter


def majority(answers: list) -> object | None:
    """The most frequent non-None answer (first seen wins a tie), or None if none has an answer.

    ["7", "5", "7", None] -> "7";  ["5", "7"] -> "5";  [None, None] -> None.
    """
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == best)


def majority_labels(answers: list, group_size: int) -> list:
    """The majority answer of each group of ``group_size`` consecutive samples, repeated per sample."""
    if len(answers) % group_size:
        raise ValueError(f"{len(answers)} answers do not split into groups of {group_size}")
    out = []
    for i in range(0, len(answers), group_size):
        out += [majority(answers[i:i + group_size])] * group_size
    return out


def pass_at_k(scores: list[float], k: int) -> float:
    """Share of problems with at least one correct sample among its k (scores [P·k], contiguous per problem).

    With n = k samples the unbiased estimator 1 − C(n−c, k)/C(n, k) (Chen et al. 2021, arXiv:2107.03374)
    is exactly this indicator. scores [0, 1, 0, 0], k = 2 -> (1 + 0) / 2 = 0.5.
    """
    groups = [scores[i:i + k] for i in range(0, len(scores), k)]
    return sum(float(max(g) > 0) for g in groups) / len(groups)


def maj_at_k(answers: list, scores: list[float], k: int) -> float:
    """Share of problems whose majority answer among k samples is correct (the score of a sample that gives it).

    answers ["7", "5", "7", "1", None, "1"], scores [1, 0, 1, 0, 0, 0], k = 3 -> majorities "7" (correct)
    and "1" (wrong) -> 0.5. A problem with no answers counts as wrong.
    """
    right = 0.0
    for i in range(0, len(answers), k):
        top = majority(answers[i:i + k])
        if top is not None:
            right += next(s for a, s in zip(answers[i:i + k], scores[i:i + k]) if a == top)
    return right / (len(answers) // k)
