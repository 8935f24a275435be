"""Demonstrations for the SFT stage of the RLHF pipeline: the embedded arithmetic prompts answered
correctly, the way a demonstrator writes them, which is not quite the way the people who rank answers
prefer them: a share ``verbose_frac`` of the answers ends with ``filler`` (``"85!"``), while the hidden
preference rule of ``data=arithmetic_pref`` scores a bare integer higher (``true_score``: 1 for "85",
0.5 for "85!"). InstructGPT's premise in miniature (arXiv:2203.02155 §1): demonstrations teach the
task, rankings teach what people prefer, and RLHF moves the policy from the first toward the second.

Prompts, splits and answers are ``ArithmeticTask``'s (rlx/data/arithmetic.py); record i of the training
stream is a pure function of (seed, i), so the data order is a cursor (exact resume).
"""

from __future__ import annotations

import random

from rlx.data.arithmetic import ArithmeticTask
from rlx.registry import DATA


class ArithmeticDemos:
    kind = "prompts"

    def __init__(self, verbose_frac: float = 0.7, filler: str = "!", eval_name: str = "arithmetic",
                 ops: str = "+", max_operand: int = 99, eval_size: int = 500, dev_size: int = 200, seed: int = 1234):
        if not 0.0 <= verbose_frac <= 1.0:
            raise ValueError(f"data.verbose_frac={verbose_frac}: must be in [0, 1]")
        self.name, self.seed, self.verbose_frac, self.filler = eval_name, seed, verbose_frac, filler
        self.task = ArithmeticTask(ops=ops, max_operand=max_operand, eval_size=eval_size, dev_size=dev_size,
                                   seed=seed, name=eval_name)

    def train_batch(self, cursor: int, n: int) -> list[dict]:
        out = []
        for i in range(cursor, cursor + n):
            r = dict(self.task.train_problem(i))
            if random.Random(f"{self.seed}-demo-{i}").random() < self.verbose_frac:
                r["completion"] = r["answer"] + self.filler
            out.append(r)
        return out

    def eval_set(self) -> list[dict]:
        return self.task.eval_set()

    def dev_set(self) -> list[dict]:
        return self.task.dev_set()


@DATA.register("arithmetic_demos")
def build_arithmetic_demos(cfg) -> ArithmeticDemos:
    return ArithmeticDemos(verbose_frac=cfg.verbose_frac, filler=cfg.filler, eval_name=cfg.eval_name, ops=cfg.ops,
                           max_operand=cfg.max_operand, eval_size=cfg.eval_size, dev_size=cfg.dev_size, seed=cfg.seed)
