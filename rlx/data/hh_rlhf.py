"""Anthropic HH-RLHF (Bai et al. 2022, arXiv:2204.05862): whole dialogues as ``chosen`` / ``rejected`` text.

Each row is ``{"chosen": "\\n\\nHuman: ... \\n\\nAssistant: ...", "rejected": ...}``. The prompt is the
dialogue up to and including the last ``\\n\\nAssistant:`` marker; the response is what follows it (with
its leading space, as TRL's implicit-prompt split leaves it). A row whose two dialogues differ before
that marker, or that has no marker, or whose dialogues are not strings (``wrong type``), is a bad row
(error naming file and line, or dropped with ``data.bad_rows=drop``). Optional ``score_chosen`` /
``score_rejected`` (numbers) become the pair's scores, as in ``data=preference``. Loads ``data.path``:
a local ``.jsonl.gz`` (e.g. ``/path/to/hh-rlhf/harmless-base/test.jsonl.gz``) or the dataset id
``Anthropic/hh-rlhf`` (with ``data.data_dir``, e.g. ``harmless-base``). Everything else is
``rlx/data/preference.py``.
"""

from __future__ import annotations

from rlx.data.preference import BadRow, build_from_cfg, parse_row
from rlx.data.rows import WrongType, json_type
from rlx.registry import DATA

MARKER = "\n\nAssistant:"


def split_dialogue(text: str, key: str = "chosen") -> tuple[str, str]:
    """(prompt through the last '\\n\\nAssistant:', the final assistant response)."""
    if not isinstance(text, str):
        raise WrongType(key, text, "a string (the whole dialogue)")
    i = text.rfind(MARKER)
    if i < 0:
        raise BadRow("no '\\n\\nAssistant:' turn in the dialogue", "no assistant turn")
    return text[: i + len(MARKER)], text[i + len(MARKER):]


def hh_row(row: dict) -> dict:
    """An HH-RLHF row -> an rlx record (prompt/chosen/rejected split at the last Assistant: turn)."""
    if not isinstance(row, dict):
        raise BadRow(f"a row must be a JSON object, got {json_type(row)}")
    for key in ("chosen", "rejected"):
        if row.get(key) is None:
            raise BadRow(f"missing field '{key}'", "missing field")
    prompt, chosen = split_dialogue(row["chosen"], "chosen")
    prompt_r, rejected = split_dialogue(row["rejected"], "rejected")
    if prompt != prompt_r:
        raise BadRow("chosen and rejected differ before the last Assistant: turn", "prompts differ")
    scores = {k: row[k] for k in ("score_chosen", "score_rejected") if k in row}   # checked by parse_row
    return parse_row({"prompt": prompt, "chosen": chosen, "rejected": rejected, **scores})


@DATA.register("hh_rlhf")
def build_hh_rlhf(cfg):
    return build_from_cfg(cfg, row_fn=hh_row)
