"""GSM8K (Cobbe et al. 2021, arXiv:2110.14168): grade-school math word problems with worked solutions
ending in ``#### <number>``; 7,473 train and 1,319 test problems.

``data.path`` is a local folder with ``train.jsonl`` / ``test.jsonl`` (the rows of the ``openai/gsm8k``
dataset, as in ``/path/to/gsm8k``; or its hub layout ``main/train-*.parquet``), or a dataset id
loaded with ``datasets.load_dataset(path, "main")`` (from the local cache when offline). The test split
is the held-out eval set (``eval/gsm8k/accuracy``); ``dev_size`` problems of the train split are held
out as the dev set. The reward reads the final answer from the worked solution (reward=gsm8k).
"""

from __future__ import annotations

from pathlib import Path

from rlx.data.preference import read_rows
from rlx.data.prompts import PromptData
from rlx.registry import DATA


def gsm8k_rows(path: str, split: str) -> list[tuple[str, dict]]:
    """[(where, row)] of one split from a folder, a file or a dataset id."""
    p = Path(path)
    if p.is_dir():
        for candidate in (p / f"{split}.jsonl", p / f"{split}.jsonl.gz", *sorted((p / "main").glob(f"{split}-*.parquet")),
                          *sorted(p.glob(f"{split}-*.parquet"))):
            if candidate.exists():
                return read_rows(str(candidate))
        raise FileNotFoundError(f"data.path={path}: no {split}.jsonl (or main/{split}-*.parquet) in this folder")
    return read_rows(path, split=split, data_dir="main")


@DATA.register("gsm8k")
def build_gsm8k(cfg) -> PromptData:
    return PromptData(gsm8k_rows(str(cfg.path), "train"), gsm8k_rows(str(cfg.path), "test"), name=cfg.name,
                      prompt_field="question", answer_field="answer", prompt_template=cfg.prompt_template,
                      system_prompt=cfg.system_prompt, chat_template=cfg.chat_template, eval_size=cfg.eval_size,
                      dev_size=cfg.dev_size, seed=cfg.seed, max_prompt_tokens=cfg.max_prompt_tokens,
                      long_prompts=cfg.long_prompts, bad_rows=cfg.bad_rows)
