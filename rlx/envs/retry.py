"""``env=retry``: answer, and after a wrong answer hear only "try again" (UFO: Liu et al. 2025, "A Simple
"Try Again" Can Elicit Multi-Turn LLM Reasoning", arXiv:2507.14295, unary feedback as observation).

Any data set whose records carry an ``answer`` works (default: the embedded arithmetic task). A turn whose text
equals the answer ends the episode; otherwise the observation is ``env.feedback`` and the policy tries again,
up to ``env.max_turns`` turns. The reward scores the last turn, times ``env.turn_discount`` ** (turns − 1): a
correct answer found later earns less.

Demonstrations for the warm start: half answer at once; half give a wrong answer (context only, not trained),
hear the feedback, then answer.
"""

from __future__ import annotations

import random

from rlx.envs.base import Env, Episode
from rlx.registry import ENVS


class RetryEpisode(Episode):
    def __init__(self, record: dict, feedback: str, discount: float):
        super().__init__(record)
        self.feedback, self.discount = feedback, discount
        self.tried: tuple = ()

    def observe(self, text: str) -> str | None:
        if text.strip() == str(self.record["answer"]).strip():
            return None
        self.tried += (text.strip(),)
        return self.feedback

    def state(self):
        return self.tried

    def reward_scale(self, turns: int) -> float:
        return self.discount ** (turns - 1)


class Retry(Env):
    demo_keys = ("feedback",)
    def __init__(self, cfg):
        super().__init__(cfg)
        self.feedback, self.discount = str(cfg.feedback), float(cfg.turn_discount)

    def start(self, record: dict) -> RetryEpisode:
        return RetryEpisode(record, self.feedback, self.discount)

    def demo(self, record: dict) -> list[tuple[str, bool, bool]]:
        answer = str(record["answer"])
        rng = random.Random(record["prompt"])
        if rng.random() < 0.5:
            return [(answer, True, True)]
        wrong = str(int(answer) + rng.choice([-10, -2, -1, 1, 2, 10]))
        return [(wrong, True, False), (self.feedback, False, False), (answer, True, True)]

    def corpus_extra(self) -> list[str]:
        return [self.feedback]


@ENVS.register("retry")
def build_retry(cfg) -> Retry:
    return Retry(cfg)
