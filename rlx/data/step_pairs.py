"""``data=step_pairs``: step-level preference pairs for Step-DPO (arXiv:2406.18629) from a file or a dataset id.

A row is one step pair in the format of the authors' release (Math-Step-DPO-10K, github.com/dvlab-research/Step-DPO):

    {"prompt": "7+3+9+4=", "initial_reason_steps": "7+3=10;", "chosen": "10+9=19", "rejected": "10+9=20"}

``prompt`` is the problem x, ``initial_reason_steps`` the correct steps s_1..s_{k-1} as they are written in the
solution, separators included (``""`` when the pair is about the first step), ``chosen`` / ``rejected`` the
correct and the wrong k-th step (s_win, s_lose). Other fields (``full_chosen``, ``answer``, ``dataset``) are
ignored. The model's prompt is ``prompt + initial_reason_steps``, concatenated as
they are (the separator belongs to the text, as with the authors' qwen2-boxed template); the loss-bearing
response is the step alone, without EOS (a step does not end the answer; the authors' StepDPOTrainer drops
TRL's EOS). A row without the step field (a response-level pair: use ``data=preference``), with a field that
is not a string, with an empty step, or with chosen == rejected is a bad row: ``BadRowError`` naming the file
and line, or dropped and counted with ``data.bad_rows=drop`` (rlx/data/preference.py's mechanism, which
also reads the file and holds out ``eval_size`` pairs for ``eval/step_pairs/pref_accuracy``).
"""

from __future__ import annotations

from rlx.data.preference import PreferenceData, tokenize_example
from rlx.data.rows import BadRow, WrongType, json_type, read_rows
from rlx.registry import DATA

#: the fields of a step pair (the release's names); ``initial_reason_steps`` is the step label
FIELDS = ("prompt", "initial_reason_steps", "chosen", "rejected")


def step_tokens(tok, prompt: str, steps: list[str]) -> tuple[list[int], list[list[int]]]:
    """(prompt_ids, [step_ids]): TRL's tokenisation (rlx.data.preference.tokenize_example) less the EOS it
    appends, so that only the step's own tokens carry the loss."""
    prompt_ids, response_ids = tokenize_example(tok, prompt, steps)
    return prompt_ids, [strip_eos(ids, tok.eos_token_id) for ids in response_ids]


def strip_eos(ids: list[int], eos_id: int) -> list[int]:
    return ids[:-1] if ids and ids[-1] == eos_id else ids


def step_record(problem: str, prefix: str, chosen: str, rejected: str, **fields) -> dict:
    """The offline trainer's record of one step pair (and any further ``fields``): the prompt is the problem and
    the prefix; the responses are the two steps (chosen first, scores 1 and 0)."""
    return {
        "prompt": problem + prefix,
        "problem": problem,
        "initial_reason_steps": prefix,
        "chosen": chosen,
        "rejected": rejected,
        "responses": [chosen, rejected],
        "scores": [1.0, 0.0],
        **fields,
    }


def step_row(row) -> dict:
    """A file row -> a step-pair record; ``BadRow`` (the data set adds file and line) when it is not one."""
    if not isinstance(row, dict):
        raise BadRow(f"a row must be a JSON object, got {json_type(row)}")
    if row.get("initial_reason_steps") is None:
        raise BadRow(
            "no step label: missing field 'initial_reason_steps' (the correct steps before the chosen "
            'and rejected step; "" for the first step). A response-level pair belongs to '
            "data=preference",
            "no step label",
        )
    for key in FIELDS:
        if row.get(key) is None:
            raise BadRow(f"missing field '{key}'", "missing field")
        if not isinstance(row[key], str):
            raise WrongType(key, row[key], "a string")
    for key in ("chosen", "rejected"):
        if not row[key].strip():
            raise BadRow(f"empty '{key}' step", "empty response")
    if row["chosen"] == row["rejected"]:
        raise BadRow("chosen and rejected are the same step", "same step")
    return step_record(row["prompt"], row["initial_reason_steps"], row["chosen"], row["rejected"])


class StepPairFile(PreferenceData):
    """Step pairs read from a file: ``PreferenceData`` (held-out split, per-epoch order, bad-row policy, limits)
    with the steps tokenised without EOS."""

    def prepare(self, tok) -> None:
        if self.prepared:
            return
        super().prepare(tok)  # TRL's tokenisation and the limits; each response ends with EOS
        for r in self.train + self.heldout:
            r["response_ids"] = [strip_eos(ids, tok.eos_token_id) for ids in r["response_ids"]]


@DATA.register("step_pairs")
def build_step_pairs(cfg) -> StepPairFile:
    if not cfg.path:
        raise ValueError(
            "data.path is required for data=step_pairs: a .jsonl/.jsonl.gz/.json/.parquet file of "
            "step pairs (prompt, initial_reason_steps, chosen, rejected) or a dataset id"
        )
    rows = read_rows(str(cfg.path), split=cfg.split, data_dir=cfg.get("data_dir"))
    if cfg.max_rows:
        rows = rows[: cfg.max_rows]
    return StepPairFile(
        rows,
        name=cfg.name,
        eval_size=cfg.eval_size,
        seed=cfg.seed,
        bad_rows=cfg.bad_rows,
        long_prompts=cfg.long_prompts,
        max_prompt_tokens=cfg.max_prompt_tokens,
        max_response_tokens=cfg.max_response_tokens,
        row_fn=step_row,
        shuffle_seed=cfg.shuffle_seed,
    )
