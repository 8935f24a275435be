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

from rlx.data.sums_steps import ERRORS, SumsDerived, wrong_step
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


class SumsPRM(SumsDerived):
    """Step-labelled data: ``train_batch(cursor, n)``, ``step_eval_set()``, ``delimiters``, and sums' ``eval_set()``,
    ``dev_set()``, ``is_correct``, ``corpus`` (the warm start, the runner's data hash; ``SumsDerived``)."""

    kind = "steps"
    delimiters = DELIMITERS
    stream = "prm"
    held_key = "step_eval_size"

    def __init__(self, name: str = "sums_prm", eval_name: str = "sums", errors=ERRORS, wrong_share: float = 0.5,
                 train_size: int = 4096, step_eval_size: int = 500, min_terms: int = 3, max_terms: int = 6,
                 max_operand: int = 9, eval_size: int = 500, dev_size: int = 200, seed: int = 1234,
                 shuffle_seed: int = 0):
        if not 0.0 <= wrong_share <= 1.0:
            raise ValueError(f"data.wrong_share={wrong_share}: must be in [0, 1]")
        self.wrong_share = wrong_share
        super().__init__(name, eval_name, errors, train_size, step_eval_size, min_terms, max_terms, max_operand,
                         eval_size, dev_size, seed, shuffle_seed)

    def held(self, problem: dict, key: str, idx: int) -> dict:
        rng = random.Random(key)
        return dict(labelled_solution(problem, rng, self.wrong_share, self.errors, self.task.max_operand), id=idx)

    def step_eval_set(self) -> list[dict]:
        """Held-out labelled solutions on sums' eval problems."""
        return self._held


@DATA.register("sums_prm")
def build_sums_prm(cfg) -> SumsPRM:
    return SumsPRM(name=cfg.name, eval_name=cfg.eval_name, errors=list(cfg.errors), wrong_share=cfg.wrong_share,
                   train_size=cfg.train_size, step_eval_size=cfg.step_eval_size, min_terms=cfg.min_terms,
                   max_terms=cfg.max_terms, max_operand=cfg.max_operand, eval_size=cfg.eval_size,
                   dev_size=cfg.dev_size, seed=cfg.seed, shuffle_seed=cfg.shuffle_seed)
