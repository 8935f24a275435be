"""The embedded reasoning task (data=sums): worked solutions, step labels, splits, its rewards, and the warm start
chosen by a data set's own warm_start node."""

from __future__ import annotations

import pytest

import rlx
from rlx.data.sums import SumsTask, final_answer, solution


def test_solution_writes_the_running_total():
    steps, total = solution([7, 3, 9, 4])
    assert steps == ["7+3=10", "10+9=19", "19+4=23"] and total == 23
    r = SumsTask.record((7, 3, 9, 4))
    assert r == {"prompt": "7+3+9+4=", "answer": "23", "steps": steps, "completion": "7+3=10;10+9=19;19+4=23>23"}
    assert final_answer(r["completion"]) == "23" and final_answer("7+3=10;10") is None


def test_lengths_vary_and_splits_are_disjoint():
    task = SumsTask(eval_size=100, dev_size=50)
    lengths = [len(r["completion"]) for r in task.train_batch(0, 500)]
    assert min(lengths) == len("0+0=0;0+0=0>0") and max(lengths) > 30   # 3 to 6 terms: 13 to 41 tokens
    held = {r["prompt"] for r in task.eval_set() + task.dev_set()}
    assert len(held) == 150 and not held & {r["prompt"] for r in task.train_batch(0, 2000)}
    assert task.max_completion_tokens() == len("9+9=18;18+9=27;27+9=36;36+9=45;45+9=54>54") + 1


def test_rewards():
    cfg = rlx.compose(["experiment=sums"])
    reward = rlx.build("reward", cfg.reward)
    rec = SumsTask.record((7, 3, 9, 4))
    texts = [rec["completion"], "7+3=10;10+9=19;19+4=24>23", "7+3=10;10+9=20;20+4=24>24", "23", "7+3=10;"]
    out = reward.score([rec["prompt"]] * 5, texts, answer=[rec["answer"]] * 5, steps=[rec["steps"]] * 5)
    assert out["terms"]["correct"] == [1.0, 1.0, 0.0, 0.0, 0.0]   # only the answer after '>' counts
    assert out["terms"]["steps"] == [1.0, 2 / 3, 1 / 3, 0.0, 1 / 3]
    assert out["total"] == out["terms"]["correct"]                 # the steps term has weight 0


def test_a_data_warm_start_is_its_own_build_and_the_default_key_is_unchanged():
    from rlx.models.tiny import recipe_hash
    from rlx.trainers.embedded import warm_task

    default, sums = rlx.compose([]), rlx.compose(["experiment=sums"])
    assert warm_task(default.env, default.data) is None   # the embedded arithmetic build, its key as before
    task = warm_task(sums.env, sums.data)
    assert task["data"]["name"] == "sums" and task["data"]["warm_start"]["dev_target"] == 0.2
    assert recipe_hash(sums.model, task) != recipe_hash(default.model)


def test_worked_share_mixes_answer_only_demonstrations_into_training_only():
    mixed, worked = SumsTask(eval_size=100, dev_size=50, worked_share=0.5), SumsTask(eval_size=100, dev_size=50)
    train = mixed.train_batch(0, 1000)
    terse = [r for r in train if ";" not in r["completion"]]
    assert 400 < len(terse) < 600                                          # about half, drawn per record
    assert all(r["completion"] == ">" + r["answer"] for r in terse)       # the answer alone: 3 tokens at most
    assert [r["prompt"] for r in train] == [r["prompt"] for r in worked.train_batch(0, 1000)]   # same problems
    assert mixed.train_batch(0, 1000) == train                             # the style is a function of (seed, i)
    assert mixed.eval_set() == worked.eval_set() and all(";" in r["completion"] for r in mixed.eval_set())
    cfg = rlx.compose(["experiment=sums_mixed"])
    assert rlx.build("data", cfg.data).worked_share == 0.5
    bad = rlx.compose(["experiment=sums", "data.warm_start.worked_share=1.5"])
    with pytest.raises(ValueError, match=r"data.warm_start.worked_share=1.5: must be in \[0, 1\]"):
        rlx.build("data", bad.data)
