"""The embedded preference task: ranked responses to the arithmetic prompts, ordered by a hidden rule.

The hidden rule (``true_score``, exact, so reward hacking can be measured against it):

    true_score(y) = 1[first integer in y == answer] − 0.5 · 1[y.strip() is not a bare integer]

    "85"      → 1.0   correct and concise
    "85 ok"   → 0.5   correct and rambling
    "84"      → 0.0   wrong (concise)
    "84 ok"   → −0.5  wrong and rambling (also: "", "ok" — no answer at all)

so correct-and-concise beats correct-and-rambling beats wrong. Each example is one prompt with K
responses (``responses_per_prompt``, 2..4) of distinct score levels, ranked best first; wrong answers
are uniform over the answer range (``wrong_answers: random``) or near misses (answer ± 1, 2, 10:
``near``), rambling adds a one-character filler; a prompt's responses share one wrong answer and one
filler, so they differ only in the rule's two features. With K = 2 the levels of a pair are a uniform draw of 2 of
the 4, so every ordering of the rule appears. Near misses make correct-vs-wrong a test of arithmetic
itself: the 1M-parameter model then plateaus near 0.6 held-out on those pairs (DPO, docs/offline.md),
so the default is ``random``, which a small model learns to rank in minutes.

Splits: prompts come from ``ArithmeticTask`` (rlx/data/arithmetic.py). Training uses a fixed pool of
``train_size`` training prompts, cycled in a per-epoch permutation (``shuffle_seed``: the run's seed,
so seeds differ in data order; the data set itself is fixed by ``seed``), each with the same responses
every epoch (record ``id`` = pool index; the offline trainer caches reference log-probs by it). The
held-out pairs (``pref_eval_set``) are built on the eval prompts, which training never sees, and
``eval_set`` returns those prompts with ``answer`` for greedy-generation accuracy.

Metric names: ``data.eval_name`` (default ``arithmetic``) is this object's ``name``, so the base
trainer logs generation accuracy as ``eval/arithmetic/accuracy`` — the same number ``data=arithmetic``
logs — while the config keeps ``name: arithmetic_pref``. Held-out preference accuracy is logged by the
offline trainer as ``eval/arithmetic_pref/pref_accuracy`` (``eval/<data config name>/pref_accuracy``).
"""

from __future__ import annotations

import random
import re

from rlx.data.arithmetic import ArithmeticTask
from rlx.registry import DATA

_INT = re.compile(r"-?\d+")
# Fillers appended to an answer to make it "rambling" (one byte-level token each).
FILLERS = ("!", "?", ".", "~")
# Near-miss offsets for wrong answers (wrong_answers: near).
OFFSETS = (-10, -2, -1, 1, 2, 10)
# The four response types as (correct, rambling), best first; their true scores are 1, 0.5, 0, -0.5.
LEVELS = ((True, False), (True, True), (False, False), (False, True))


def true_score(prompt: str, completion: str, answer) -> float:
    """The hidden rule: 1[first integer == answer] − 0.5·1[not a bare integer] (see module docstring)."""
    text = completion.strip()
    first = _INT.search(text)
    correct = first is not None and first.group() == str(answer).strip()
    rambling = _INT.fullmatch(text) is None
    return float(correct) - 0.5 * float(rambling)


def wrong_answer(answer: int, rng: random.Random, wrong: str = "random", lo: int = 0, hi: int = 198) -> int:
    """A wrong answer: uniform over [lo, hi] without the answer, or a near miss (answer ± 1, 2, 10)."""
    if wrong == "near":
        off = rng.choice(OFFSETS)
        return answer + off if answer + off >= lo else answer - off
    value = rng.randint(lo, hi - 1)
    return value + 1 if value >= answer else value


class ArithmeticPref:
    """Preference data: ``train_batch(cursor, n)``, ``pref_eval_set()``, ``eval_set()``, ``dev_set()``.

    A record is ``{"id", "prompt", "answer", "completion", "responses", "scores", "chosen", "rejected",
    "score_chosen", "score_rejected"}``: ``responses`` ranked best first with their true ``scores``;
    ``chosen``/``rejected`` are the best and the worst (the pair when K = 2); ``completion`` is the
    correct concise answer (for SFT on this data).
    """

    kind = "preference"

    def __init__(self, name: str = "arithmetic_pref", eval_name: str = "arithmetic", responses_per_prompt: int = 2,
                 train_size: int = 4096, pref_eval_size: int = 256, ops: str = "+", max_operand: int = 99,
                 eval_size: int = 500, dev_size: int = 200, seed: int = 1234, wrong_answers: str = "random",
                 shuffle_seed: int = 0):
        if not 2 <= responses_per_prompt <= len(LEVELS):
            raise ValueError(f"data.responses_per_prompt={responses_per_prompt}: must be in [2, {len(LEVELS)}] "
                             "(one response per score level of the hidden rule)")
        if not 1 <= pref_eval_size <= eval_size:
            raise ValueError(f"data.pref_eval_size={pref_eval_size}: must be in [1, data.eval_size={eval_size}]")
        if wrong_answers not in ("random", "near"):
            raise ValueError(f"data.wrong_answers={wrong_answers}: valid: random, near")
        self.name, self.config_name, self.seed, self.wrong = eval_name, name, seed, wrong_answers
        self.shuffle_seed = shuffle_seed
        self.lo, self.hi = (-max_operand if "-" in ops else 0), 2 * max_operand
        self.k, self.train_size = responses_per_prompt, train_size
        self.task = ArithmeticTask(ops=ops, max_operand=max_operand, eval_size=eval_size, dev_size=dev_size,
                                   seed=seed, name=eval_name)
        self._pref_eval = [self.example(r, f"{seed}-pref-eval-{i}", i, k=2)
                           for i, r in enumerate(self.task.eval_set()[:pref_eval_size])]
        self._perm: dict[int, list[int]] = {}

    true_score = staticmethod(true_score)

    def example(self, problem: dict, key: str, idx: int, k: int | None = None) -> dict:
        """The record of one prompt: K responses of distinct score levels, ranked best first."""
        rng = random.Random(key)
        levels = sorted(rng.sample(range(len(LEVELS)), k or self.k))   # LEVELS is ordered best first
        answer = int(problem["answer"])
        # one wrong answer and one filler per prompt: responses differ only in the rule's two features
        wrong, filler = wrong_answer(answer, rng, self.wrong, self.lo, self.hi), rng.choice(FILLERS)
        responses = [str(answer if correct else wrong) + (filler if rambling else "")
                     for correct, rambling in (LEVELS[j] for j in levels)]
        scores = [true_score(problem["prompt"], y, problem["answer"]) for y in responses]
        return {"id": idx, "prompt": problem["prompt"], "answer": problem["answer"],
                "completion": problem["completion"], "responses": responses, "scores": scores,
                "chosen": responses[0], "rejected": responses[-1], "score_chosen": scores[0],
                "score_rejected": scores[-1]}

    def train_example(self, idx: int) -> dict:
        return self.example(self.task.train_problem(idx), f"{self.seed}-pref-train-{idx}", idx)

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._perm:
            order = list(range(self.train_size))
            random.Random(f"{self.seed}-{self.shuffle_seed}-pref-epoch-{epoch}").shuffle(order)
            self._perm = {epoch: order}   # one epoch at a time is enough for a cursor that only moves forward
        return self._perm[epoch]

    def train_batch(self, cursor: int, n: int) -> list[dict]:
        """Records ``cursor .. cursor+n-1`` of the stream (epoch e = a fixed permutation of the pool)."""
        return [self.train_example(self._order(j // self.train_size)[j % self.train_size])
                for j in range(cursor, cursor + n)]

    def pref_eval_set(self) -> list[dict]:
        """Held-out pairs (K = 2) on the eval prompts."""
        return self._pref_eval

    def eval_set(self) -> list[dict]:
        """Eval prompts with ``answer`` (greedy generation accuracy)."""
        return self.task.eval_set()

    def dev_set(self) -> list[dict]:
        return self.task.dev_set()

    def max_completion_tokens(self) -> int:
        return self.task.max_completion_tokens()


@DATA.register("arithmetic_pref")
def build_arithmetic_pref(cfg) -> ArithmeticPref:
    return ArithmeticPref(name=cfg.name, eval_name=cfg.eval_name, responses_per_prompt=cfg.responses_per_prompt,
                          train_size=cfg.train_size, pref_eval_size=cfg.pref_eval_size, ops=cfg.ops,
                          max_operand=cfg.max_operand, eval_size=cfg.eval_size, dev_size=cfg.dev_size,
                          seed=cfg.seed, wrong_answers=cfg.wrong_answers, shuffle_seed=cfg.shuffle_seed)
