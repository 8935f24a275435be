"""A weighted sum of reward terms, each a plain callable from the reward registry, isolated per sample.

A term that raises, returns the wrong length or a non-number, or overruns ``timeout_s`` does not
stop the run: the samples it could not score get NaN, the trainer counts them in
``reward/failures`` and masks them out of the update. How a term is called:

  1. the whole batch at once on a worker thread, with a deadline of ``timeout_s`` seconds (the fast
     path: one thread start per term and step, ~0.1 ms); values that are not finite numbers fail
     only their own sample;
  2. if the batch call raises, overruns or returns the wrong length, each sample again on its own
     worker thread, all at once, with one shared deadline of ``timeout_s``; the samples that raise
     or are still running at the deadline fail, the rest keep their values.

So a step costs at most 2·``timeout_s`` per failing term. ``timeout_s: 0`` calls terms on the
trainer's thread with no deadline (exceptions are still isolated per sample). Threads cannot be
killed: a term that never returns keeps its (daemon) thread, and one stuck in C code that holds the
GIL blocks the process; reward code that may hang should bound itself (e.g. a subprocess).

A token-level term (its factory sets ``token_level = True``: ``reward=prm``) returns, per completion, a list of
per-token rewards aligned with its completion ids. Its weighted lists are summed into ``token_rewards`` (the
trainer's ``Batch.token_rewards``), not into ``total``: ``total`` stays the sequence reward of the other terms
(the score at the last token), and the term's logged value (``terms``) is its sum over the completion. A sample
whose list is not all finite numbers fails, as a non-number does for a sequence term.
"""

from __future__ import annotations

import math
import os
import queue
import sys
import threading
import time
from collections import deque

from rlx.registry import REWARDS

_PENDING = object()


class _Worker:
    """One daemon thread that runs calls handed to it, reused from call to call (starting a thread per reward
    call cost ~0.5 ms, 5% of a 1M-parameter step). A call that misses its deadline keeps this thread busy
    forever, so ``call_with_deadline`` then drops it and later calls get a new one."""

    def __init__(self):
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._loop, daemon=True, name="rlx-reward").start()

    def _loop(self):
        while True:
            fn, args, kwargs, box, done = self.jobs.get()
            try:
                box[0] = fn(*args, **kwargs)
            except BaseException as e:  # noqa: BLE001 - reported, never re-raised on the worker
                box[1] = f"{type(e).__name__}: {e}"
            done.set()


_WORKER: list = []   # the reusable worker; emptied when a call times out on it
_WORKER_LOCK = threading.Lock()
os.register_at_fork(after_in_child=_WORKER.clear)   # a forked child has no copy of the worker's thread


def call_with_deadline(fn, args: tuple, kwargs: dict, timeout_s: float):
    """fn(*args, **kwargs) on a daemon worker thread: (value, None), or (None, error message) on an exception
    or when it has not returned after ``timeout_s`` seconds (0 = on this thread, no deadline)."""
    if not timeout_s:
        try:
            return fn(*args, **kwargs), None
        except Exception as e:
            return None, f"{type(e).__name__}: {e}"
    with _WORKER_LOCK:   # one caller at a time owns the worker; a concurrent caller gets its own
        worker = _WORKER.pop() if _WORKER else _Worker()
    box, done = [_PENDING, None], threading.Event()
    worker.jobs.put((fn, args, kwargs, box, done))
    if not done.wait(timeout_s):
        return None, f"no result after timeout_s={timeout_s:g} s"   # the worker stays stuck: not returned
    with _WORKER_LOCK:
        if not _WORKER:
            _WORKER.append(worker)
    return (None, box[1]) if box[1] is not None else (box[0], None)


def _as_float(v) -> float:
    """A reward value as float; NaN (a failed sample) for None, non-numbers and non-finite values."""
    try:
        x = float(v)
    except (TypeError, ValueError):
        return math.nan
    return x if math.isfinite(x) else math.nan


def _as_token_values(v) -> tuple[float, ...] | None:
    """A token-level term's value as a tuple of floats; None (a failed sample) unless all are finite numbers."""
    try:
        vals = tuple(float(x) for x in v)
    except (TypeError, ValueError):
        return None
    return vals if all(math.isfinite(x) for x in vals) else None


def token_level(fn_name: str) -> bool:
    """Whether the reward function registered as ``fn_name`` gives per-token rewards (its factory's ``token_level``)."""
    return bool(getattr(REWARDS.get(fn_name), "token_level", False))


def run_isolated(batch_call, one_call, n: int, timeout_s: float, convert, failed):
    """(values [n], batch error or None): ``batch_call()`` on a worker thread with a deadline, else
    ``one_call(i)`` for every sample concurrently with one shared deadline (steps 1-2 above).

    ``batch_call()`` returns n values and ``one_call(i)`` a list of one; ``convert`` maps a raw value
    (and raises TypeError on a non-iterable batch result); ``failed`` is the value of a failed sample.
    """
    out, err = call_with_deadline(batch_call, (), {}, timeout_s)
    if err is None:
        try:
            vals = [convert(v) for v in out]
            if len(vals) == n:
                return vals, None
            err = f"returned {len(vals)} values for {n} completions"
        except TypeError:
            err = f"returned {type(out).__name__}, not a list"

    def one(i):
        try:
            vals = list(one_call(i))
        except Exception:
            return failed
        return convert(vals[0]) if len(vals) == 1 else failed

    if not timeout_s:
        return [one(i) for i in range(n)], err
    results = [failed] * n
    deadline = time.monotonic() + timeout_s

    def run(i):
        results[i] = one(i)

    threads = [threading.Thread(target=run, args=(i,), daemon=True, name="rlx-reward") for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return [failed if t.is_alive() else results[i] for i, t in enumerate(threads)], err


class CompositeReward:
    def __init__(self, cfg):
        self.score_term = cfg.score_term
        self.timeout_s = float(cfg.get("timeout_s", 0) or 0)
        self.terms = {name: (REWARDS.get(t.fn)(t), float(t.weight)) for name, t in cfg.terms.items()}
        self.token_terms = [name for name, t in cfg.terms.items() if token_level(t.fn)]
        if self.score_term not in self.terms:
            raise ValueError(f"reward.score_term='{self.score_term}' is not one of reward.terms: {list(self.terms)}")
        self.errors: deque[str] = deque(maxlen=100)   # the latest failure messages
        self.failures = {name: 0 for name in self.terms}   # failed samples per term, whole run
        self._reported: set[str] = set()

    def __call__(self, prompts, completions, **fields) -> list[float]:
        return self.score(prompts, completions, **fields)["total"]

    # ------------------------------------------------------------------ answers (label-free RL, maj@k)
    @property
    def can_extract(self) -> bool:
        """True when the score term can say which answer a completion gives (``fn.extract_answer``)."""
        return callable(getattr(self.terms[self.score_term][0], "extract_answer", None))

    def answers(self, completions: list[str]) -> list:
        """The score term's answer of each completion (hashable, None = no answer), isolated like scoring."""
        if not self.can_extract:
            raise ValueError(f"reward.score_term '{self.score_term}' cannot extract answers (its function has no "
                             "extract_answer); majority votes need one (gsm8k, math, arithmetic_correct have it)")
        extract = self.terms[self.score_term][0].extract_answer
        vals, _ = run_isolated(lambda: [extract(c) for c in completions], lambda i: [extract(completions[i])],
                               len(completions), self.timeout_s, lambda v: v, None)
        return vals

    # ------------------------------------------------------------------ scoring
    def score(self, prompts, completions, **fields) -> dict:
        """{"total": [...], "score": [...], "terms": {name: [...]}, "failed": [bool]}; NaN = unscorable. With a
        token-level term also "token_rewards": per sample the weighted per-token rewards (None where it failed)."""
        n = len(completions)
        terms, tokens, failed = {}, {}, [False] * n
        for name, (fn, _) in self.terms.items():
            def one(i, fn=fn):
                return fn([prompts[i]], [completions[i]], **{k: [v[i]] for k, v in fields.items()})

            dense = name in self.token_terms
            vals, err = run_isolated(lambda fn=fn: fn(prompts, completions, **fields), one, n, self.timeout_s,
                                     _as_token_values if dense else _as_float, None if dense else math.nan)
            if dense:
                tokens[name], vals = vals, [math.nan if v is None else sum(v) for v in vals]
            self._count(name, vals, err)
            terms[name] = vals
            failed = [f or not math.isfinite(v) for f, v in zip(failed, vals)]
        total = [math.nan if failed[i] else sum(w * terms[k][i] for k, (_, w) in self.terms.items() if k not in tokens)
                 for i in range(n)]
        out = {"total": total, "score": terms[self.score_term], "terms": terms, "failed": failed}
        if tokens:
            out["token_rewards"] = [None if failed[i] else self._weighted([tokens[k][i] for k in tokens], list(tokens))
                                    for i in range(n)]
        return out

    def _weighted(self, values: list[tuple], names: list[str]) -> list[float]:
        """Σ_term weight · per-token rewards of one sample (lists of unequal length padded with 0)."""
        out = [0.0] * max(len(v) for v in values)
        for v, name in zip(values, names):
            for t, x in enumerate(v):
                out[t] += self.terms[name][1] * x
        return out

    def _count(self, name: str, vals: list[float], err: str | None) -> None:
        bad = sum(not math.isfinite(v) for v in vals)
        if not bad:
            return
        self.failures[name] += bad
        msg = f"reward term '{name}': {bad}/{len(vals)} samples unscorable" + (f" (batch call: {err})" if err else "")
        self.errors.append(msg)
        if name not in self._reported:  # once per term; later ones are counted in reward/failures
            self._reported.add(name)
            print(f"[rlx] WARNING: {msg}; they are masked out of the update and counted in reward/failures",
                  file=sys.stderr, flush=True)
