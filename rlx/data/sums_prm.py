"""``data=sums_prm``: step-labelled solutions of the embedded reasoning task (data=sums), generated in code, for a
process reward model (``algo=prm``; Lightman et al. 2023, "Let's Verify Step by Step", arXiv:2305.20050 §2.6).

One labelled solution per problem. A problem of n numbers has n − 1 steps (rlx/data/sums.py: ``7+3+9+4=`` is
solved as ``7+3=10;10+9=19;19+4=23>23``). With probability ``wrong_share`` the solution slips at a step k drawn
uniformly from 1..n − 1, with one of data=sums_steps' wrong steps (``wrong_step``: the running total off by ±1
or ±2, or the next number misread by ±1), and goes on from the wrong total, adding the right numbers::

    correct    7+3=10;10+9=19;19+4=23>23      labels [1, 1, 1]
    k = 2      7+3=10;10+9=20;20+4=24>24      labels [1, 0, None]      (total off by +1 at step 2)

Labels after the first wrong step follow PRM800K (Lightman et al. §2.6: "we deliberately choose to supervise only
up to the first incorrect step"): a step after the first wrong one carries no label (None), so it is in the text
but neither in the loss nor in the step accuracy. Its arithmetic is right on a wrong running total, neither plainly
correct nor plainly wrong; Math-Shepherd (Wang et al. 2024, arXiv:2312.08935) would label it 0 (no completion
from it reaches the golden answer), PRM800K leaves it out.

Every step ends at a delimiter (``DELIMITERS``): the ``;`` after it, or the ``>`` before the answer for the last
one. The PRM reads its head there (rlx/models/prm_head.py). A record is ``{"prompt", "completion", "steps",
"labels", "first_wrong", "error", "answer", "id"}``: ``completion`` the written solution, ``steps`` its step
strings, ``labels`` 1, 0 or None per step, ``first_wrong`` k (0 for a correct solution).

Splits are sums' (same ``seed``: the same eval and dev problems). The held-out solutions (``step_eval_set``,
``eval/sums_prm/step_accuracy``) are built on the first ``step_eval_size`` eval problems; training solutions on a
pool of ``train_size`` problems of sums' training stream, which never draws a held-out one, cycled in a per-epoch
permutation from ``shuffle_seed`` (the run's seed); a problem's solution is fixed by ``seed`` and its pool index.
The embedded model's warm start is data=sums' build (``warm_start_data``, as data=sums_steps).
"""

from __future__ import annotations

import random

from rlx.data.preference import epoch_position
from rlx.data.sums import SumsTask
from rlx.data.sums_steps import ERRORS, wrong_step
from rlx.registry import DATA

#: the characters that end a step: ';' between steps, '>' before the answer
DELIMITERS = (";", ">")


def labelled_solution(problem: dict, rng: random.Random, wrong_share: float, errors: tuple[str, ...],
                      max_operand: int) -> dict:
    """A written solution of a sums record (``prompt``, ``steps``, ``answer``) with its step labels: all correct,
    or (probability ``wrong_share``) wrong from a step k drawn uniformly, unlabelled after k (module docstring)."""
    terms = [int(t) for t in problem["prompt"].rstrip("=").split("+")]
    steps, n = list(problem["steps"]), len(problem["steps"])
    if rng.random() >= wrong_share:
        return {"prompt": problem["prompt"], "completion": ";".join(steps) + ">" + problem["answer"],
                "steps": steps, "labels": [1] * n, "first_wrong": 0, "error": None, "answer": problem["answer"]}
    k, error = rng.randint(1, n), rng.choice(errors)
    written = steps[: k - 1] + [wrong_step(sum(terms[:k]), terms[k], error, rng, max_operand)]
    total = int(written[-1].split("=")[1])
    for t in terms[k + 1:]:   # the rest, right on the wrong running total
        written.append(f"{total}+{t}={total + t}")
        total += t
    return {"prompt": problem["prompt"], "completion": ";".join(written) + f">{total}", "steps": written,
            "labels": [1] * (k - 1) + [0] + [None] * (n - k), "first_wrong": k, "error": error,
            "answer": problem["answer"]}


class SumsPRM:
    """Step-labelled data: ``train_batch(cursor, n)``, ``step_eval_set()``, ``delimiters``, and sums' ``eval_set()``,
    ``dev_set()``, ``is_correct``, ``corpus`` (the warm start, the runner's data hash)."""

    kind = "steps"
    delimiters = DELIMITERS

    def __init__(self, name: str = "sums_prm", eval_name: str = "sums", errors=ERRORS, wrong_share: float = 0.5,
                 train_size: int = 4096, step_eval_size: int = 500, min_terms: int = 3, max_terms: int = 6,
                 max_operand: int = 9, eval_size: int = 500, dev_size: int = 200, seed: int = 1234,
                 shuffle_seed: int = 0):
        errors = tuple(errors)
        if not errors or any(e not in ERRORS for e in errors):
            raise ValueError(f"data.errors={list(errors)}: a non-empty list of {', '.join(ERRORS)}")
        if "operand" in errors and max_operand < 1:
            raise ValueError(f"data.max_operand={max_operand}: an 'operand' error needs another number to misread")
        if not 0.0 <= wrong_share <= 1.0:
            raise ValueError(f"data.wrong_share={wrong_share}: must be in [0, 1]")
        if not 1 <= step_eval_size <= eval_size:
            raise ValueError(f"data.step_eval_size={step_eval_size}: must be in [1, data.eval_size={eval_size}]")
        if train_size < 1:
            raise ValueError(f"data.train_size={train_size}: must be >= 1")
        self.name, self.config_name, self.seed, self.shuffle_seed = eval_name, name, seed, shuffle_seed
        self.errors, self.wrong_share, self.train_size = errors, wrong_share, train_size
        self.task = SumsTask(min_terms=min_terms, max_terms=max_terms, max_operand=max_operand, eval_size=eval_size,
                             dev_size=dev_size, seed=seed, name=eval_name)
        self._held = [self.solution(r, f"{seed}-prm-eval-{i}", i)
                      for i, r in enumerate(self.task.eval_set()[:step_eval_size])]
        self._perm: dict = {}

    def solution(self, problem: dict, key: str, idx: int) -> dict:
        rng = random.Random(key)
        return dict(labelled_solution(problem, rng, self.wrong_share, self.errors, self.task.max_operand), id=idx)

    def train_example(self, idx: int) -> dict:
        return self.solution(self.task.train_problem(idx), f"{self.seed}-prm-train-{idx}", idx)

    def train_batch(self, cursor: int, n: int) -> list[dict]:
        """Records ``cursor .. cursor+n-1`` of the stream (epoch e = a fixed permutation of the pool)."""
        order = f"{self.seed}-{self.shuffle_seed}-prm"
        return [self.train_example(epoch_position(j, self.train_size, order, self._perm))
                for j in range(cursor, cursor + n)]

    def step_eval_set(self) -> list[dict]:
        """Held-out labelled solutions on sums' eval problems."""
        return self._held

    def eval_set(self) -> list[dict]:
        return self.task.eval_set()

    def dev_set(self) -> list[dict]:
        return self.task.dev_set()

    def is_correct(self, text: str, record: dict) -> bool:
        return self.task.is_correct(text, record)

    def corpus(self, n: int = 5000) -> list[str]:
        return self.task.corpus(n)

    def max_completion_tokens(self) -> int:
        return self.task.max_completion_tokens()


@DATA.register("sums_prm")
def build_sums_prm(cfg) -> SumsPRM:
    return SumsPRM(name=cfg.name, eval_name=cfg.eval_name, errors=list(cfg.errors), wrong_share=cfg.wrong_share,
                   train_size=cfg.train_size, step_eval_size=cfg.step_eval_size, min_terms=cfg.min_terms,
                   max_terms=cfg.max_terms, max_operand=cfg.max_operand, eval_size=cfg.eval_size,
                   dev_size=cfg.dev_size, seed=cfg.seed, shuffle_seed=cfg.shuffle_seed)
