"""A generative judge as the reward (``reward=judge``): pointwise generative reward modelling with voting, as
SPCT / DeepSeek-GRM (Liu et al. 2025, "Inference-Time Scaling for Generalist Reward Modeling", arXiv:2504.02495).

For each (prompt x, response y) a causal LM, the judge, reads ``template`` filled with the ``principles``, x and y,
and samples k judgements at temperature T > 0. The score S_j of judgement j is the last match of ``pattern``'s
group 1 (default ``Score: <integer>``), valid only inside [score_min, score_max]; a judgement without one is
unparsable. The scores are voted (§3.3, "Voting with generated rewards"): S* = Σ_j S_j, so k samples of discrete
1-10 scores spread the reward over k·1 .. k·10. Example of the paper's kind: 4 samples score (y1, y2) as [1, 5],
[5, 6], [4, 8], [7, 6]; S*(y1) = 17, S*(y2) = 25, and y2 is preferred.

Unparsable judgements (rlx's own accounting, the paper does not say):
  - some of the k parse: the vote is over the m parsable ones; ``sum`` is k · mean (= Σ_j S_j when m = k), so a
    response keeps the scale of a full vote and is not penalised for the judge's format slips; ``mean`` is the mean;
  - none of the k parse: NaN, rlx's failed sample (rewards/composite.py): counted in ``reward/failures`` and
    masked out of the update;
  - the share (k − m) / k per response is the term ``judge_unparsed`` (``reward/unparsed/mean`` in the preset,
    over the scored samples), read from the judge term's own judgements: no second generation.

The judge model is a ``from_pretrained`` dir or hub id (``judge.model``), or null for the embedded model (the
build of conf/model/tiny.yaml, the default policy's). Generation is rlx's own engine (``rollout.hf.HFEngine``),
pure temperature sampling (no top-k / top-p) on torch's global generator, so runs stay reproducible and resumable.
The embedded model's byte-level BPE encodes any text (no unknown tokens: every byte is in its alphabet) but it has
only ever read "a+b=" prompts, and its context is 128 positions: judge prompts are cut from the left to the judge's
context (``max_position_embeddings`` − ``max_new_tokens``), keeping the response and the closing instruction. It
writes digits, not judgements, so nearly every response fails: a test of the accounting, not a useful judge.
"""

from __future__ import annotations

import json
import math
import re
import threading
import weakref

import torch
from omegaconf import OmegaConf

from rlx.registry import REWARDS

PLACEHOLDERS = ("principles", "prompt", "response", "answer", "lo", "hi")


def compile_pattern(pattern: str) -> re.Pattern:
    """``pattern`` compiled; it must have exactly one capture group (the score)."""
    rx = re.compile(pattern)
    if rx.groups != 1:
        raise ValueError(f"reward.judge.pattern={pattern!r} has {rx.groups} capture groups; it needs exactly one, "
                         r"around the score (e.g. 'Score:\s*(-?\d+)')")
    return rx


def parse_score(judgement: str, pattern: re.Pattern, lo: int, hi: int) -> int | None:
    """The integer in group 1 of ``pattern``'s last match in ``judgement`` if it lies in [lo, hi], else None.

    With the preset's pattern and [1, 10]: "ok. Score: 7" -> 7; "Score: 3 ... Score: 9" -> 9 (the last);
    "Score: 11" -> None (out of range); "Score: 7.5" -> None; "looks right" -> None (missing).
    """
    matches = pattern.findall(judgement)
    if not matches:
        return None
    try:
        s = int(matches[-1])
    except ValueError:
        return None
    return s if lo <= s <= hi else None


def _sum(parsed: list[int], k: int) -> float:
    return k * sum(parsed) / len(parsed)      # = Σ_j S_j when all k parsed


def _mean(parsed: list[int], k: int) -> float:
    return sum(parsed) / len(parsed)


AGGREGATIONS = {"sum": _sum, "mean": _mean}


def vote(scores: list[int | None], aggregation: str) -> float:
    """The voted reward of one response from its k sampled scores (None = unparsable); NaN when none parsed.

    sum: S* = k · mean of the parsable scores (SPCT's Σ_j S_j when all k parse); mean: their mean.
    [1, 5, 4, 7] -> sum 17, mean 4.25;  [7, None, 9, None] -> sum 4 · 8 = 32, mean 8;  [None, None] -> NaN.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"reward.judge.aggregation={aggregation!r}: valid are {', '.join(AGGREGATIONS)}")
    parsed = [s for s in scores if s is not None]
    return AGGREGATIONS[aggregation](parsed, len(scores)) if parsed else math.nan


def load_judge_model(cfg):
    """(model, tokenizer) of ``cfg.model`` (a from_pretrained dir or hub id), or of the embedded model when null;
    on ``cfg.device``, in eval mode, frozen."""
    from rlx.models import load_pretrained

    if cfg.model:
        model, tok = load_pretrained(cfg.model, cfg.dtype)
    else:   # the embedded model's cached build, through the registry (rlx.trainers.embedded registers it)
        from rlx.config import CONF_DIR
        from rlx.registry import MODELS

        model, tok = MODELS.get("embedded")(OmegaConf.load(CONF_DIR / "model" / "tiny.yaml"), log=lambda *a: None)
    model.to(torch.device(cfg.device or "cpu")).eval().requires_grad_(False)
    return model, tok


def hf_generator(cfg):
    """``generate(texts, k) -> [[judgement] * k] * len(texts)``: k samples per judge prompt from the judge model
    through ``HFEngine``, each prompt cut from the left to the judge's context."""
    from rlx.rollout.hf import HFEngine

    model, tok = load_judge_model(cfg)
    engine = HFEngine(model, tok, OmegaConf.create({
        "max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature, "top_k": 0, "top_p": 1.0,
        "engine_logprobs": False}), device=cfg.device or "cpu")
    context = getattr(model.config, "max_position_embeddings", None)
    max_len = None if context is None else context - cfg.max_new_tokens
    if max_len is not None and max_len < 1:
        raise ValueError(f"reward.judge.max_new_tokens={cfg.max_new_tokens} leaves no room for the prompt in the "
                         f"judge's context of {context} tokens")

    def generate(texts: list[str], k: int) -> list[list[str]]:
        if cfg.chat_template:
            texts = [tok.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                             add_generation_prompt=True) for t in texts]
        tok.truncation_side = "left"   # keep the response and the closing instruction
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False,
                  truncation=max_len is not None, max_length=max_len)
        out = engine.generate_ids(enc["input_ids"].to(engine.device), enc["attention_mask"].to(engine.device), n=k)
        return [out.texts[i * k:(i + 1) * k] for i in range(len(texts))]

    return generate


class Judge:
    """The judge of one ``reward.judge`` node: prompts, k samples, parsing and the vote; keeps the unparsable
    share of the responses it judged last for the ``judge_unparsed`` term."""

    def __init__(self, cfg, generate=None):
        if not cfg.temperature > 0:
            raise ValueError(f"reward.judge.temperature={cfg.temperature}: the k judgements are samples, T must be > 0")
        if int(cfg.k) < 1:
            raise ValueError(f"reward.judge.k={cfg.k}: at least one judgement per response")
        if cfg.aggregation not in AGGREGATIONS:
            raise ValueError(f"reward.judge.aggregation={cfg.aggregation!r}: valid are {', '.join(AGGREGATIONS)}")
        self.k, self.lo, self.hi = int(cfg.k), int(cfg.score_min), int(cfg.score_max)
        if self.lo > self.hi:
            raise ValueError(f"reward.judge.score_min={self.lo} > score_max={self.hi}")
        self.pattern, self.aggregation = compile_pattern(cfg.pattern), cfg.aggregation
        self.principles, self.template, self.batch = cfg.principles, cfg.template, int(cfg.batch_size)
        try:
            self.prompt("x", "y", None)
        except (KeyError, IndexError) as e:
            raise ValueError(f"reward.judge.template: unknown placeholder {e}; valid are "
                             f"{', '.join('{' + p + '}' for p in PLACEHOLDERS)} (write {{{{ }}}} for a brace)") from None
        self.generate = generate if generate is not None else hf_generator(cfg)
        self.lock = threading.Lock()   # the reward's deadline threads may call concurrently; one model, one at a time
        self.last: tuple[list, list[float], list[list[str]]] | None = None   # pairs, shares, judgements of the last call
        self.shares: dict[tuple[str, str], float] = {}                       # every pair judged, for per-sample calls

    def prompt(self, prompt: str, response: str, answer) -> str:
        return self.template.format(principles=self.principles, prompt=prompt, response=response,
                                    answer="" if answer is None else answer, lo=self.lo, hi=self.hi)

    def __call__(self, prompts: list[str], completions: list[str], answer=None) -> list[float]:
        """The voted score of each completion (NaN where none of its k judgements parsed)."""
        answers = answer if answer is not None else [None] * len(completions)
        texts = [self.prompt(p, c, a) for p, c, a in zip(prompts, completions, answers)]
        with self.lock:
            judgements = []
            for i in range(0, len(texts), self.batch):
                judgements += self.generate(texts[i:i + self.batch], self.k)
        scores = [[parse_score(j, self.pattern, self.lo, self.hi) for j in js] for js in judgements]
        shares = [sum(s is None for s in ss) / self.k for ss in scores]
        pairs = list(zip(prompts, completions))
        if len(self.shares) > 1 << 16:
            self.shares.clear()
        self.shares.update(zip(pairs, shares))
        self.last = (pairs, shares, judgements)
        return [vote(ss, self.aggregation) for ss in scores]

    def unparsed(self, prompts: list[str], completions: list[str]) -> list[float]:
        """(k − m) / k of each completion, from the judgements of the last call on the same batch (or, after
        per-sample calls, of each pair); NaN for a pair never judged (the judge term failed it too)."""
        pairs = list(zip(prompts, completions))
        if self.last is not None and self.last[0] == pairs:
            return list(self.last[1])
        return [self.shares.get(p, math.nan) for p in pairs]


_JUDGES: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def shared_judge(node) -> Judge:
    """One Judge per distinct ``reward.judge`` node (resolved): the terms that name the same settings share one
    model and one set of judgements; it lives as long as a reward term holds it."""
    key = json.dumps(OmegaConf.to_container(node, resolve=True), sort_keys=True)
    judge = _JUDGES.get(key)
    if judge is None:
        judge = _JUDGES[key] = Judge(node)
    return judge


@REWARDS.register("judge")
def build_judge(cfg):
    judge = shared_judge(cfg.judge)

    def judge_score(prompts, completions, answer=None, **fields) -> list[float]:
        """S* of k sampled judgements per completion; NaN (a failed sample) when none of them has a valid score."""
        return judge(prompts, completions, answer)

    judge_score.judge = judge
    return judge_score


@REWARDS.register("judge_unparsed")
def build_judge_unparsed(cfg):
    judge = shared_judge(cfg.judge)

    def judge_unparsed(prompts, completions, **fields) -> list[float]:
        """Share of the k judgements of each completion with no valid score (the judge term must come first)."""
        return judge.unparsed(prompts, completions)

    judge_unparsed.judge = judge
    return judge_unparsed
