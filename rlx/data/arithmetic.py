"""The embedded arithmetic task, generated in code (seeded, no download).

Prompts look like ``"37+48="`` and the completion is the exact result (``"85"``) followed by EOS
(docs/calibration.md §1). The eval and dev splits are fixed sets of distinct problems; training draws
problem *i* from a stream keyed by (seed, i) and rejects held-out ones, so the data order is a pure
function of a cursor (exact resume) and no held-out problem is ever trained on.
"""

from __future__ import annotations

import random

from rlx.registry import DATA


class ArithmeticTask:
    """Prompt dataset: ``train_batch(cursor, n)``, ``eval_set()``, ``dev_set()``; records are dicts."""

    kind = "prompts"

    def __init__(self, ops: str = "+", max_operand: int = 99, eval_size: int = 500, dev_size: int = 200,
                 seed: int = 1234, name: str = "arithmetic"):
        self.name, self.ops, self.max_operand, self.seed = name, ops, max_operand, seed
        n_problems = self.n_problems()
        if eval_size + dev_size > n_problems // 2:
            raise ValueError(f"data.eval_size + data.dev_size = {eval_size + dev_size} leaves too few of the "
                             f"{n_problems} problems for training")
        rng = random.Random(f"{seed}-heldout")
        held: list[tuple] = []
        seen: set[tuple] = set()
        while len(held) < eval_size + dev_size:
            p = self._draw(rng)
            if p not in seen:
                seen.add(p)
                held.append(p)
        self._heldout = seen
        self._eval = [self.record(p) for p in held[:eval_size]]
        self._dev = [self.record(p) for p in held[eval_size:]]

    def n_problems(self) -> int:
        return len(self.ops) * (self.max_operand + 1) ** 2

    def _draw(self, rng: random.Random) -> tuple:
        return rng.randint(0, self.max_operand), rng.choice(self.ops), rng.randint(0, self.max_operand)

    @staticmethod
    def record(problem: tuple) -> dict:
        a, op, b = problem
        result = a + b if op == "+" else a - b
        return {"prompt": f"{a}{op}{b}=", "answer": str(result), "completion": str(result)}

    def train_problem(self, i: int) -> dict:
        rng = random.Random(f"{self.seed}-train-{i}")
        while True:
            p = self._draw(rng)
            if p not in self._heldout:
                return self.record(p)

    def train_batch(self, cursor: int, n: int) -> list[dict]:
        return [self.train_problem(i) for i in range(cursor, cursor + n)]

    def eval_set(self) -> list[dict]:
        return self._eval

    def dev_set(self) -> list[dict]:
        return self._dev

    def corpus(self, n: int = 5000) -> list[str]:
        """Task text for training the embedded tokenizer."""
        return [r["prompt"] + r["completion"] for r in self.train_batch(10**7, n)]

    def max_completion_tokens(self) -> int:
        """Longest answer in characters (= tokens, one per digit) plus one for EOS."""
        lo = -self.max_operand if "-" in self.ops else 0
        return max(len(str(lo)), len(str(2 * self.max_operand))) + 1


@DATA.register("arithmetic")
def build_arithmetic(cfg) -> ArithmeticTask:
    return ArithmeticTask(ops=cfg.ops, max_operand=cfg.max_operand, eval_size=cfg.eval_size,
                          dev_size=cfg.dev_size, seed=cfg.seed, name=cfg.name)
