"""``env=calculator``: arithmetic the embedded model cannot do alone (3-digit × 2-digit products, data=calculator),
with a calculator tool.

The policy may call the tool with ``<calc>EXPR</calc>`` (EXPR = integer OP integer, OP one of + - *); the
observation is ``<r>RESULT</r>``, and the policy goes on. A turn that is not a call is the episode's answer,
scored by the reward group (data=calculator's exact answer). A call that does not parse (``<calc>`` with
anything else) ends the episode as a malformed tool call (``tool/errors``, ``env/failures``).
``env.tool=false`` switches the tool off: every call answers ``<r>?</r>``, the baseline the tool must beat.

Demonstrations for the embedded model's warm start: prompt, the call, its result, the answer; or, for a share
``1 - env.warm_start.tool_share`` of them, the answer at once.
"""

from __future__ import annotations

import random
import re

from rlx.envs.base import Env, EnvError, Episode
from rlx.registry import ENVS

CALL = re.compile(r"<calc>(.*)</calc>", re.S)
EXPR = re.compile(r"\s*(-?\d{1,9})\s*([-+*])\s*(-?\d{1,9})\s*")   # bounded operands: no call can run long


def calculate(expr: str) -> int:
    m = EXPR.fullmatch(expr)
    if m is None:
        raise EnvError(f"malformed tool call: {expr!r} is not 'integer op integer'")
    a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
    return a + b if op == "+" else a - b if op == "-" else a * b


class CalculatorEpisode(Episode):
    def __init__(self, record: dict, tool: bool):
        super().__init__(record)
        self.tool = tool
        self.results: tuple = ()   # the tool results so far: the state the policy acts from

    def observe(self, text: str) -> str | None:
        text = text.strip()
        if not text.startswith("<calc>"):
            return None   # an answer
        self.tool_calls += 1
        m = CALL.fullmatch(text)
        if m is None:
            self.tool_errors += 1
            raise EnvError(f"malformed tool call {text[:40]!r}")
        try:
            value = calculate(m.group(1))
        except EnvError:
            self.tool_errors += 1
            raise
        result = str(value) if self.tool else "?"
        self.results += (result,)
        return f"<r>{result}</r>"

    def state(self):
        return self.results


class Calculator(Env):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.tool = bool(cfg.tool)
        self.tool_share = float(cfg.warm_start.tool_share)

    def start(self, record: dict) -> CalculatorEpisode:
        return CalculatorEpisode(record, self.tool)

    def demo(self, record: dict) -> list[tuple[str, bool, bool]]:
        """A share ``env.warm_start.tool_share`` of the demonstrations calls the tool; the others answer at once
        (the model cannot multiply, so it learns the format of both and RL must learn when to call)."""
        if random.Random(record["prompt"]).random() >= self.tool_share:
            return [(record["answer"], True, True)]
        expr = record["prompt"].rstrip("=")
        return [(f"<calc>{expr}</calc>", True, True), (f"<r>{record['answer']}</r>", False, False),
                (record["answer"], True, True)]

    def corpus_extra(self) -> list[str]:
        return ["<r>?</r>"]


@ENVS.register("calculator")
def build_calculator(cfg) -> Calculator:
    return Calculator(cfg)
