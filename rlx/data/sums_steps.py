"""``data=sums_steps``: step-level preference pairs on the embedded reasoning task (data=sums), generated in code,
for Step-DPO (Lai et al. 2024, arXiv:2406.18629, §3.1).

One pair per problem. A problem of n numbers has n − 1 steps (rlx/data/sums.py: ``7+3+9+4=`` is solved as
``7+3=10;10+9=19;19+4=23>23``); its pair is about step k, drawn uniformly from 1..n − 1:

    prompt    the problem and the correct steps s_1..s_{k−1}, each with its ';'       7+3+9+4=7+3=10;
    chosen    s_k, the correct next step                                            10+9=19
    rejected  a wrong k-th step, one of two slips (``data.errors``, drawn uniformly):
      total     the running total off by ±1 or ±2, the operands right               10+9=20
      operand   the next number misread by ±1 (kept in 0..max_operand), summed right  10+8=18

The prefix is in the prompt and carries no loss; the response is the step alone, tokenised without EOS
(rlx/data/step_pairs.py), so chosen and rejected differ only inside the step. Both steps are written by the
generator: the paper's pipeline instead samples π_ref, locates its first wrong step and keeps π_ref's own
correct continuation as s_win (in-distribution data, §3.2); ``data=step_pairs`` reads such pairs from a file.
Each record also carries ``k``, ``error``, the problem's ``steps`` and ``answer``, and ``completion``: the correct
continuation of the prefix (s_k..s_{n−1} and the answer), its SFT target.

Splits are sums' (same ``seed``: the same eval and dev problems). The held-out pairs (``pref_eval_set``) are built
on the first ``pref_eval_size`` eval problems; training pairs on a pool of ``train_size`` problems of sums'
training stream, which never draws a held-out one. The pool is cycled in a per-epoch permutation from
``shuffle_seed`` (the run's seed); a problem's pair is fixed by ``seed`` and its pool index (record ``id``, the key
of the offline trainer's reference cache). ``eval_set`` / ``dev_set`` are sums' problems, so the base trainer logs
greedy accuracy as ``eval/sums/accuracy`` (``data.eval_name``: the number data=sums logs), and the offline
trainer the held-out pair accuracy as ``eval/sums_steps/pref_accuracy``.

Warm start (the embedded model, rlx/trainers/embedded.py): the ``warm_start_data`` node names data=sums' build, so
Step-DPO starts from the model experiment=sums starts from (one cache entry for every run seed).
"""

from __future__ import annotations

import random

from rlx.data.preference import epoch_position
from rlx.data.step_pairs import step_record, step_tokens
from rlx.data.sums import SumsTask
from rlx.registry import DATA

#: the kinds of wrong step (module docstring)
ERRORS = ("total", "operand")
#: how far a wrong running total is from the right one
TOTAL_OFFSETS = (-2, -1, 1, 2)
#: how far a misread operand is from the right one
OPERAND_OFFSETS = (-1, 1)


def wrong_step(left: int, right: int, error: str, rng: random.Random, max_operand: int) -> str:
    """A wrong version of the step ``left+right=<left+right>``: the total off by ±1 or ±2 (not below 0), or the
    right operand misread by ±1 (the other side when that leaves 0..max_operand) and summed correctly."""
    if error == "total":
        d = rng.choice(TOTAL_OFFSETS)
        total = left + right + d if left + right + d >= 0 else left + right - d
        return f"{left}+{right}={total}"
    misread = right + rng.choice(OPERAND_OFFSETS)
    if not 0 <= misread <= max_operand:
        misread = 2 * right - misread
    return f"{left}+{misread}={left + misread}"


def step_pair(problem: dict, rng: random.Random, errors: tuple[str, ...], max_operand: int) -> dict:
    """The step pair of a sums record (``prompt``, ``steps``, ``answer``) at a step k drawn uniformly."""
    steps = problem["steps"]
    k = rng.randint(1, len(steps))
    left, right = (int(x) for x in steps[k - 1].split("=")[0].split("+"))
    error = rng.choice(errors)
    prefix = "".join(s + ";" for s in steps[: k - 1])
    return step_record(
        problem["prompt"],
        prefix,
        steps[k - 1],
        wrong_step(left, right, error, rng, max_operand),
        k=k,
        error=error,
        steps=steps,
        answer=problem["answer"],
        completion=";".join(steps[k - 1 :]) + ">" + problem["answer"],
    )


class SumsDerived:
    """A data set built on sums' problems (``self.task``, rlx/data/sums.py: the same splits): a training pool of
    ``train_size`` problems of sums' stream cycled in a per-epoch permutation from ``shuffle_seed`` (``train_batch``
    over ``train_example(i)``), ``held_size`` held-out records on sums' first eval problems (``held(problem, key,
    i)``), and sums' ``eval_set``, ``dev_set``, ``is_correct``, ``corpus`` and ``max_completion_tokens`` (the
    generation eval and the warm start). A subclass names its ``stream`` and ``held_key`` (the config key of
    ``held_size``) and defines ``held``."""

    stream = ""
    held_key = ""

    def __init__(self, name: str, eval_name: str, errors, train_size: int, held_size: int, min_terms: int,
                 max_terms: int, max_operand: int, eval_size: int, dev_size: int, seed: int, shuffle_seed: int):
        errors = tuple(errors)
        if not errors or any(e not in ERRORS for e in errors):
            raise ValueError(f"data.errors={list(errors)}: a non-empty list of {', '.join(ERRORS)}")
        if "operand" in errors and max_operand < 1:
            raise ValueError(f"data.max_operand={max_operand}: an 'operand' error needs another number to misread")
        if not 1 <= held_size <= eval_size:
            raise ValueError(f"data.{self.held_key}={held_size}: must be in [1, data.eval_size={eval_size}]")
        if train_size < 1:
            raise ValueError(f"data.train_size={train_size}: must be >= 1")
        self.name, self.config_name, self.seed, self.shuffle_seed = eval_name, name, seed, shuffle_seed
        self.errors, self.train_size = errors, train_size
        self.task = SumsTask(min_terms=min_terms, max_terms=max_terms, max_operand=max_operand, eval_size=eval_size,
                             dev_size=dev_size, seed=seed, name=eval_name)
        self._held = [self.held(r, f"{seed}-{self.stream}-eval-{i}", i)
                      for i, r in enumerate(self.task.eval_set()[:held_size])]
        self._perm: dict = {}

    def held(self, problem: dict, key: str, idx: int) -> dict:
        """The record built on ``problem``, its randomness keyed by ``key``, with ``id`` = ``idx``."""
        raise NotImplementedError

    def train_example(self, idx: int) -> dict:
        return self.held(self.task.train_problem(idx), f"{self.seed}-{self.stream}-train-{idx}", idx)

    def train_batch(self, cursor: int, n: int) -> list[dict]:
        """Records ``cursor .. cursor+n-1`` of the stream (epoch e = a fixed permutation of the pool)."""
        order = f"{self.seed}-{self.shuffle_seed}-{self.stream}"
        return [self.train_example(epoch_position(j, self.train_size, order, self._perm))
                for j in range(cursor, cursor + n)]

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


class SumsSteps(SumsDerived):
    """Preference data: ``train_batch(cursor, n)``, ``pref_eval_set()``, and sums' ``eval_set()``, ``dev_set()``,
    ``is_correct``, ``corpus`` for the generation eval and the warm start (``SumsDerived``). After ``prepare(tok)``
    every record carries ``prompt_ids`` / ``response_ids`` (the steps without EOS)."""

    kind = "preference"
    stream = "step"
    held_key = "pref_eval_size"

    def __init__(self, name: str = "sums_steps", eval_name: str = "sums", errors=ERRORS, train_size: int = 4096,
                 pref_eval_size: int = 500, min_terms: int = 3, max_terms: int = 6, max_operand: int = 9,
                 eval_size: int = 500, dev_size: int = 200, seed: int = 1234, shuffle_seed: int = 0):
        self.tok = None
        super().__init__(name, eval_name, errors, train_size, pref_eval_size, min_terms, max_terms, max_operand,
                         eval_size, dev_size, seed, shuffle_seed)

    def held(self, problem: dict, key: str, idx: int) -> dict:
        rec = dict(step_pair(problem, random.Random(key), self.errors, self.task.max_operand), id=idx)
        if self.tok is not None:
            rec["prompt_ids"], rec["response_ids"] = step_tokens(self.tok, rec["prompt"], rec["responses"])
        return rec

    def prepare(self, tok) -> None:
        """Tokenise the held-out pairs, and every training pair from now on, without EOS after the step."""
        self.tok = tok
        for rec in self._held:
            rec["prompt_ids"], rec["response_ids"] = step_tokens(tok, rec["prompt"], rec["responses"])

    def pref_eval_set(self) -> list[dict]:
        """Held-out pairs on sums' eval problems."""
        return self._held


@DATA.register("sums_steps")
def build_sums_steps(cfg) -> SumsSteps:
    return SumsSteps(
        name=cfg.name,
        eval_name=cfg.eval_name,
        errors=list(cfg.errors),
        train_size=cfg.train_size,
        pref_eval_size=cfg.pref_eval_size,
        min_terms=cfg.min_terms,
        max_terms=cfg.max_terms,
        max_operand=cfg.max_operand,
        eval_size=cfg.eval_size,
        dev_size=cfg.dev_size,
        seed=cfg.seed,
        shuffle_seed=cfg.shuffle_seed,
    )
