"""GSM8K-style numeric answers: find the final answer a completion states and compare it as a number.

The final answer is read from the LAST answer marker in the text, in the forms models write:
``#### 18`` (GSM8K's own solutions), ``\\boxed{18}``, ``The answer is $18.00.``, ``Answer: 18``,
``A: 18``; with no marker, the last number in the text (``... so she makes 18 dollars``). Inside the
marker's span (the rest of its line, or the box's contents) an equation counts from its last ``=``
(``The answer is 18 + 2 = 20`` states 20, not 18), then the first number is the answer.

Numbers compare exactly as rationals (``fractions.Fraction``): thousands separators (``1,234``),
currency and percent signs, trailing units (``18 dollars``), negatives (``-3``, ``−3``), decimals
and fractions that are equal (``18.00`` = ``18``, ``0.5`` = ``1/2`` = ``\\frac{1}{2}``). A number is
read whole, so a correct number inside a wrong one (``1800``, ``18,000``, ``18.5``) does not match.

The data's ``answer`` is read the same way, so it may be the original worked solution ending in
``#### N`` or a bare number. Comparable to lm-evaluation-harness' "strict" (``#### N``) and
"flexible" (last number) GSM8K extraction (Cobbe et al. 2021, arXiv:2110.14168, for the format).
"""

from __future__ import annotations

import re
from fractions import Fraction

from rlx.registry import REWARDS

# A number read whole: not part of a word or of a longer number on its left.
_NUMBER = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?(?!\d)|(?<![\w.])-?\.\d+")
# Answer markers; the last one in the text wins.
_MARKERS = re.compile(r"####|\\boxed\s*\{|\\fbox\s*\{|answer\s*(?:is|was|:|=)|(?<![A-Za-z])(?-i:A):",
                      re.IGNORECASE)
_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_TEXT = re.compile(r"\\(?:text|mathrm|textbf|mbox)\s*\{([^{}]*)\}")
_CALC = re.compile(r"<<[^<>]*>>")  # GSM8K calculator annotations: <<9*2=18>>


def _clean(span: str) -> str:
    """LaTeX and currency noise out of an answer span; unicode minus to '-'."""
    s = _CALC.sub("", span).replace("\u2212", "-").replace("{,}", ",")
    s = _TEXT.sub(r" \1 ", s)
    s = _FRAC.sub(r"(\1)/(\2)", s)
    for junk in ("\\$", "$", "\\%", "%", "\\,", "\\!", "\\;", "\\left", "\\right", "^\\circ", "\\circ"):
        s = s.replace(junk, " " if junk in ("\\,", "\\;") else "")
    return re.sub(r"\((-?[\d.]+)\)/\((-?[\d.]+)\)", r"\1/\2", s)  # (1)/(2) -> 1/2


def parse_number(token: str) -> Fraction | None:
    """'1,234.50' -> 2469/2; '-3' -> -3; '3/4' -> 3/4; anything else -> None."""
    t = token.replace(",", "").replace(" ", "")
    try:
        if "/" in t:
            num, den = t.split("/")
            return Fraction(num) / Fraction(den) if Fraction(den) != 0 else None
        return Fraction(t)
    except (ValueError, ZeroDivisionError):
        return None


def _numbers(text: str) -> list[Fraction]:
    out = [parse_number(m.group()) for m in _NUMBER.finditer(text)]
    return [x for x in out if x is not None]


def _boxed(text: str, start: int) -> str:
    """Contents of the braces opened just before ``start`` (balanced)."""
    depth, i = 1, start
    while i < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return text[start:i - 1] if depth == 0 else text[start:]


def _marker_span(text: str, m: re.Match) -> str:
    if m.group().rstrip().endswith("{"):
        return _boxed(text, m.end())
    rest = text[m.end():]
    lines = rest.split("\n")
    for line in lines:  # "The answer is:\n\n18": the first line after the marker that says something
        if line.strip():
            return line
    return ""


def _from_span(span: str) -> Fraction | None:
    s = _clean(span)
    if "=" in s:
        s = s.rsplit("=", 1)[1]
    nums = _numbers(s)
    return nums[0] if nums else None


def extract_final_answer(text) -> Fraction | None:
    """The final numeric answer a text states (see the module docstring), or None."""
    text = str(text)
    markers = list(_MARKERS.finditer(text))
    for m in reversed(markers):
        value = _from_span(_marker_span(text, m))
        if value is not None:
            return value
    nums = _numbers(_clean(text))
    return nums[-1] if nums else None


def canonical(value: Fraction | None) -> str | None:
    """The string form of an extracted answer ('18', '-7/2'); it parses back to the same value."""
    return None if value is None else str(value)


@REWARDS.register("gsm8k")
def build_gsm8k(cfg=None):
    def gsm8k(prompts, completions, answer, **fields) -> list[float]:
        """1.0 when the completion's final answer equals the data's answer as a number, else 0.0
        (a None answer, e.g. a group with no majority in label-free RL, matches nothing)."""
        out = []
        for c, a in zip(completions, answer):
            if a is None:
                out.append(0.0)
                continue
            gold = extract_final_answer(a)
            if gold is None:
                raise ValueError(f"answer {str(a)[-60:]!r} states no number")
            pred = extract_final_answer(c)
            out.append(1.0 if pred is not None and pred == gold else 0.0)
        return out

    gsm8k.extract_answer = lambda completion: canonical(extract_final_answer(completion))
    return gsm8k
