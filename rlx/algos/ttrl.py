"""TTRL — Test-Time Reinforcement Learning (Zuo et al. 2025, arXiv:2504.16084 §2).

RL without labels: the G sampled answers to a prompt vote, and the majority answer is the pseudo-label

    ŷ = argmax_a Σ_j 1[ans(y_j) = a],      r_i = R(y_i, ŷ) = 1 if ans(y_i) = ŷ else 0

where ans() is the task reward's answer extractor and R its rule (the reward's score term, scored
against ŷ instead of the data's answer). The update is GRPO's (arXiv:2402.03300; TTRL uses GRPO or
PPO): group-normalised advantages and the clipped surrogate, every GRPO key with its meaning.

``label_free``: the online loop never passes the data's fields to the training reward, only the
pseudo-labels; the ground truth is read for held-out evaluation only. A group with no extractable
answer has no label and all its rewards are 0 (no signal).
"""

from __future__ import annotations

from dataclasses import dataclass

from rlx.algos.grpo import GRPO
from rlx.registry import ALGOS
from rlx.rewards.vote import majority_labels


@ALGOS.register("ttrl")
@dataclass(frozen=True, kw_only=True)
class TTRL(GRPO):
    label_free = True

    def pseudo_labels(self, answers: list, group_size: int) -> list:
        """The majority answer of each group, per sample: ["7", "5", "7", None], G = 2 -> ["7", "7", "7", "7"]."""
        return majority_labels(answers, group_size)
