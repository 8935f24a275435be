"""``data=prm_steps``: step-labelled solutions for a process reward model (``algo=prm``) from a file or a dataset id.

A row is one solution, its steps and a label per step (PRM800K's shape, Lightman et al. 2023, arXiv:2305.20050,
flattened to one label per step):

    {"prompt": "7+3+9+4=", "steps": ["7+3=10", "10+9=20", "20+4=24"], "labels": [true, false, null]}

``labels[i]`` says whether step i is correct: true/1, false/0, or null for a step left unlabelled (PRM800K labels
only up to the first wrong step: rlx/data/sums_prm.py). The model's text is the prompt, then each step followed
by ``data.step_end`` (one character; default a newline, as PRM800K's steps are lines); the PRM reads each step's
score at its ``step_end`` token (rlx/models/prm_head.py), so a step may not contain that character. A row without
step labels (no ``labels`` field: an outcome-labelled or preference row), with labels of the wrong number or
kind, a step that is empty or holds ``step_end``, or no labelled step at all is a bad row: ``BadRowError``
naming the file and line, or dropped and counted with ``data.bad_rows=drop`` (rlx/data/preference.py's
mechanism, which also reads the file and holds out ``eval_size`` rows for ``eval/prm_steps/step_accuracy``).
"""

from __future__ import annotations

from rlx.data.preference import PreferenceData
from rlx.data.rows import BadRow, WrongType, json_type, read_rows
from rlx.registry import DATA


def step_label(value, i: int):
    """A label as the trainer reads it: 1, 0 or None (unlabelled); ``WrongType`` for anything else."""
    if value is None:
        return None
    if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
        return int(value)
    raise WrongType(f"labels[{i}]", value, "true, false (or 1, 0) or null")


def labelled_row(row, step_end: str) -> dict:
    """A file row -> a step-labelled record; ``BadRow`` (the data set adds file and line) when it is not one."""
    if not isinstance(row, dict):
        raise BadRow(f"a row must be a JSON object, got {json_type(row)}")
    if row.get("labels") is None:
        raise BadRow("no step labels: missing field 'labels' (one per step: true, false, or null for an unlabelled "
                     "step). Outcome-labelled or preference rows belong to data=preference", "no step label")
    for key, kind in (("prompt", str), ("steps", list), ("labels", list)):
        if row.get(key) is None:
            raise BadRow(f"missing field '{key}'", "missing field")
        if not isinstance(row[key], kind):
            raise WrongType(key, row[key], "a string" if kind is str else "a list")
    steps, labels = row["steps"], [step_label(v, i) for i, v in enumerate(row["labels"])]
    if not steps:
        raise BadRow("no steps", "no steps")
    if len(labels) != len(steps):
        raise BadRow(f"{len(labels)} labels for {len(steps)} steps (one label per step)", "label count")
    for i, s in enumerate(steps):
        if not isinstance(s, str):
            raise WrongType(f"steps[{i}]", s, "a string")
        if not s.strip():
            raise BadRow(f"empty step {i}", "empty step")
        if step_end in s:
            raise BadRow(f"step {i} contains data.step_end={step_end!r}, which ends a step", "step_end in step")
    if all(v is None for v in labels):
        raise BadRow("no labelled step (every label is null)", "no step label")
    return {"prompt": row["prompt"], "steps": list(steps), "labels": labels,
            "completion": "".join(s + step_end for s in steps)}


class StepLabelFile(PreferenceData):
    """Step-labelled rows read from a file: ``PreferenceData``'s held-out split, per-epoch order and bad-row policy;
    the PRM trainer tokenises the rows itself (no ``prepare``)."""

    kind = "steps"

    def __init__(self, rows, step_end: str, **kw):
        if len(step_end) != 1:
            raise ValueError(f"data.step_end={step_end!r}: must be one character (the PRM reads each step's score "
                             "at the token holding it)")
        self.delimiters = (step_end,)
        super().__init__(rows, row_fn=lambda row: labelled_row(row, step_end), **kw)

    def prepare(self, tok) -> None:
        """Nothing to do: the PRM trainer tokenises prompt and solution apart (rlx/models/prm_head.py)."""

    def step_eval_set(self) -> list[dict]:
        return self.heldout


@DATA.register("prm_steps")
def build_prm_steps(cfg) -> StepLabelFile:
    if not cfg.path:
        raise ValueError("data.path is required for data=prm_steps: a .jsonl/.jsonl.gz/.json/.parquet file of "
                         "step-labelled solutions (prompt, steps, labels) or a dataset id")
    rows = read_rows(str(cfg.path), split=cfg.split, data_dir=cfg.get("data_dir"))
    if cfg.max_rows:
        rows = rows[: cfg.max_rows]
    return StepLabelFile(rows, step_end=cfg.step_end, name=cfg.name, eval_size=cfg.eval_size, seed=cfg.seed,
                         bad_rows=cfg.bad_rows, shuffle_seed=cfg.shuffle_seed)
