"""Data rows as users bring them: every kind of bad row dropped and counted under ``data.bad_rows=drop``, UTF-8
errors with file:line:column, lines split on newlines only, the empty file named, and fields of the wrong
type (answer, scores, prompt/chosen/rejected) named by file:line, field, type and expected type."""

from __future__ import annotations

import json

import pytest

import rlx
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
    assert dict(data.dropped) == {"invalid JSON": 1, "missing field": 1, "wrong type": 1}
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


# ---------------------------------------------------------------- field types


def _pref(tmp_path, rows, *overrides, data="preference"):
    path = _write(tmp_path, [r if isinstance(r, str) else json.dumps(r) for r in rows], name="pref.jsonl")
    return path, rlx.build("data", rlx.compose([f"data={data}", f"data.path={path}", "data.eval_size=0",
                                                *overrides]).data)


def _pairs(n=6):
    return [{"prompt": f"{i}+1=", "chosen": str(i + 1), "rejected": str(i)} for i in range(n)]


@pytest.mark.parametrize("answer, shown", [(["4", "four"], "a list (['4', 'four'])"),
                                           ({"value": 4}, "an object ({'value': 4})"),
                                           (True, "a boolean (True)")])
def test_an_answer_of_the_wrong_type_is_named_by_file_line_field_and_types(tmp_path, answer, shown):
    # the rewards read `answer` as text: str(['4', 'four']) matches no completion, so every sample would score 0
    good = [json.dumps({"question": f"{i}+1=", "answer": str(i + 1)}) for i in range(6)]
    path = _write(tmp_path, good[:3] + [json.dumps({"question": "3+1=", "answer": answer})] + good[3:])
    with pytest.raises(BadRowError) as e:
        _prompts(read_rows(str(path)), bad_rows="error")
    msg = str(e.value)
    assert msg.startswith(f"{path}:4: 'answer' must be a string or a number") and f"got {shown}" in msg
    data = _prompts(read_rows(str(path)))
    assert dict(data.dropped) == {"wrong type": 1} and len(data._train) + len(data.eval_set()) == 6


def test_answers_as_strings_or_numbers_are_kept_as_they_are(tmp_path):
    rows = [{"question": f"{i}+1=", "answer": a} for i, a in enumerate(["1", 2, 3.5, "#### 4", 5, "6"])]
    data = _prompts(read_rows(str(_write(tmp_path, [json.dumps(r) for r in rows]))), bad_rows="error", eval_size=0)
    assert sorted(map(str, (r["answer"] for r in data._train))) == ["#### 4", "1", "2", "3.5", "5", "6"]
    assert not data.dropped


def test_the_answer_field_of_a_jsonl_mapping_is_named(tmp_path):
    rows = [{"q": f"{i}+1=", "sol": str(i + 1)} for i in range(6)] + [{"q": "9+1=", "sol": [10]}]
    path = _write(tmp_path, [json.dumps(r) for r in rows])
    with pytest.raises(BadRowError, match=r"d\.jsonl:7: 'sol' must be a string or a number .*got a list \(\[10\]\)"):
        rlx.build("data", rlx.compose(["data=jsonl", f"data.path={path}", "data.prompt_field=q",
                                       "data.answer_field=sol", "data.eval_size=1"]).data)


@pytest.mark.parametrize("field, value, shown", [("score_chosen", "high", "a string ('high')"),
                                                 ("score_rejected", [1.0], "a list ([1.0])"),
                                                 ("score_chosen", None, "null (None)"),
                                                 ("score_rejected", True, "a boolean (True)")])
def test_a_score_that_is_not_a_number_is_named_by_file_line_field_and_types(tmp_path, field, value, shown):
    rows = _pairs()
    rows[2] = {**rows[2], "score_chosen": 9.0, "score_rejected": 2.0, field: value}
    with pytest.raises(BadRowError) as e:             # was a bare ValueError from float('high'), without a line
        _pref(tmp_path, rows)
    assert str(e.value).startswith(f"{tmp_path / 'pref.jsonl'}:3: '{field}' must be a number, got {shown}")
    _, data = _pref(tmp_path, rows, "data.bad_rows=drop")
    assert dict(data.dropped) == {"wrong type": 1} and len(data.train) == 5


def test_scores_as_numbers_or_numeric_strings_are_read_and_non_finite_ones_are_not(tmp_path):
    rows = _pairs()
    rows[0].update(score_chosen=8.5, score_rejected="3")     # UltraFeedback-style scores
    _, data = _pref(tmp_path, rows)
    assert sorted(tuple(r["scores"]) for r in data.train)[-1] == (8.5, 3.0)
    rows[1].update(score_chosen=float("nan"))               # json.dumps writes NaN, json.loads reads it back
    with pytest.raises(BadRowError, match=r"pref\.jsonl:2: 'score_chosen' must be a finite number, got nan"):
        _pref(tmp_path, rows)


@pytest.mark.parametrize("field, value, shown", [("prompt", 12, "an integer (12)"),
                                                 ("chosen", {"text": "2"}, "an object ({'text': '2'})"),
                                                 ("rejected", ["3"], "a list (['3'])")])
def test_prompt_chosen_rejected_of_the_wrong_type_are_named_and_counted_as_their_own_kind(tmp_path, field, value,
                                                                                         shown):
    rows = _pairs(8)
    rows[4] = {**rows[4], field: value}
    rows[6] = "{not json"
    with pytest.raises(BadRowError) as e:
        _pref(tmp_path, rows[:6])
    assert str(e.value).startswith(f"{tmp_path / 'pref.jsonl'}:5: '{field}' must be a string or a list of chat "
                                   f"messages, got {shown}")
    _, data = _pref(tmp_path, rows, "data.bad_rows=drop")
    assert dict(data.dropped) == {"wrong type": 1, "invalid JSON": 1} and len(data.train) == 6


def test_hh_rlhf_dialogues_and_scores_of_the_wrong_type(tmp_path):
    def dialogue(i, answer):
        return f"\n\nHuman: {i}+1?\n\nAssistant: {answer}"

    rows = [{"chosen": dialogue(i, i + 1), "rejected": dialogue(i, i)} for i in range(6)]
    rows[1]["rejected"] = 7
    rows[3].update(score_chosen="good", score_rejected=1)
    rows[5].update(score_chosen=4, score_rejected=1.5)
    with pytest.raises(BadRowError, match=r"pref\.jsonl:2: 'rejected' must be a string \(the whole dialogue\), "
                                          r"got an integer \(7\)"):
        _pref(tmp_path, rows, "data.bad_rows=error", data="hh_rlhf")
    _, data = _pref(tmp_path, rows, data="hh_rlhf")             # conf/data/hh_rlhf.yaml: bad_rows=drop
    assert dict(data.dropped) == {"wrong type": 2} and len(data.train) == 4
    assert sorted(tuple(r["scores"]) for r in data.train) == [(1.0, 0.0)] * 3 + [(4.0, 1.5)]


def test_kto_labels_of_the_wrong_type(tmp_path):
    rows = [{"prompt": f"{i}+1=", "completion": str(i + 1), "label": i % 2 == 0} for i in range(6)]
    rows[2]["label"] = "yes"
    with pytest.raises(BadRowError, match=r"pref\.jsonl:3: 'label' must be true/false .*got a string \('yes'\)"):
        _pref(tmp_path, rows)
