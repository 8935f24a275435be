"""Reading data rows and their errors, for every data set users bring (prompts and preference pairs).

``read_rows`` reads ``.jsonl`` / ``.jsonl.gz`` / ``.json`` / ``.parquet`` or a dataset id. JSON lines are split
on ``\\n`` only (``\\r\\n`` tolerated), so a raw U+2028 or U+0085 inside a string stays in its row and line
numbers stay right; bytes that are not UTF-8 are an error naming ``file:line:column``; a line that is not
valid JSON becomes a bad row, like a missing field or a field of the wrong type (``WrongType``: the
field, the type it has and the type expected): an error naming ``file:line``, or with
``data.bad_rows=drop`` dropped and counted by kind (``drop`` keeps the first reasons, to say why when all go).
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path


class BadRowError(ValueError):
    """A data row that cannot be trained on; the message names the file and line (row) and the reason."""


class BadRow(Exception):
    """Raised by row parsers with the reason; the data set adds where the row is. ``key`` is the config
    key whose policy applies (``bad_rows`` or ``long_prompts``), ``tag`` the short reason counted when dropped."""

    def __init__(self, reason: str, tag: str = "malformed", key: str = "bad_rows"):
        super().__init__(reason)
        self.tag, self.key = tag, key


def json_type(value) -> str:
    """A value's type as the row's JSON says it (``a string``, ``a list``, ``null``, ...)."""
    for kind, name in ((type(None), "null"), (bool, "a boolean"), (int, "an integer"), (float, "a number"),
                       (str, "a string"), ((list, tuple), "a list"), (dict, "an object")):
        if isinstance(value, kind):
            return name
    return f"a {type(value).__name__}"


class WrongType(BadRow):
    """A field whose value has the wrong type: names the field, the type it has (and the value, cut short)
    and the type expected. Counted as ``wrong type`` when dropped."""

    def __init__(self, field: str, value, expected: str):
        shown = repr(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        super().__init__(f"'{field}' must be {expected}, got {json_type(value)} ({shown})", "wrong type")
        self.field, self.value = field, value


class DropLog:
    """Counts of dropped rows by reason, and the first few rows with their reasons."""

    def __init__(self):
        self.counts: Counter = Counter()
        self.first: list[str] = []

    def bad(self, owner, where: str, err: BadRow) -> None:
        """Drop the row (``owner.<err.key> == "drop"``) or raise ``BadRowError`` naming it."""
        if getattr(owner, err.key) != "drop":
            raise BadRowError(f"{where}: {err} (set data.{err.key}=drop to drop such rows and count them)")
        self.counts[err.tag] += 1
        if len(self.first) < 3:
            self.first.append(f"{where}: {err}")

    def why_all(self) -> str:
        """Why every row went: the counts and the first rows with their reasons."""
        return f"{dict(self.counts)}; first: " + " | ".join(self.first)


def _json_lines(path: str, data: bytes) -> list[tuple[str, object]]:
    rows = []
    for i, line in enumerate(data.split(b"\n"), 1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            col = len(line[:e.start].decode("utf-8", "replace")) + 1
            raise BadRowError(f"{path}:{i}:{col}: not valid UTF-8 (byte 0x{line[e.start]:02x})") from None
        if not text.strip():
            continue
        try:
            rows.append((f"{path}:{i}", json.loads(text)))
        except json.JSONDecodeError as e:
            rows.append((f"{path}:{i}", BadRow(f"not valid JSON ({e.msg} at column {e.colno})", "invalid JSON")))
    return rows


def read_rows(path: str, split: str = "train", data_dir: str | None = None) -> list[tuple[str, object]]:
    """[(where, raw row)]: ``where`` is ``file:line`` for JSON lines, ``file row i`` otherwise. A raw row that is
    a ``BadRow`` is a line that could not be parsed: the data set's parser raises it, so its policy applies."""
    p = Path(path)
    if p.suffix in (".jsonl", ".gz", ".json") and p.exists():
        data = gzip.open(p, "rb").read() if p.suffix == ".gz" else p.read_bytes()
        if not data.strip():
            raise BadRowError(f"{path}: the file is empty")
        if p.suffix == ".json" and data.lstrip().startswith(b"["):
            return [(f"{path} row {i}", row) for i, row in enumerate(json.loads(data.decode("utf-8")))]
        return _json_lines(path, data)
    if p.suffix == ".parquet" and p.exists():
        import pyarrow.parquet as pq

        return [(f"{path} row {i}", row) for i, row in enumerate(pq.read_table(p).to_pylist())]
    if p.exists() or p.suffix in (".jsonl", ".gz", ".json", ".parquet"):
        raise FileNotFoundError(f"data.path={path}: no such file, or not .jsonl/.jsonl.gz/.json/.parquet")
    from datasets import load_dataset

    try:
        ds = load_dataset(path, data_dir=data_dir, split=split)
    except Exception as e:  # no such dataset, or offline: say which key to change
        raise FileNotFoundError(f"data.path={path}: not a local file and load_dataset failed "
                                f"({type(e).__name__}: {str(e).splitlines()[0]})") from None
    return [(f"{path} ({split}) row {i}", row) for i, row in enumerate(ds)]
