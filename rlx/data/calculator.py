"""``data=calculator``: 3-digit × 2-digit products (``"123*45="`` -> ``"5535"``), the embedded model cannot compute
them alone; ``env=calculator`` gives it a tool. Same split rules as the arithmetic task (rlx/data/arithmetic.py):
fixed distinct eval and dev problems, a training stream keyed by (seed, i) that never draws them."""

from __future__ import annotations

import random

from rlx.data.arithmetic import ArithmeticTask
from rlx.registry import DATA


class CalculatorTask(ArithmeticTask):
    def __init__(self, a_digits: int = 3, b_digits: int = 2, **kw):
        self.a_range = (10 ** (a_digits - 1), 10 ** a_digits - 1)
        self.b_range = (10 ** (b_digits - 1), 10 ** b_digits - 1)
        super().__init__(ops="*", max_operand=self.a_range[1], **kw)

    def n_problems(self) -> int:
        return (self.a_range[1] - self.a_range[0] + 1) * (self.b_range[1] - self.b_range[0] + 1)

    def _draw(self, rng: random.Random) -> tuple:
        return rng.randint(*self.a_range), "*", rng.randint(*self.b_range)

    @staticmethod
    def record(problem: tuple) -> dict:
        a, _, b = problem
        return {"prompt": f"{a}*{b}=", "answer": str(a * b), "completion": str(a * b)}

    def max_completion_tokens(self) -> int:
        return len(str(self.a_range[1] * self.b_range[1])) + 1


@DATA.register("calculator")
def build_calculator(cfg) -> CalculatorTask:
    return CalculatorTask(a_digits=cfg.a_digits, b_digits=cfg.b_digits, eval_size=cfg.eval_size,
                          dev_size=cfg.dev_size, seed=cfg.seed, name=cfg.name)
