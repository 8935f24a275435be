"""A weighted sum of reward terms, each a plain callable from the reward registry.

A term that raises, returns the wrong length or a non-finite value, or exceeds ``timeout_s`` on a
batch does not stop the run: its samples get NaN, are counted in ``reward/failures`` and are
masked out of the update by the trainer.
"""

from __future__ import annotations

import math
import time

from rlx.registry import REWARDS


class CompositeReward:
    def __init__(self, cfg):
        self.score_term = cfg.score_term
        self.timeout_s = float(cfg.get("timeout_s", 0) or 0)
        self.terms = {name: (REWARDS.get(t.fn)(t), float(t.weight)) for name, t in cfg.terms.items()}
        if self.score_term not in self.terms:
            raise ValueError(f"reward.score_term='{self.score_term}' is not one of reward.terms: {list(self.terms)}")
        self.errors: list[str] = []

    def __call__(self, prompts, completions, **fields) -> list[float]:
        return self.score(prompts, completions, **fields)["total"]

    def score(self, prompts, completions, **fields) -> dict:
        """{"total": [...], "score": [...], "terms": {name: [...]}, "failed": [bool]}; NaN = unscorable."""
        n = len(completions)
        terms, failed = {}, [False] * n
        for name, (fn, _) in self.terms.items():
            vals = self._call(name, fn, prompts, completions, fields, n)
            terms[name] = vals
            failed = [f or not math.isfinite(v) for f, v in zip(failed, vals)]
        total = [math.nan if failed[i] else sum(w * terms[k][i] for k, (_, w) in self.terms.items())
                 for i in range(n)]
        return {"total": total, "score": terms[self.score_term], "terms": terms, "failed": failed}

    def _call(self, name, fn, prompts, completions, fields, n) -> list[float]:
        t0 = time.perf_counter()
        try:
            vals = [float(v) for v in fn(prompts, completions, **fields)]
            if len(vals) != n:
                raise ValueError(f"returned {len(vals)} values for {n} completions")
        except Exception as e:  # a user's reward function must not take the run down
            self.errors.append(f"reward term '{name}': {type(e).__name__}: {e}")
            return [math.nan] * n
        if self.timeout_s and time.perf_counter() - t0 > self.timeout_s:
            self.errors.append(f"reward term '{name}' took {time.perf_counter() - t0:.1f}s > timeout_s")
            return [math.nan] * n
        return vals
