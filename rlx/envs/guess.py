"""``env=guess``: guess a secret integer in 1..n with higher/lower feedback (data=guess).

Each turn is a guess. A right guess ends the episode (and is scored correct); otherwise the observation is
``>`` (the secret is higher) or ``<`` (lower), up to ``env.max_turns`` guesses. The state the policy acts from
is the interval the feedback so far leaves open, so states recur across the trajectories of a group (every
episode of a prompt starts from 1..n; every one that guessed 8 of 1..15 and heard ``>`` is at 9..15): the
anchor states GiGPO groups actions by. A guess that is not an integer ends the episode (``tool/errors``,
``env/failures``).

Demonstrations for the warm start: a random guess inside the open interval each turn, a valid strategy that is
slower than bisection (which finds any secret in ceil(log2(n + 1)) guesses, within env.max_turns).
"""

from __future__ import annotations

import random

from rlx.envs.base import Env, EnvError, Episode
from rlx.registry import ENVS


class GuessEpisode(Episode):
    def __init__(self, record: dict):
        super().__init__(record)
        self.secret, self.lo, self.hi = int(record["answer"]), 1, int(record["n"])

    def observe(self, text: str) -> str | None:
        self.tool_calls += 1
        try:
            guess = int(text.strip())
        except ValueError:
            self.tool_errors += 1
            raise EnvError(f"a guess must be an integer, got {text.strip()[:20]!r}") from None
        if guess == self.secret:
            return None
        if guess < self.secret:
            self.lo = max(self.lo, guess + 1)
            return ">"
        self.hi = min(self.hi, guess - 1)
        return "<"

    def state(self):
        return (self.record["n"], self.lo, self.hi)


class Guess(Env):
    def start(self, record: dict) -> GuessEpisode:
        return GuessEpisode(record)

    def demo(self, record: dict) -> list[tuple[str, bool, bool]]:
        """A valid but slow search: each guess uniform in the interval the feedback leaves open (seeded by the
        record's stream index), which needs about 2 ln n guesses where bisection needs log2 n; RL has to find
        the better guess from each state."""
        lo, hi, secret, out = 1, int(record["n"]), int(record["answer"]), []
        rng = random.Random(f"{record['prompt']}{secret}-{record.get('i', 0)}")
        while True:
            g = rng.randint(lo, hi)
            out.append((str(g), True, True))
            if g == secret:
                return out
            lo, hi = (g + 1, hi) if g < secret else (lo, g - 1)
            out.append((">" if g < secret else "<", False, False))


@ENVS.register("guess")
def build_guess(cfg) -> Guess:
    return Guess(cfg)
