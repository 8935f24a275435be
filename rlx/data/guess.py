"""``data=guess``: secrets for ``env=guess`` (prompt ``"?1-15:"``, answer the secret). Ranges 1..n for each n in
``data.sizes``. The eval set is every (n, secret) pair once, in order; the dev set is the same pairs (the task has
no unseen problems: what is learned is a search strategy, and the secret is never in the prompt). Training draws
(n, secret) uniformly from a stream keyed by (seed, i)."""

from __future__ import annotations

import random

from rlx.registry import DATA


class GuessTask:
    kind = "prompts"

    def __init__(self, sizes=(7, 15, 31), seed: int = 1234, name: str = "guess"):
        self.sizes, self.seed, self.name = [int(n) for n in sizes], seed, name
        self._all = [self.record(n, s) for n in self.sizes for s in range(1, n + 1)]

    @staticmethod
    def record(n: int, secret: int) -> dict:
        return {"prompt": f"?1-{n}:", "answer": str(secret), "n": n, "completion": str(secret)}

    def train_batch(self, cursor: int, n: int) -> list[dict]:
        out = []
        for i in range(cursor, cursor + n):
            rng = random.Random(f"{self.seed}-train-{i}")
            size = rng.choice(self.sizes)
            out.append({**self.record(size, rng.randint(1, size)), "i": i})   # i: the stream index (demo seed)
        return out

    def eval_set(self) -> list[dict]:
        return self._all

    def dev_set(self) -> list[dict]:
        return self._all

    def corpus(self, n: int = 2000) -> list[str]:
        return [r["prompt"] + r["completion"] for r in self.train_batch(10**7, n)]

    def max_completion_tokens(self) -> int:
        return len(str(max(self.sizes))) + 1


@DATA.register("guess")
def build_guess(cfg) -> GuessTask:
    return GuessTask(sizes=list(cfg.sizes), seed=cfg.seed, name=cfg.name)
