"""``data=sums``: the embedded reasoning task with variable-length worked solutions, generated in code.

A problem adds 3 to 6 one-digit numbers (``"7+3+9+4="``); the demonstrated solution writes the running total
one step at a time, then the answer after ``>``::

    7+3=10;10+9=19;19+4=23>23

so a correct response is 13 to 37 tokens (one per character; EOS aside) and grows with the number of terms, and
a rambling or truncated one is possible. With ``warm_start.worked_share`` below 1, that share of the training
records demonstrates the worked solution and the rest answer at once (``>23``, 3 tokens), so the warm-started
model writes either; how much to write becomes the policy's choice, and RL can move it (docs/length.md). Held-out
records always carry the worked solution. Each record carries its step labels (``steps``: the correct step
strings, in order), which a process reward model can train on. Same split rules as the arithmetic task
(rlx/data/arithmetic.py): fixed distinct eval and dev problems; a training stream keyed by (seed, i) that never
draws them. ``is_correct`` reads the answer after the last ``>``.
"""

from __future__ import annotations

import random

from rlx.data.arithmetic import ArithmeticTask
from rlx.registry import DATA


def solution(terms: list[int]) -> tuple[list[str], int]:
    """(the step strings, the sum) of adding ``terms`` left to right."""
    steps, total = [], terms[0]
    for t in terms[1:]:
        steps.append(f"{total}+{t}={total + t}")
        total += t
    return steps, total


def final_answer(text: str) -> str | None:
    """The answer a completion gives: the text after its last ``>``, stripped (None without one)."""
    return text.rsplit(">", 1)[1].strip() if ">" in text else None


class SumsTask(ArithmeticTask):
    """The arithmetic task's splits and stream (rlx/data/arithmetic.py) over sums of ``min_terms``..``max_terms``
    numbers in 0..``max_operand``."""

    def __init__(self, min_terms: int = 3, max_terms: int = 6, max_operand: int = 9, worked_share: float = 1.0,
                 **kw):
        if not 2 <= min_terms <= max_terms:
            raise ValueError(f"data.min_terms={min_terms}, data.max_terms={max_terms}: need 2 <= min <= max")
        if not 0.0 <= worked_share <= 1.0:
            raise ValueError(f"data.warm_start.worked_share={worked_share}: must be in [0, 1]")
        self.min_terms, self.max_terms, self.worked_share = min_terms, max_terms, worked_share
        super().__init__(ops="+", max_operand=max_operand, **kw)

    def n_problems(self) -> int:
        return sum((self.max_operand + 1) ** k for k in range(self.min_terms, self.max_terms + 1))

    def _draw(self, rng: random.Random) -> tuple:
        return tuple(rng.randint(0, self.max_operand) for _ in range(rng.randint(self.min_terms, self.max_terms)))

    @staticmethod
    def record(terms: tuple) -> dict:
        steps, total = solution(list(terms))
        return {"prompt": "+".join(map(str, terms)) + "=", "answer": str(total), "steps": steps,
                "completion": ";".join(steps) + f">{total}"}

    def train_problem(self, i: int) -> dict:
        """Training record i; its completion is the answer alone (``>23``) unless a draw keyed by (seed, i) falls
        within ``worked_share``."""
        r = super().train_problem(i)
        if self.worked_share < 1.0 and random.Random(f"{self.seed}-style-{i}").random() >= self.worked_share:
            r = {**r, "completion": ">" + r["answer"]}
        return r

    @staticmethod
    def is_correct(text: str, record: dict) -> bool:
        return final_answer(text) == record["answer"]

    def max_completion_tokens(self) -> int:
        terms = [self.max_operand] * self.max_terms
        return len(";".join(solution(terms)[0])) + len(str(sum(terms))) + 2


@DATA.register("sums")
def build_sums(cfg) -> SumsTask:
    return SumsTask(min_terms=cfg.min_terms, max_terms=cfg.max_terms, max_operand=cfg.max_operand,
                    worked_share=(cfg.get("warm_start") or {}).get("worked_share", 1.0),
                    eval_size=cfg.eval_size, dev_size=cfg.dev_size, seed=cfg.seed, name=cfg.name)
