"""Rewards for the embedded reasoning task (data=sums): the final answer, and the share of correct steps."""

from __future__ import annotations

from rlx.data.sums import final_answer
from rlx.registry import REWARDS


@REWARDS.register("sums_correct")
def build_sums_correct(cfg=None):
    def sums_correct(prompts, completions, answer, **fields) -> list[float]:
        """1.0 when the text after the completion's last ``>`` equals the answer, else 0.0."""
        return [1.0 if a is not None and final_answer(c) == str(a) else 0.0 for c, a in zip(completions, answer)]

    sums_correct.extract_answer = final_answer   # for majority votes (maj@k, TTRL)
    return sums_correct


@REWARDS.register("sums_steps")
def build_sums_steps(cfg=None):
    def sums_steps(prompts, completions, steps, **fields) -> list[float]:
        """Share of the record's step labels the completion writes, in order, before its answer (0..1): a
        partial-credit term (off in the default reward)."""
        out = []
        for c, want in zip(completions, steps):
            written = c.rsplit(">", 1)[0].split(";")
            out.append(sum(w == s for w, s in zip(written, want)) / len(want) if want else 0.0)
        return out

    return sums_steps
