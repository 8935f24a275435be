"""Preference data users bring, in TRL's formats, from a local file or a dataset id.

Row formats (as TRL's DPOTrainer / KTOTrainer read them):

  paired     {"prompt", "chosen", "rejected"}: strings, or chat message lists ([{"role", "content"}, ...]);
             without "prompt" the prompt is the common prefix of chosen and rejected (TRL's implicit prompt);
             optional "score_chosen" / "score_rejected" (e.g. UltraFeedback: numbers, or strings of
             numbers) become the pair's scores (ODPO's offset), else the scores are 1 and 0.
  unpaired   {"prompt", "completion", "label"} with label true = desirable (KTO).

Sources (``data.path``): ``.jsonl``, ``.jsonl.gz``, ``.json``, ``.parquet``, or a dataset id loaded with
``datasets.load_dataset(path, data_dir=data.data_dir, split=data.split)``.

Tokenisation (``tokenize_example``) follows TRL: chat-message rows go through the tokenizer's chat template
(prompt with the generation prompt; prompt + response in full, the response being the part after their
common token prefix); string rows get EOS appended to each response. A bad row (missing field, wrong type
(counted as ``wrong type``: a field neither a string nor chat messages, a score that is not a number),
empty response, prompt over ``max_prompt_tokens``) raises ``BadRowError`` naming the file and line (row),
or, with ``bad_rows: drop`` / ``long_prompts: drop``, is dropped and counted (``dropped``, printed at start).
``long_prompts: truncate`` keeps the prompt's last ``max_prompt_tokens`` tokens (TRL's keep_end).
Responses longer than ``max_response_tokens`` are cut to it (without EOS), as TRL's collator does.
"""

from __future__ import annotations

import math
import random

from rlx.data.rows import BadRow, BadRowError, DropLog, WrongType, read_rows  # noqa: F401 (re-exported)
from rlx.registry import DATA

# ---------------------------------------------------------------- parsing


def is_messages(x) -> bool:
    return isinstance(x, list) and len(x) > 0 and all(isinstance(m, dict) and "role" in m and "content" in m
                                                      for m in x)


def _text_or_messages(row: dict, key: str):
    if key not in row or row[key] is None:
        raise BadRow(f"missing field '{key}'", "missing field")
    v = row[key]
    if isinstance(v, str):
        if not v.strip() and key != "prompt":
            raise BadRow(f"empty '{key}'", "empty response")
        return v
    if is_messages(v):
        if key != "prompt" and not any(str(m["content"]).strip() for m in v):
            raise BadRow(f"empty '{key}'", "empty response")
        return v
    raise WrongType(key, v, "a string or a list of chat messages")


def _score(row: dict, key: str, default: float) -> float:
    """``score_chosen`` / ``score_rejected``: a number (or a string that is one), finite; absent = ``default``."""
    if key not in row:
        return default
    v = row[key]
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise WrongType(key, v, "a number")
    try:
        x = float(v)
    except ValueError:
        raise WrongType(key, v, "a number") from None
    if not math.isfinite(x):
        raise BadRow(f"'{key}' must be a finite number, got {v!r}", "wrong type")
    return x


def implicit_prompt(chosen, rejected):
    """TRL's extract_prompt: the common prefix (messages, or characters with a space left to the responses)."""
    n = min(len(chosen), len(rejected))
    idx = next((i for i in range(n) if chosen[i] != rejected[i]), n)
    if isinstance(chosen, str) and 0 < idx < n and chosen[idx - 1] == " ":
        idx -= 1
    return chosen[:idx], chosen[idx:], rejected[idx:]


def parse_row(row: dict) -> dict:
    """A TRL-format row -> rlx record (``responses``/``scores`` ranked best first, or ``completion``/``label``)."""
    if not isinstance(row, dict):
        raise BadRow(f"expected a JSON object, got {type(row).__name__}")
    if "chosen" in row or "rejected" in row:
        chosen, rejected = _text_or_messages(row, "chosen"), _text_or_messages(row, "rejected")
        if "prompt" in row:
            prompt = _text_or_messages(row, "prompt")
        else:
            if type(chosen) is not type(rejected):
                raise BadRow("no 'prompt', and chosen/rejected are not both strings or both messages")
            prompt, chosen, rejected = implicit_prompt(chosen, rejected)
            if not prompt or not chosen or not rejected:
                raise BadRow("no 'prompt', and chosen/rejected share no prefix to take it from")
        scores = [_score(row, "score_chosen", 1.0), _score(row, "score_rejected", 0.0)]
        return {"prompt": prompt, "responses": [chosen, rejected], "scores": scores, "chosen": chosen,
                "rejected": rejected}
    if "completion" in row or "label" in row:
        prompt, completion = _text_or_messages(row, "prompt"), _text_or_messages(row, "completion")
        label = row.get("label")
        if label is None:
            raise BadRow("missing field 'label'", "missing field")
        if not isinstance(label, bool) and (not isinstance(label, (int, float)) or label not in (0, 1)):
            raise WrongType("label", label, "true/false (desirable/undesirable)")
        return {"prompt": prompt, "completion": completion, "label": bool(label), "responses": [completion],
                "scores": [1.0 if label else 0.0]}
    raise BadRow(f"no preference fields (found {sorted(row)}); expected prompt/chosen/rejected "
                 "or prompt/completion/label")


# ---------------------------------------------------------------- tokenising


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


def tokenize_example(tok, prompt, responses: list) -> tuple[list[int], list[list[int]]]:
    """(prompt_ids, [response_ids]) as TRL's DPOTrainer builds them.

    Each response is tokenised together with the prompt; it starts where the prompt's tokens and the
    joint tokens diverge (tokens can merge across the boundary), and the prompt is cut to the shortest
    such prefix over the responses. String responses end with EOS; chat responses end as the template does.
    """
    chat = is_messages(prompt)
    if chat:
        if not getattr(tok, "chat_template", None):
            raise BadRow("chat-message rows need a tokenizer with a chat template (model has none)")
        p_text = tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        full = [tok.apply_chat_template(prompt + r, tokenize=False) for r in responses]
    else:
        if any(is_messages(r) for r in responses):
            raise BadRow("prompt is a string but a response is a list of messages")
        p_text, full = prompt, [prompt + r for r in responses]
    p_ids = tok(p_text, add_special_tokens=False)["input_ids"]
    full_ids = [tok(t, add_special_tokens=False)["input_ids"] for t in full]
    cut = min(_common_prefix(p_ids, f) for f in full_ids)
    eos = [] if chat else [tok.eos_token_id]
    resp = [f[cut:] + (eos if not f[cut:] or f[-1] != tok.eos_token_id else []) for f in full_ids]
    return p_ids[:cut], resp


def apply_limits(prompt_ids, response_ids, max_prompt_tokens, max_response_tokens, long_prompts="error"):
    """Cut responses to ``max_response_tokens``; a long prompt raises BadRow, or is cut (``truncate``)."""
    if max_prompt_tokens and len(prompt_ids) > max_prompt_tokens:
        if long_prompts != "truncate":
            raise BadRow(f"prompt has {len(prompt_ids)} tokens > data.max_prompt_tokens={max_prompt_tokens}",
                         "prompt too long", "long_prompts")
        prompt_ids = prompt_ids[-max_prompt_tokens:]
    if max_response_tokens:
        response_ids = [r[:max_response_tokens] for r in response_ids]
    return prompt_ids, response_ids


def epoch_position(j: int, size: int, seed, cache: dict) -> int:
    """Index of stream position ``j`` in a pool of ``size`` (a fixed permutation per epoch)."""
    epoch = j // size
    if epoch not in cache:
        order = list(range(size))
        random.Random(f"{seed}-epoch-{epoch}").shuffle(order)
        cache.clear()
        cache[epoch] = order
    return cache[epoch][j % size]


# ---------------------------------------------------------------- the data set


class PreferenceData:
    """Rows from ``read_rows``, parsed; ``prepare(tok)`` tokenises and checks them (call it first).

    ``train_batch(cursor, n)`` cycles the training rows (new permutation each epoch, from ``seed`` and
    ``shuffle_seed``, the run's seed; record ``id`` = row index, stable across epochs); ``pref_eval_set()`` is ``eval_size`` held-out paired rows.
    """

    kind = "preference"

    def __init__(self, rows, name: str, eval_size: int = 0, seed: int = 0, bad_rows: str = "error",
                 long_prompts: str = "error", max_prompt_tokens: int = 0, max_response_tokens: int = 0,
                 row_fn=parse_row, shuffle_seed: int = 0):
        for key, val, ok in (("bad_rows", bad_rows, ("error", "drop")),
                             ("long_prompts", long_prompts, ("error", "drop", "truncate"))):
            if val not in ok:
                raise ValueError(f"data.{key}={val}: valid: {', '.join(ok)}")
        self.name, self.seed, self.bad_rows, self.long_prompts = name, seed, bad_rows, long_prompts
        self.shuffle_seed = shuffle_seed
        self.limits = (max_prompt_tokens, max_response_tokens)
        self.drops = DropLog()
        self.dropped = self.drops.counts
        self.n_rows = len(rows)
        parsed = [(where, self._parse(where, raw, row_fn)) for where, raw in rows]
        self.records = [dict(rec, where=where) for where, rec in parsed if rec is not None]
        self._split(eval_size)
        self.prepared = False
        self._perm: dict = {}

    def _parse(self, where, raw, row_fn):
        try:
            if isinstance(raw, BadRow):   # a line that was not valid JSON
                raise raw
            return row_fn(raw)
        except BadRow as e:
            return self._bad(where, e)

    def _bad(self, where: str, err: BadRow) -> None:
        self.drops.bad(self, where, err)

    def _split(self, eval_size: int) -> None:
        paired = [i for i, r in enumerate(self.records) if "label" not in r]
        if eval_size > len(paired) // 2:
            raise ValueError(f"data.eval_size={eval_size}: only {len(paired)} paired rows; hold out at most half")
        held = set(random.Random(f"{self.seed}-heldout").sample(paired, eval_size))
        self.heldout = [r for i, r in enumerate(self.records) if i in held]
        self.train = [r for i, r in enumerate(self.records) if i not in held]
        for i, r in enumerate(self.train):
            r["id"] = i
        if not self.train:
            raise ValueError(f"data '{self.name}': no training rows left ({self.n_rows} read, "
                             f"{sum(self.dropped.values())} dropped, {len(self.heldout)} held out)")

    def prepare(self, tok) -> None:
        """Tokenise every row (``prompt_ids``, ``response_ids``); long prompts handled per ``long_prompts``."""
        if self.prepared:
            return
        for part in ("train", "heldout"):
            kept = []
            for r in getattr(self, part):
                try:
                    ids = tokenize_example(tok, r["prompt"], r["responses"])
                    r["prompt_ids"], r["response_ids"] = apply_limits(*ids, *self.limits, self.long_prompts)
                    kept.append(r)
                except BadRow as e:
                    self._bad(r["where"], e)
            setattr(self, part, kept)
        for i, r in enumerate(self.train):
            r["id"] = i
        if not self.train:
            raise ValueError(f"data '{self.name}': every training row was dropped ({self.drops.why_all()})")
        self.prepared = True

    def train_batch(self, cursor: int, n: int) -> list[dict]:
        order_seed = f"{self.seed}-{self.shuffle_seed}"
        return [self.train[epoch_position(j, len(self.train), order_seed, self._perm)] for j in range(cursor, cursor + n)]

    def pref_eval_set(self) -> list[dict]:
        return self.heldout

    def eval_set(self) -> list[dict]:
        return []   # no generation task with answers

    def summary(self) -> str:
        drop = f", dropped {sum(self.dropped.values())} ({dict(self.dropped)})" if self.dropped else ""
        return f"data '{self.name}': {self.n_rows} rows read, {len(self.train)} train, {len(self.heldout)} held out{drop}"


def build_from_cfg(cfg, row_fn=parse_row) -> PreferenceData:
    if not cfg.path:
        raise ValueError(f"data.path is required for data={cfg.name}: a .jsonl/.jsonl.gz/.json/.parquet file "
                         "or a dataset id")
    rows = read_rows(str(cfg.path), split=cfg.split, data_dir=cfg.get("data_dir"))
    if cfg.get("max_rows"):
        rows = rows[: cfg.max_rows]
    return PreferenceData(rows, name=cfg.name, eval_size=cfg.eval_size, seed=cfg.seed, bad_rows=cfg.bad_rows,
                          long_prompts=cfg.long_prompts, max_prompt_tokens=cfg.max_prompt_tokens,
                          max_response_tokens=cfg.max_response_tokens, row_fn=row_fn,
                          shuffle_seed=cfg.get("shuffle_seed", 0))


@DATA.register("preference")
def build_preference(cfg) -> PreferenceData:
    return build_from_cfg(cfg)
