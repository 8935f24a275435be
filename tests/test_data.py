"""Prompt data users bring: data=gsm8k from the local copy, data=jsonl with a field mapping, bad rows
named by file and line, prompt limits, deterministic epoch-shuffled order, and the held-out
evaluation (greedy accuracy, pass@k, maj@k) through the user's path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FAST, read_metrics, run_cli

import rlx
from rlx.data.preference import BadRowError

GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k"
needs_gsm8k = pytest.mark.skipif(not (GSM8K / "test.jsonl").exists(), reason="../shared/data/gsm8k is not present")


def _jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _data(overrides):
    return rlx.build("data", rlx.compose(overrides).data)


@needs_gsm8k
def test_gsm8k_from_the_local_folder():
    data = _data(["data=gsm8k", f"data.path={GSM8K}"])
    assert data.name == "gsm8k"
    assert (len(data._train), len(data.eval_set()), len(data.dev_set())) == (7473 - 200, 1319, 200)
    first = json.loads((GSM8K / "test.jsonl").read_text().splitlines()[0])
    rec = data.eval_set()[0]
    assert rec["answer"] == first["answer"] and rec["answer"].endswith("#### 18")
    assert rec["prompt"].startswith(first["question"]) and rec["prompt"].endswith('after "####".')
    train_q = {r["prompt"] for r in data._train}
    assert not train_q & {r["prompt"] for r in data.dev_set()}          # dev never trained on


@pytest.mark.slow
def test_gsm8k_dataset_id_offline_names_the_key():
    with pytest.raises(FileNotFoundError, match="data.path=openai/gsm8k"):
        _data(["data=gsm8k"])                       # the default id; no network and no cache here


def test_train_order_is_a_function_of_the_cursor_and_reshuffles_each_epoch(tmp_path):
    path = _jsonl(tmp_path / "p.jsonl", [{"prompt": f"q{i}", "answer": str(i)} for i in range(10)])
    data = _data(["data=jsonl", f"data.path={path}", "data.eval_size=2"])
    epoch0, epoch1 = data.train_batch(0, 8), data.train_batch(8, 8)
    assert sorted(r["answer"] for r in epoch0) == sorted(r["answer"] for r in epoch1)   # each row once per epoch
    assert [r["answer"] for r in epoch0] != [r["answer"] for r in epoch1]               # a new order
    again = _data(["data=jsonl", f"data.path={path}", "data.eval_size=2"])
    assert again.train_batch(11, 5) == data.train_batch(11, 5)                          # resume: same records
    held = {r["answer"] for r in data.eval_set()}
    assert len(held) == 2 and not held & {r["answer"] for r in epoch0}


def test_jsonl_field_mapping_system_prompt_and_extra_fields(tmp_path):
    path = _jsonl(tmp_path / "p.jsonl", [{"question": f"{i}+1=", "solution": f"#### {i + 1}", "level": i}
                                         for i in range(6)])
    data = _data(["data=jsonl", f"data.path={path}", "data.eval_size=1", "data.prompt_field=question",
                  "data.answer_field=solution", "data.prompt_template='Q: {prompt}'", "data.system_prompt=Be brief."])
    rec = data.train_batch(0, 1)[0]
    assert set(rec) == {"prompt", "answer", "level"}                    # extra fields reach the reward
    i = rec["level"]
    assert rec["prompt"] == f"Be brief.\n\nQ: {i}+1=" and rec["answer"] == f"#### {i + 1}"


def test_jsonl_chat_template_on(tmp_path, tiny):
    path = _jsonl(tmp_path / "p.jsonl", [{"prompt": f"{i}+1=", "answer": str(i + 1)} for i in range(6)]
                  + [{"prompt": [{"role": "user", "content": "2+2="}], "answer": "4"}])
    data = _data(["data=jsonl", f"data.path={path}", "data.eval_size=0", "data.chat_template=true",
                  "data.system_prompt=Add."])
    data.prepare(tiny[1])
    prompts = [r["prompt"] for r in data.train_batch(0, 7)]
    assert all(p.startswith("<|im_start|>system\nAdd.<|im_end|>\n<|im_start|>user\n") for p in prompts)
    assert all(p.endswith("<|im_end|>\n<|im_start|>assistant\n") for p in prompts)
    assert any("2+2=" in p for p in prompts)                            # chat-message rows too


@pytest.mark.parametrize("line, needle", [
    ('{"prompt": "1+1=", "answer": "2"', "p.jsonl:3: not valid JSON"),
    ('{"answer": "2"}', "p.jsonl:3: missing field 'prompt'"),
    ('{"prompt": 7, "answer": "2"}', "p.jsonl:3: 'prompt' must be a non-empty string"),
    ('{"prompt": "1+1="}', "p.jsonl:3: missing field 'answer'"),
])
def test_bad_rows_are_named_by_file_and_line(tmp_path, line, needle):
    good = [{"prompt": f"{i}+1=", "answer": str(i + 1)} for i in range(6)]
    path = _jsonl(tmp_path / "p.jsonl", good[:2] + [line] + good[2:])
    with pytest.raises(BadRowError, match=needle.replace("(", r"\(")):
        _data(["data=jsonl", f"data.path={path}", "data.eval_size=1"])


def test_bad_rows_dropped_and_counted(tmp_path):
    good = [{"prompt": f"{i}+1=", "answer": str(i + 1)} for i in range(6)]
    path = _jsonl(tmp_path / "p.jsonl", good + [{"answer": "x"}, {"prompt": None, "answer": "y"}])
    data = _data(["data=jsonl", f"data.path={path}", "data.eval_size=1", "data.bad_rows=drop"])
    assert sum(data.dropped.values()) == 2 and len(data._train) == 5 and "dropped 2" in data.summary()


def test_long_prompts_error_drop_or_truncate(tmp_path, tiny):
    tok = tiny[1]
    rows = [{"prompt": f"{i}+1=", "answer": str(i + 1)} for i in range(6)] + [{"prompt": "9" * 50 + "+1=", "answer": "x"}]
    path = _jsonl(tmp_path / "p.jsonl", rows)
    base = ["data=jsonl", f"data.path={path}", "data.eval_size=0", "data.max_prompt_tokens=8"]
    with pytest.raises(BadRowError, match="p.jsonl:7: prompt has 53 tokens > data.max_prompt_tokens=8"):
        _data(base).prepare(tok)                                      # one token per digit: 50 + 3
    dropped = _data(base + ["data.long_prompts=drop"])
    dropped.prepare(tok)
    assert len(dropped._train) == 6 and dropped.dropped["long prompt"] == 1
    cut = _data(base + ["data.long_prompts=truncate"])
    cut.prepare(tok)
    long = [r["prompt"] for r in cut._train if r["answer"] == "x"][0]
    assert long == "99999+1=" and cut.truncated == 1 and cut.longest_prompt == 8   # the end is kept


def test_eval_pass_and_maj_at_k(tmp_path):
    rlx.run(rlx.compose(["trainer.steps=1", "data.prompts_per_step=4", "data.eval_size=16", "data.eval_k=4",
                         "hardware.num_threads=1", *FAST]), tmp_path)
    first = read_metrics(tmp_path)[0]
    acc, pass_k, maj_k = (first[f"eval/arithmetic/{m}"] for m in ("accuracy", "pass@4", "maj@4"))
    assert 0 <= maj_k <= pass_k <= 1 and 0 <= acc <= 1                  # a correct majority implies a hit


@needs_gsm8k
@pytest.mark.slow
def test_gsm8k_run_logs_eval_accuracy(tmp_path):
    # Done-when 5 with small sizes: data=gsm8k reward=gsm8k from the local folder, tiny model, prompts cut
    # from the left to fit its 128 positions (96 + 16 new tokens).
    proc = run_cli(["data=gsm8k", "reward=gsm8k", f"data.path={GSM8K}", "trainer.steps=2", "data.eval_size=8",
                    "data.prompts_per_step=2", "algo.group_size=2", "rollout.max_new_tokens=16",
                    "data.max_prompt_tokens=96", *FAST], run_dir=tmp_path)
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert "eval/gsm8k/accuracy" in rows[0] and "eval/gsm8k/accuracy" in rows[-1]
    assert "reward/correct/mean" in rows[1] and rows[1]["reward/failures"] == 0
    assert "prompts cut to 96 tokens" in proc.stderr and "max_position_embeddings" not in proc.stderr


def test_context_warning_names_the_keys(tmp_path, tiny):
    from rlx.data.prompts import context_warning

    path = _jsonl(tmp_path / "p.jsonl", [{"prompt": "1" * 100 + "+1=", "answer": "x"}] * 4)
    data = _data(["data=jsonl", f"data.path={path}", "data.eval_size=0"])
    data.prepare(tiny[1])
    assert data.longest_prompt == 103 and context_warning(data, tiny[0], 25) is None       # 103 + 25 = 128
    msg = context_warning(data, tiny[0], 26)                                                # 129 > 128
    assert "max_position_embeddings=128" in msg and "data.max_prompt_tokens" in msg and "rollout.max_new_tokens" in msg
