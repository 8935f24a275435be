"""Reward functions: GSM8K answer extraction (every form, and the near misses that must not match),
math-verify equivalence, format / length / repetition terms, user functions by import path, and
per-sample isolation of failing or slow terms (CompositeReward)."""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import pytest
from conftest import loss_inputs
from omegaconf import OmegaConf

import rlx
from rlx.rewards.composite import CompositeReward
from rlx.rewards.format import build_format, build_repetition
from rlx.rewards.gsm8k import build_gsm8k, extract_final_answer
from rlx.rewards.latex_math import build_math
from rlx.rewards.length import build_length, soft_overlong_punishment
from rlx.rewards.python import import_function

GSM8K_TEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "test.jsonl"
gsm8k = build_gsm8k()

# ---------------------------------------------------------------- gsm8k: forms that match (answer 18 unless stated)
MATCH = [
    ("#### 18", "18"),
    ("A: 18", "18"),
    ("The answer is $18.00.", "18"),
    (r"So the answer is \boxed{18}.", "18"),
    ("18 dollars", "18"),
    ("She makes 9 * 2 = $18 every day.", "18"),                     # no marker: the last number
    ("The answer is 1,234.", "1234"),                                  # thousands separator in the completion
    ("#### 1234", "She has 1,000 + 234 = 1,234 coins.\n#### 1,234"),   # ... and in the worked solution
    ("The answer is 18 km/h", "18"),                                   # trailing units
    (r"\boxed{18\text{ eggs}}", "18"),
    ("The answer is -3.", "-3"),                                       # negatives, ASCII and unicode minus
    ("The answer is \u22123 degrees", "-3"),
    ("The answer is 0.5", "1/2"),                                      # equal decimal and fraction
    (r"The answer is $\frac{1}{2}$", "0.5"),
    (r"$\boxed{\dfrac{3}{4}}$", "0.75"),
    ("The answer is 2.50", "2.5"),
    ("The answer is 50%", "50"),
    ("Answer:\n\n42", "42"),                                           # the marker's value on a later line
    ("The answer is 18 + 2 = 20", "20"),                               # an equation states its result
    ("#### 18", "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 eggs.\nShe makes 9 * 2 = $<<9*2=18>>18.\n#### 18"),
    ("#### 18", 18),                                                   # a bare number, not a string
]

# ---------------------------------------------------------------- forms that must NOT match answer 18
NO_MATCH = [
    "The answer is 18 + 2 = 20",            # 18 in the middle of a wrong final answer
    "I had 18 apples, so the answer is 20",  # an earlier 18, a later final answer
    "#### 1800",                             # 18 inside a longer number
    "The answer is $18,000",
    "The answer is 18.5",
    "The answer is 180.",
    "The answer is -18",
    "The answer is 118",
    "A: 81",
    r"\boxed{19} (18 was my first guess)",
    "no number here",
]


@pytest.mark.parametrize("completion, answer", MATCH)
def test_gsm8k_matches(completion, answer):
    assert gsm8k(["q"], [completion], answer=[answer]) == [1.0]


@pytest.mark.parametrize("completion", NO_MATCH)
def test_gsm8k_rejects_near_misses(completion):
    assert gsm8k(["q"], [completion], answer=["#### 18"]) == [0.0]


def test_gsm8k_extraction_values():
    # The value each form states, exactly as a rational.
    assert extract_final_answer("#### 1,234,567") == 1234567
    assert extract_final_answer("The answer is 3/4") == extract_final_answer("0.75")
    assert extract_final_answer("x = -7") == -7
    assert extract_final_answer("nothing") is None
    # The LAST marker wins: a corrected answer counts, not the first one.
    assert extract_final_answer("The answer is 5. Wait, the answer is 6.") == 6


def test_gsm8k_answer_without_number_fails_the_sample_and_none_matches_nothing():
    with pytest.raises(ValueError, match="states no number"):
        gsm8k(["q"], ["18"], answer=["no label"])
    assert gsm8k(["q"], ["18"], answer=[None]) == [0.0]   # no majority (label-free RL): no reward


@pytest.mark.skipif(not GSM8K_TEST.exists(), reason="../shared/data/gsm8k is not present")
def test_gsm8k_all_test_solutions_score_their_own_answer_and_not_a_changed_one():
    rows = [json.loads(line) for line in GSM8K_TEST.read_text().splitlines() if line.strip()]
    assert len(rows) == 1319
    answers = [r["answer"] for r in rows]
    assert gsm8k(None, answers, answer=answers) == [1.0] * 1319
    changed = []
    for a in answers:
        head, final = a.rsplit("####", 1)
        n = int(final.strip().replace(",", ""))
        changed.append(f"{head}#### {n + 1}")          # the final number changed
    assert gsm8k(None, changed, answer=answers) == [0.0] * 1319
    times_ten = [f"{a.rsplit('####', 1)[0]}#### {int(a.rsplit('####', 1)[1].strip().replace(',', '')) * 10}"
                 for a in answers]   # 18 -> 180: the right digits inside a wrong number
    assert gsm8k(None, times_ten, answer=answers) == [0.0] * 1319


# ---------------------------------------------------------------- math-verify
math_reward = build_math()


@pytest.mark.parametrize("answer, completion", [
    (r"\frac{1}{2}", "The answer is $0.5$"),
    ("0.5", r"The answer is $\boxed{\frac{1}{2}}$"),
    (r"2\sqrt{2}", r"So we get $\sqrt{8}$."),
    (r"\sqrt{8}", r"$\boxed{2\sqrt{2}}$"),
    (r"$\frac{1}{2}$", r"$\frac{2}{4}$"),
    ("x+1", "$1+x$"),
])
def test_math_equal_forms(answer, completion):
    assert math_reward(["q"], [completion], answer=[answer]) == [1.0]


@pytest.mark.parametrize("answer, completion", [
    (r"\frac{1}{3}", "$0.33$"),
    (r"\sqrt{2}", "$2$"),
    (r"2\sqrt{2}", r"$\sqrt{6}$"),
    ("x+1", "$x-1$"),
    ("5", "no answer given"),
])
def test_math_unequal_forms(answer, completion):
    assert math_reward(["q"], [completion], answer=[answer]) == [0.0]


def test_math_vote_key_parses_back_to_the_same_value():
    key = math_reward.extract_answer(r"so $\boxed{\frac{2}{4}}$")
    assert math_reward(["q"], [r"$0.5$"], answer=[key]) == [1.0]


# ---------------------------------------------------------------- format, length, repetition
def test_format_think_answer():
    fmt = build_format(OmegaConf.create({"pattern": None}))
    completions = ["<think>2+2 is 4</think><answer>4</answer>", "  <think>a\nb</think>\n<answer>4</answer>\n",
                   "<answer>4</answer>", "<think>x</think><answer>4</answer> trailing", "4"]
    assert fmt(None, completions) == [1.0, 1.0, 0.0, 0.0, 0.0]


def test_format_custom_pattern():
    # algorithms.md §8.2's outputs with the pattern "答案是<digit>" anywhere: the fixture's [1, 1, 0, 0] also
    # checks the label (the 4th says 1, not 2), which is the correctness term's job; format alone gives 1.
    fmt = build_format(OmegaConf.create({"pattern": r".*答案是\d.*"}))
    assert fmt(None, ["答案是2", "我爱你答案是2", "我恨你", "as答案是1哦"]) == [1.0, 1.0, 0.0, 1.0]


def test_soft_overlong_punishment_paper_values():
    # algorithms.md §8.9: L_max = 20480, L_cache = 4096 -> penalty starts at 16384.
    assert soft_overlong_punishment([16384, 18432, 20480, 30000], 20480, 4096) == [0.0, -0.5, -1.0, -1.0]
    # As a reward term on completion_ids: L_max = 8, L_cache = 4 -> lengths 4, 6, 8 -> 0, -0.5, -1.
    term = build_length(OmegaConf.create({"max_length": 8, "cache_length": 4}))
    assert term(None, ["a", "b", "c"], completion_ids=[[1] * 4, [1] * 6, [1] * 8]) == [0.0, -0.5, -1.0]
    with pytest.raises(ValueError, match="cache_length"):
        build_length(OmegaConf.create({"max_length": 4, "cache_length": 64}))


def test_repetition_penalty_hand_example():
    rep = build_repetition(OmegaConf.create({"ngram_size": 3, "max_penalty": -1.0}))
    # "a b c a b c": 3-grams abc, bca, cab, abc -> 3 distinct of 4 -> -1 * (1 - 3/4) = -0.25
    assert rep(None, ["a b c a b c", "a b c d", "a b"]) == [-0.25, 0.0, 0.0]


def test_reasoning_composite_weighs_and_reports_each_term():
    cfg = rlx.compose(["reward=reasoning", "rollout.max_new_tokens=128"])   # L_max 128, L_cache 64
    reward = rlx.build("reward", cfg.reward)
    good = r"<think>half of one</think><answer>$\frac{1}{2}$</answer>"
    rambling = "so so so so so so the answer is 0.5"
    out = reward.score(["q", "q"], [good, rambling], answer=["0.5", "0.5"], completion_ids=[[1] * 20, [1] * 96])
    # good: correct 1, format 1, length 0 (20 <= 64), repetition 0 -> 1 + 0.1 = 1.1
    # rambling: correct 1, format 0, length (64 - 96) / 64 = -0.5; 10 words -> 8 word 3-grams, 5 distinct
    #           ("so so so" x4, "so so the", "so the answer", "the answer is", "answer is 0.5")
    #           -> repetition -1 * (1 - 5/8) = -0.375 -> 1 - 0.5 + 0.1 * (-0.375) = 0.4625
    assert out["terms"]["correct"] == [1.0, 1.0] and out["terms"]["format"] == [1.0, 0.0]
    assert out["terms"]["length"] == [0.0, -0.5]
    assert out["total"][0] == pytest.approx(1.1) and out["total"][1] == pytest.approx(0.4625)


# ---------------------------------------------------------------- user functions by import path
USER_REWARD = '''
def score(prompts, completions, answer, completion_ids, **fields):
    return [float(len(c) == len(ids)) + (0.5 if c.strip() == a else 0.0)
            for c, a, ids in zip(completions, answer, completion_ids)]
'''


def test_python_reward_by_import_path(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(USER_REWARD)
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = rlx.compose(["reward=python", "reward.fn=my_rewards:score"])
    reward = rlx.build("reward", cfg.reward)
    # "7" (1 token, right) -> 1 + 0.5; "12" (1 token of 2 chars, wrong) -> 0
    assert reward(["p", "p"], ["7", "12"], answer=["7", "8"], completion_ids=[[5], [9]]) == [1.5, 0.0]
    by_file = import_function(f"{tmp_path / 'my_rewards.py'}:score")
    assert by_file(["p"], ["7"], answer=["7"], completion_ids=[[5]]) == [1.5]


@pytest.mark.parametrize("path, needle", [
    ("no_such_pkg.rewards:score", "cannot import 'no_such_pkg.rewards'"),
    ("json:no_such_function", "has no callable 'no_such_function'"),
    (None, "reward.fn is not set"),
])
def test_python_reward_errors_name_the_path(path, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        import_function(path)


# ---------------------------------------------------------------- isolation (CompositeReward)
def bad(i: int) -> bool:
    return i % 5 == 0        # 20% of samples


def slow(i: int) -> bool:
    return i % 10 == 3       # 10% of samples


def _composite(timeout_s, *fns):
    """A CompositeReward of this module's functions, loaded as user functions (reward=python)."""
    cfg = {"score_term": fns[0].__name__, "timeout_s": timeout_s,
           "terms": {f.__name__: {"fn": "python", "function": f"{__name__}:{f.__name__}", "weight": 1.0}
                     for f in fns}}
    return CompositeReward(OmegaConf.create(cfg))


def raises_on_some(prompts, completions, **fields):
    out = []
    for c in completions:
        if bad(int(c)):
            raise ZeroDivisionError(f"sample {c}")
        out.append(1.0)
    return out


def sleeps_on_some(prompts, completions, **fields):
    for c in completions:
        if slow(int(c)):
            time.sleep(3.0)
    return [0.5] * len(completions)


@pytest.mark.slow
def test_isolation_per_sample_exceptions_and_timeouts():
    reward = _composite(0.5, raises_on_some, sleeps_on_some)
    completions = [str(i) for i in range(20)]
    t0 = time.perf_counter()
    out = reward.score(["p"] * 20, completions)
    took = time.perf_counter() - t0
    expect_failed = [bad(i) or slow(i) for i in range(20)]        # 0,5,10,15 raise; 3,13 sleep -> 6
    assert out["failed"] == expect_failed
    assert [math.isnan(v) for v in out["terms"]["raises_on_some"]] == [bad(i) for i in range(20)]
    assert [math.isnan(v) for v in out["terms"]["sleeps_on_some"]] == [slow(i) for i in range(20)]
    assert all(out["total"][i] == 1.5 for i in range(20) if not expect_failed[i])
    assert reward.failures == {"raises_on_some": 4, "sleeps_on_some": 2}
    assert took < 2 * 0.5 + 1.0        # batch deadline + one shared per-sample deadline (not 2 x 3 s)


def test_deadline_calls_reuse_one_worker_until_a_call_hangs():
    """Calls with a deadline run on a reused worker thread (no thread start per reward call); a call that misses its
    deadline keeps that worker, so the next call gets a fresh one and still succeeds on time."""
    import threading

    from rlx.rewards.composite import call_with_deadline

    ident = threading.get_ident
    first, err = call_with_deadline(ident, (), {}, 5.0)
    assert err is None and first != ident()
    assert call_with_deadline(ident, (), {}, 5.0) == (first, None)      # the same worker thread again
    assert call_with_deadline(lambda: 1 / 0, (), {}, 5.0) == (None, "ZeroDivisionError: division by zero")
    assert call_with_deadline(ident, (), {}, 5.0) == (first, None)      # an exception does not cost the worker
    release = threading.Event()
    assert call_with_deadline(release.wait, (), {}, 0.2) == (None, "no result after timeout_s=0.2 s")
    t0 = time.perf_counter()
    fresh, err = call_with_deadline(ident, (), {}, 5.0)
    assert err is None and fresh not in (first, ident()) and time.perf_counter() - t0 < 1.0
    release.set()   # the abandoned call returns; its worker is not taken back
    time.sleep(0.05)
    assert call_with_deadline(ident, (), {}, 5.0) == (fresh, None)
    import os

    pid = os.fork()   # a forked child (no copy of the worker's thread) starts its own worker
    if pid == 0:
        os._exit(0 if call_with_deadline(lambda: 7, (), {}, 2.0) == (7, None) else 1)
    assert os.waitpid(pid, 0)[1] == 0


def weird_values(prompts, completions, **fields):
    return [1.0, None, "x", float("inf"), 0.0][:len(completions)] if len(completions) == 5 else [1.0]


def one_value_only(prompts, completions, **fields):
    return [1.0]


def test_isolation_bad_values_fail_only_their_samples():
    reward = _composite(1.0, weird_values)
    assert reward.score(["p"] * 5, list("abcde"))["failed"] == [False, True, True, True, False]
    wrong_len = _composite(1.0, one_value_only)   # batch call: wrong length -> each sample alone: fine
    assert wrong_len.score(["p"] * 3, list("abc"))["failed"] == [False, False, False]


def test_isolation_without_timeout_still_isolates_exceptions():
    reward = _composite(0, raises_on_some)
    assert reward.score(["p"] * 6, [str(i) for i in range(6)])["failed"] == [True, False, False, False, False, True]


# ---------------------------------------------------------------- isolation in a real run (the online loop)
def _crc(text: str) -> int:
    import zlib

    return zlib.crc32(text.encode()) % 10


def content_score(prompts, completions, **fields):
    return [_crc(c + "score") / 9 for c in completions]          # varied rewards: non-zero advantages


def raises_on_20pct(prompts, completions, **fields):
    if any(_crc(c) < 2 for c in completions):
        raise RuntimeError("flaky reward")
    return [0.0] * len(completions)


def sleeps_on_10pct(prompts, completions, **fields):
    if any(_crc(c) == 2 for c in completions):
        time.sleep(2.0)
    return [0.0] * len(completions)


@pytest.mark.slow
def test_run_with_failing_and_slow_rewards_completes_and_the_update_ignores_them(tmp_path):
    import torch
    from conftest import FAST, read_metrics
    from omegaconf import open_dict

    from rlx.models.logprobs import token_logprobs
    from rlx.ops import group_normalize
    from rlx.registry import TRAINERS

    cfg = rlx.compose(FAST + ["trainer.steps=2", "data.prompts_per_step=8", "algo.group_size=4", "algo.beta=0",
                              "hardware.num_threads=1"])
    terms = {f.__name__: {"fn": "python", "function": f"{__name__}:{f.__name__}", "weight": 1.0}
             for f in (content_score, raises_on_20pct, sleeps_on_10pct)}
    with open_dict(cfg):
        cfg.reward = OmegaConf.create({"name": "flaky", "score_term": "content_score", "timeout_s": 0.5,
                                       "terms": terms})
    trainer = TRAINERS.get("online")(cfg, tmp_path)
    batch, metrics, _ = trainer.rollout()
    T, eos = batch.T, trainer.tok.eos_token_id
    texts = [trainer.tok.decode([t for t, m in zip(ids, am) if m and t != eos], skip_special_tokens=True)
             for ids, am in zip(batch.input_ids[:, -T:].tolist(), batch.attention_mask[:, -T:].tolist())]
    failed = torch.tensor([_crc(c) <= 2 for c in texts])          # 20% raise + 10% sleep past the limit
    assert 0 < failed.sum() < len(texts)
    assert metrics["reward/failures"] == float(failed.sum())
    assert torch.equal(batch.response_mask.any(-1), ~failed)      # failed samples never train
    # Advantages: failed samples get 0 and are left out of their group's mean and std.
    adv = trainer.algo.advantages(batch)[0][:, 0]
    assert torch.all(adv[failed] == 0)
    for g in range(0, len(texts), 4):
        ok = ~failed[g:g + 4]
        if ok.sum() >= 2:
            r = batch.rewards[g:g + 4][ok]
            assert torch.allclose(adv[g:g + 4][ok], group_normalize(r, len(r)), atol=1e-6)
    # The update equals the update on the batch with the failed samples removed (loss and gradient).
    batch.advantages = adv.unsqueeze(-1).expand_as(batch.response_mask)

    def loss_and_grad(rows):
        trainer.model.zero_grad()
        logp, _ = token_logprobs(trainer.model, batch.input_ids[rows], batch.attention_mask[rows], T)
        mask = batch.response_mask[rows]
        loss, _ = trainer.algo.loss(logp, loss_inputs(logp.detach(), batch.advantages[rows], mask))
        loss.backward()
        return loss.detach(), trainer.model.lm_head.weight.grad.clone()

    full, sub = loss_and_grad(torch.arange(len(texts))), loss_and_grad(torch.nonzero(~failed).flatten())
    assert torch.allclose(full[0], sub[0], atol=1e-6) and torch.allclose(full[1], sub[1], atol=1e-6)
    # And the run completes, counting failures every step.
    summary = trainer.fit()
    rows = read_metrics(tmp_path)
    assert summary["steps"] == 2 and [r["step"] for r in rows] == [0, 1, 2]
    assert all(r["reward/failures"] > 0 and math.isfinite(r["loss/total"]) for r in rows[1:])
    assert rows[-1]["health/skipped_steps"] == 0
