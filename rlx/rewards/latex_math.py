"""LaTeX math answers checked with ``math-verify`` (Hugging Face's maintained verifier: it extracts the
answer from ``\\boxed{}``, ``$...$`` or plain expressions, parses it to SymPy and compares values,
so ``\\frac{1}{2}`` = ``0.5`` and ``2\\sqrt{2}`` = ``\\sqrt{8}``).

The gold answer is parsed as LaTeX; a bare gold string such as ``2\\sqrt{2}`` is wrapped in ``$...$``
first (without delimiters math-verify would read only its leading ``2``). math-verify's own
timeouts use ``signal.alarm``, which only works on the main thread; rlx calls it from the reward
worker thread with them switched off and enforces ``reward.timeout_s`` itself (composite.py).
"""

from __future__ import annotations

import logging

from rlx.registry import REWARDS

_ANCHORS = ("$", "\\(", "\\[", "\\boxed", "\\fbox")


def _parse(text: str):
    from math_verify import parse

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # its "timeout is disabled" notice
    return parse(text, parsing_timeout=None)


def parse_gold(answer) -> list:
    """math-verify's parse of the data's answer; bare LaTeX gets ``$...$`` around it."""
    text = str(answer).strip()
    if not any(a in text for a in _ANCHORS):
        text = f"${text}$"
    return _parse(text)


def math_equal(answer, completion: str) -> float:
    """1.0 when the completion's final answer equals ``answer`` as math-verify judges it, else 0.0."""
    from math_verify import verify

    gold = parse_gold(answer)
    if not gold:
        raise ValueError(f"answer {str(answer)[-60:]!r} cannot be parsed as math")
    pred = _parse(completion)
    return float(bool(pred) and verify(gold, pred, timeout_seconds=None))


def extract_math_answer(completion: str) -> str | None:
    """The completion's answer as LaTeX in ``$...$`` (a vote key that parses back to the same value)."""
    pred = _parse(completion)
    if not pred:
        return None
    import sympy

    try:
        return f"${sympy.latex(pred[0])}$"
    except Exception:  # a value SymPy cannot print: the matched text
        return f"${pred[-1]}$"


@REWARDS.register("math")
def build_math(cfg=None):
    def math(prompts, completions, answer, **fields) -> list[float]:
        """1.0 when math-verify finds the completion's answer equal to the data's answer, else 0.0
        (a None answer, e.g. a group with no majority in label-free RL, matches nothing)."""
        return [0.0 if a is None else math_equal(a, c) for c, a in zip(completions, answer)]

    math.extract_answer = extract_math_answer
    return math
