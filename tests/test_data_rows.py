"""Data rows as users bring them: every kind of bad row dropped and counted under ``data.bad_rows=drop``, UTF-8
errors with file:line:column, lines split on newlines only, and the empty file named."""

from __future__ import annotations

import json

import pytest

from rlx.data.prompts import PromptData
from rlx.data.rows import BadRowError, read_rows


def _prompts(rows, **kw):
    return PromptData(rows, None, name="mine", prompt_field="question", answer_field="answer",
                      bad_rows=kw.pop("bad_rows", "drop"), eval_size=kw.pop("eval_size", 1), **kw)


def _write(tmp_path, lines: list[str], name="d.jsonl"):
    p = tmp_path / name
    p.write_bytes("\n".join(lines).encode("utf-8") + b"\n")
    return p


def test_drop_counts_invalid_json_missing_fields_and_wrong_types(tmp_path):
    good = [json.dumps({"question": f"{i}+1=", "answer": str(i + 1)}) for i in range(8)]
    lines = good[:2] + ["{not json"] + good[2:4] + [json.dumps({"q": "1+1=", "answer": "2"})] + good[4:] + \
        [json.dumps({"question": 5, "answer": "5"})]
    rows = read_rows(str(_write(tmp_path, lines)))
    data = _prompts(rows)
    assert dict(data.dropped) == {"invalid JSON": 1, "missing field": 1, "malformed": 1}
    assert data.drops.first[0].startswith(f"{tmp_path / 'd.jsonl'}:3: not valid JSON")
    # without drop, the first bad row stops it, named by file and line
    with pytest.raises(BadRowError, match=r"d\.jsonl:3: not valid JSON"):
        _prompts(rows, bad_rows="error")


def test_when_every_row_is_dropped_the_error_says_which_field_and_what_the_rows_have(tmp_path):
    lines = [json.dumps({"q": f"{i}+1=", "answer": str(i + 1)}) for i in range(6)]
    with pytest.raises(ValueError, match=r"missing field 'question'.*row has: q, answer"):
        _prompts(read_rows(str(_write(tmp_path, lines))))


def test_line_separators_inside_strings_stay_in_their_row(tmp_path):
    # U+2028 and U+0085 are line breaks to str.splitlines(), not to JSON lines
    lines = [json.dumps({"question": "a\u2028b", "answer": "1"}, ensure_ascii=False),
             json.dumps({"question": "c\u0085d", "answer": "2"}, ensure_ascii=False),
             json.dumps({"question": "e", "answer": "3"}) + "\r"]
    rows = read_rows(str(_write(tmp_path, lines)))
    assert [w.rsplit(":", 1)[1] for w, _ in rows] == ["1", "2", "3"]
    assert rows[0][1]["question"] == "a\u2028b" and rows[2][1]["answer"] == "3"


def test_bytes_that_are_not_utf8_are_named_by_file_line_and_column(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_bytes(b'{"question": "1+1=", "answer": "2"}\n{"question": "ab\xff", "answer": "3"}\n')
    with pytest.raises(BadRowError, match=r"bad\.jsonl:2:17: not valid UTF-8"):
        read_rows(str(p))


def test_the_empty_file_is_named(tmp_path):
    p = tmp_path / "empty.jsonl"
    p.write_text("\n")
    with pytest.raises(BadRowError, match=r"empty\.jsonl: the file is empty"):
        read_rows(str(p))


def test_a_bad_row_stops_the_cli_with_one_line_exit_2_and_no_run_dir(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    bad = _write(tmp_path, ['{"prompt": "1+1=", "answer": "2"}', "{bad"])
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "rlx", "data=jsonl", f"data.path={bad}", "trainer.steps=1",
                           "hardware.num_threads=1", f"hydra.run.dir={run_dir}"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent, timeout=120, env=os.environ.copy())
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"rlx: data error: {bad}:2: not valid JSON" in proc.stderr and "Traceback" not in proc.stderr
    assert not run_dir.exists()
