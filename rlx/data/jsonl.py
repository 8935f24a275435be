"""A user's prompt file: ``data=jsonl data.path=problems.jsonl data.prompt_field=question``.

One JSON object per line; the field mapping, prompt formatting, limits and bad-row policy are
``PromptData``'s (prompts.py). The eval set is ``data.eval_path`` (first ``eval_size`` rows, or all
with 0) or, without it, ``eval_size`` rows held out of ``data.path`` by a seeded draw. ``.jsonl.gz``,
``.json`` (a list) and ``.parquet`` files and dataset ids (``datasets.load_dataset``) also work.
"""

from __future__ import annotations

from rlx.data.preference import read_rows
from rlx.data.prompts import PromptData
from rlx.registry import DATA


@DATA.register("jsonl")
def build_jsonl(cfg) -> PromptData:
    if not cfg.path:
        raise ValueError("data.path is required for data=jsonl: a .jsonl file with one problem per line")
    train = read_rows(str(cfg.path), split=cfg.split)
    held = read_rows(str(cfg.eval_path), split=cfg.split) if cfg.eval_path else None
    return PromptData(train, held, name=cfg.name, prompt_field=cfg.prompt_field, answer_field=cfg.answer_field,
                      prompt_template=cfg.prompt_template, system_prompt=cfg.system_prompt,
                      chat_template=cfg.chat_template, eval_size=cfg.eval_size, dev_size=cfg.dev_size,
                      seed=cfg.seed, max_prompt_tokens=cfg.max_prompt_tokens, long_prompts=cfg.long_prompts,
                      bad_rows=cfg.bad_rows)
