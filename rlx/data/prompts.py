"""Prompt datasets from rows users bring (``data=gsm8k``, ``data=jsonl``): the interface of the embedded
task (``train_batch(cursor, n)``, ``eval_set()``, ``dev_set()``, ``name``), records ``{"prompt",
"answer", ...}``.

A row becomes a record through a field mapping: ``prompt_field`` (a string, or chat messages
``[{"role", "content"}, ...]``) goes through ``prompt_template`` (``{prompt}`` is replaced by it), then
through the tokenizer's chat template when ``chat_template`` is on (with ``system_prompt`` as a system
message; without a chat template the system prompt is prepended with a blank line). ``answer_field``
becomes ``answer``; every other field is kept and reaches the reward functions as a keyword field.

``prepare(tok)`` (called by the trainer once the tokenizer exists) formats every prompt and applies
``max_prompt_tokens``: ``long_prompts`` = error (naming file and line) | drop (counted) | truncate
(keep the last tokens, where the question ends). A malformed row (missing or wrongly typed field) is
an error naming file and line, or with ``bad_rows: drop`` dropped and counted. Types: the prompt is a
string or chat messages; ``answer`` a string or a number (every reward reads it as text, so a list or
an object would match no completion and score 0 everywhere; ``wrong type``).

Training order is a pure function of the cursor: position j is row ``perm_e[j mod n]`` of a
permutation seeded by (seed, epoch e = j div n), so resume is exact and every epoch is reshuffled.
"""

from __future__ import annotations

import random

from rlx.data.preference import epoch_position, is_messages
from rlx.data.rows import BadRow, DropLog, WrongType


class PromptData:
    kind = "prompts"

    def __init__(self, train_rows, eval_rows, *, name: str, prompt_field: str = "prompt",
                 answer_field: str | None = "answer", prompt_template: str = "{prompt}",
                 system_prompt: str | None = None, chat_template: bool = False, eval_size: int = 0,
                 dev_size: int = 0, seed: int = 0, max_prompt_tokens: int = 0, long_prompts: str = "error",
                 bad_rows: str = "error"):
        for key, val, ok in (("bad_rows", bad_rows, ("error", "drop")),
                             ("long_prompts", long_prompts, ("error", "drop", "truncate"))):
            if val not in ok:
                raise ValueError(f"data.{key}={val}: valid: {', '.join(ok)}")
        if "{prompt}" not in prompt_template:
            raise ValueError(f"data.prompt_template={prompt_template!r}: must contain {{prompt}}")
        self.name, self.seed = name, seed
        self.fields = (prompt_field, answer_field)
        self.template, self.system_prompt, self.chat = prompt_template, system_prompt, bool(chat_template)
        self.max_prompt_tokens, self.long_prompts, self.bad_rows = max_prompt_tokens, long_prompts, bad_rows
        self.drops = DropLog()
        self.dropped = self.drops.counts
        self.n_rows = len(train_rows) + len(eval_rows or [])
        rows = self._parse_all(train_rows)
        held = self._parse_all(eval_rows) if eval_rows is not None else []
        rng = random.Random(f"{seed}-heldout")
        order = list(range(len(rows)))
        rng.shuffle(order)
        n_eval = 0 if eval_rows is not None else eval_size
        if n_eval + dev_size > len(rows) // 2:
            raise ValueError(f"data.eval_size + data.dev_size = {n_eval + dev_size} leaves too few of the "
                             f"{len(rows)} training rows (hold out at most half)"
                             + (f"; {self.n_rows - len(rows) - len(held)} rows were dropped: {self.drops.why_all()}"
                                if self.drops.counts else ""))
        if eval_rows is not None:
            self._raw_eval = held[:eval_size] if eval_size else held
        else:
            self._raw_eval = [rows[i] for i in order[:n_eval]]
        self._raw_dev = [rows[i] for i in order[n_eval:n_eval + dev_size]]
        taken = set(order[:n_eval + dev_size])
        self._raw_train = [r for i, r in enumerate(rows) if i not in taken]
        self._perm: dict = {}
        self.longest_prompt = 0   # tokens, known after prepare()
        self.truncated = 0
        self._format(tok=None)

    # ---------------------------------------------------------------- rows -> records
    def _parse_all(self, rows) -> list[dict]:
        out = []
        for where, raw in rows:
            try:
                out.append(self._parse(where, raw))
            except BadRow as e:
                self._bad(where, e)
        return out

    def _parse(self, where: str, raw) -> dict:
        prompt_field, answer_field = self.fields
        if isinstance(raw, BadRow):   # a line that was not valid JSON
            raise raw
        if not isinstance(raw, dict):
            raise BadRow(f"a row must be a JSON object, got {type(raw).__name__}")
        if prompt_field not in raw or raw[prompt_field] is None:
            raise BadRow(f"missing field '{prompt_field}' (data.prompt_field; row has: {', '.join(raw)})",
                         "missing field")
        p = raw[prompt_field]
        if isinstance(p, str) and not p.strip():
            raise BadRow(f"'{prompt_field}' must be a non-empty string or a list of chat messages, got an "
                         "empty string", "empty prompt")
        if not isinstance(p, str) and not is_messages(p):
            raise WrongType(prompt_field, p, "a non-empty string or a list of chat messages")
        rec = {k: v for k, v in raw.items() if k not in (prompt_field, answer_field)}
        if answer_field:
            if answer_field not in raw or raw[answer_field] is None:
                raise BadRow(f"missing field '{answer_field}' (data.answer_field; row has: {', '.join(raw)})",
                             "missing field")
            a = raw[answer_field]
            if isinstance(a, bool) or not isinstance(a, (str, int, float)):
                # the rewards read the answer as text (str(answer)): a list or object never matches
                raise WrongType(answer_field, a, "a string or a number (data.answer_field: the rewards compare "
                                "it as text; a field of any other name reaches reward functions as it is)")
            rec["answer"] = a
        return {"where": where, "raw_prompt": p, "record": rec}

    def _bad(self, where: str, err: BadRow) -> None:
        self.drops.bad(self, where, err)

    def format_prompt(self, raw_prompt, tok=None) -> str:
        """The prompt string the model sees (template, system prompt, chat template)."""
        messages = list(raw_prompt) if is_messages(raw_prompt) else [
            {"role": "user", "content": self.template.replace("{prompt}", raw_prompt)}]
        if self.system_prompt and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": self.system_prompt}] + messages
        if self.chat or is_messages(raw_prompt):
            if tok is None:
                return "\n".join(f"{m['role']}: {m['content']}" for m in messages)  # before prepare()
            if not getattr(tok, "chat_template", None):
                raise ValueError(f"data '{self.name}': chat_template is on (or rows are chat messages) but the "
                                 "tokenizer has no chat template; set data.chat_template=false")
            return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "\n\n".join(m["content"] for m in messages)

    def _limit(self, row: dict, text: str, ids: list[int], tok) -> str | None:
        limit = self.max_prompt_tokens
        if limit and len(ids) > limit:
            if self.long_prompts == "truncate":
                self.truncated += 1
                ids = ids[-limit:]
                text = tok.decode(ids)
            else:
                self._bad(row["where"], BadRow(f"prompt has {len(ids)} tokens > data.max_prompt_tokens={limit} "
                                               "(data.long_prompts: error | drop | truncate)", "long prompt",
                                               "long_prompts"))
                return None
        self.longest_prompt = max(self.longest_prompt, len(ids))
        return text

    def _format(self, tok) -> None:
        for part in ("train", "eval", "dev"):
            rows = getattr(self, f"_raw_{part}")
            texts = [self.format_prompt(row["raw_prompt"], tok) for row in rows]
            if tok is not None and texts:
                all_ids = tok(texts, add_special_tokens=False)["input_ids"]   # one batched call
                texts = [self._limit(row, text, ids, tok) for row, text, ids in zip(rows, texts, all_ids)]
            setattr(self, f"_{part}", [{"prompt": text, **row["record"]} for row, text in zip(rows, texts)
                                       if text is not None])
        if not self._train:
            raise ValueError(f"data '{self.name}': no training rows ({self.summary()})")

    def prepare(self, tok) -> None:
        """Format every prompt with the tokenizer (chat template) and apply max_prompt_tokens."""
        self.longest_prompt = self.truncated = 0
        self._format(tok)

    # ---------------------------------------------------------------- the prompt-dataset interface
    def train_batch(self, cursor: int, n: int) -> list[dict]:
        return [self._train[epoch_position(j, len(self._train), self.seed, self._perm)]
                for j in range(cursor, cursor + n)]

    def eval_set(self) -> list[dict]:
        return self._eval

    def dev_set(self) -> list[dict]:
        return self._dev

    def summary(self) -> str:
        drop = f", dropped {sum(self.dropped.values())} ({dict(self.dropped)})" if self.dropped else ""
        cut = f", {self.truncated} prompts cut to {self.max_prompt_tokens} tokens" if self.truncated else ""
        return (f"data '{self.name}': {self.n_rows} rows read, {len(getattr(self, '_train', []))} train, "
                f"{len(getattr(self, '_eval', []))} eval, {len(getattr(self, '_dev', []))} dev{drop}{cut}")


def context_warning(data, model, max_new_tokens: int) -> str | None:
    """A warning when the longest prompt plus the generation limit exceeds the model's position range."""
    ctx = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    longest = getattr(data, "longest_prompt", 0)
    if not ctx or not longest or longest + max_new_tokens <= ctx:
        return None
    return (f"[rlx] WARNING: prompts of up to {longest} tokens + rollout.max_new_tokens={max_new_tokens} exceed the "
            f"model's max_position_embeddings={ctx}; positions past {ctx} are outside the range it was built for "
            f"(RoPE runs past it, quality suffers). Lower data.max_prompt_tokens (with data.long_prompts=truncate) "
            "and rollout.max_new_tokens, or use a model with a longer context.")
