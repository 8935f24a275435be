"""Format and repetition terms: shaping that needs no answer.

``format``: 1.0 when the whole completion matches ``cfg.pattern`` (default: R1's
``<think>…</think><answer>…</answer>``, DeepSeek-AI 2025, arXiv:2501.12948 §2.2.2), else 0.0.

``repetition``: the n-gram repetition penalty of Yeo et al. 2025 ("Demystifying Long Chain-of-Thought
Reasoning in LLMs", arXiv:2502.03373): with the completion's word n-grams,

    r = max_penalty · (1 − #distinct n-grams / #n-grams)      (0 for fewer than n words)

so a completion that never repeats an n-gram gets 0 and one that repeats a single n-gram tends to
``max_penalty`` (< 0).
"""

from __future__ import annotations

import re

from rlx.registry import REWARDS

THINK_ANSWER = r"\s*<think>.*?</think>\s*<answer>.*?</answer>\s*"


@REWARDS.register("format")
def build_format(cfg=None):
    pattern = re.compile((cfg.get("pattern") if cfg is not None else None) or THINK_ANSWER, re.DOTALL)

    def format(prompts, completions, **fields) -> list[float]:
        """1.0 when the completion matches the format pattern in full, else 0.0."""
        return [1.0 if pattern.fullmatch(c) else 0.0 for c in completions]

    return format


def repetition_penalty(text: str, ngram_size: int, max_penalty: float) -> float:
    words = text.lower().split()
    if len(words) < ngram_size:
        return 0.0
    grams = [tuple(words[i:i + ngram_size]) for i in range(len(words) - ngram_size + 1)]
    return max_penalty * (1.0 - len(set(grams)) / len(grams))


@REWARDS.register("repetition")
def build_repetition(cfg):
    n, max_penalty = int(cfg.ngram_size), float(cfg.max_penalty)
    if n < 1 or max_penalty > 0:
        raise ValueError(f"repetition: ngram_size={n} must be >= 1 and max_penalty={max_penalty} <= 0")

    def repetition(prompts, completions, **fields) -> list[float]:
        """max_penalty · (1 − distinct/total word n-grams) per completion."""
        return [repetition_penalty(c, n, max_penalty) for c in completions]

    return repetition
