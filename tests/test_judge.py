"""The generative judge reward (rlx/rewards/judge.py, SPCT arXiv:2504.02495): the score parser on hand-written
judgements, the paper's voting example, the failure accounting of unparsable judgements through CompositeReward
(a scripted judge), and the embedded model as a real judge: alone, and in a 2-step GRPO run."""

from __future__ import annotations

import math

import pytest
from conftest import FAST, read_metrics

import rlx
import rlx.rewards.judge as judge_mod  # registers judge / judge_unparsed (also imported by rlx.rewards)
from rlx.metrics import rollout_metrics
from rlx.rewards.composite import CompositeReward
from rlx.rewards.judge import compile_pattern, parse_score, vote

PATTERN = compile_pattern(r"Score:\s*(-?\d+)(?!\.?\d)")   # conf/reward/judge.yaml's


# ---------------------------------------------------------------- parser: range [1, 10]
@pytest.mark.parametrize("judgement, score", [
    ("The answer 7 is right and bare.\nScore: 7", 7),                           # valid
    ("Score:10", 10),                                                           # no space, upper bound
    ("Score: 1.", 1),                                                           # lower bound, sentence full stop
    ("Correctness: 3+4=7, right. Clarity: 2 of 3. Score: 4\nOn reflection, Score: 9", 9),   # several: the last
    ("Score: 6/10", 6),                                                         # out of ten
    ("Score: 11", None),                                                        # out of range, above
    ("Score: 0", None),                                                         # out of range, below
    ("Score: -3", None),
    ("Score: 8\nScore: 12", None),                                              # the last one counts, and is invalid
    ("Score: 7.5", None),                                                       # not an integer
    ("The response is correct and concise.", None),                             # missing
    ("score 7", None),                                                          # not the format
    ("", None),
])
def test_parse_score(judgement, score):
    assert parse_score(judgement, PATTERN, 1, 10) == score


def test_parse_score_custom_format():
    # DeepSeek-GRM writes its final scores in double brackets: "Final Scores: [[6]]"
    assert parse_score("Critique ... Final Scores: [[6]]", compile_pattern(r"\[\[(\d+)\]\]"), 1, 10) == 6
    with pytest.raises(ValueError, match="exactly one"):
        compile_pattern(r"Score: \d+")   # no capture group


# ---------------------------------------------------------------- voting
def test_spct_voting_example():
    # 4 sampled judgements each score the responses (R1, R2): [1, 5], [5, 6], [4, 8], [7, 6].
    # Sum voting: R1 = 1 + 5 + 4 + 7 = 17, R2 = 5 + 6 + 8 + 6 = 25 -> R2 is chosen.
    samples = [[1, 5], [5, 6], [4, 8], [7, 6]]
    r1, r2 = (vote([s[i] for s in samples], "sum") for i in (0, 1))
    assert (r1, r2) == (17, 25) and max((r1, "R1"), (r2, "R2"))[1] == "R2"
    # mean: 17 / 4 = 4.25, 25 / 4 = 6.25 (same choice)
    assert [vote([s[i] for s in samples], "mean") for i in (0, 1)] == [4.25, 6.25]


def test_vote_with_unparsable_judgements():
    # 2 of 4 parse (7, 9): mean 8; sum keeps the scale of a full vote, 4 · 8 = 32 (not 7 + 9 = 16)
    assert vote([7, None, 9, None], "sum") == 32 and vote([7, None, 9, None], "mean") == 8
    assert math.isnan(vote([None, None, None], "sum"))     # none parse: a failed sample
    with pytest.raises(ValueError, match="sum, mean"):
        vote([1], "median")


# ---------------------------------------------------------------- failure accounting (a scripted judge)
SCRIPT = {   # the k = 4 judgements of each response
    "7": ["Right. Score: 7", "Score: 9", "Score: 8", "Score: 8"],        # all parse: 7 + 9 + 8 + 8 = 32
    "8": ["Wrong. Score: 2", "hmm", "Score: 11", "Score: 4"],            # 2 parse (2, 4): 4 · 3 = 12, share 0.5
    "x": ["57", "5775", "Score: 0", "Score:"],                           # none parse: failed (NaN)
}


def scripted(cfg):
    """A stand-in for hf_generator: the judgements of SCRIPT, chosen by the response in the judge prompt."""
    def generate(texts, k):
        assert k == 4
        return [SCRIPT[t.split("Response: ")[1].split("\n")[0]] for t in texts]
    return generate


def test_unparsable_judgements_are_reward_failures(monkeypatch):
    monkeypatch.setattr(judge_mod, "hf_generator", scripted)
    cfg = rlx.compose(["reward=judge", "reward.judge.batch_size=2"])   # 2 generate calls for 3 responses
    reward = CompositeReward(cfg.reward)
    out = reward.score(["3+4="] * 3, ["7", "8", "x"], answer=["7"] * 3)
    assert out["terms"]["judge"][:2] == [32.0, 12.0] and math.isnan(out["terms"]["judge"][2])
    assert out["terms"]["unparsed"] == [0.0, 0.5, 1.0]
    assert out["failed"] == [False, False, True]
    assert reward.failures == {"judge": 1, "unparsed": 0}
    import torch

    m = rollout_metrics(out["total"], out["score"], out["terms"], out["failed"], torch.ones(3, 2, dtype=torch.bool),
                        torch.zeros(3, dtype=torch.bool), 1)
    # one failed sample; the unparsable share over the two scored ones: (0 + 0.5) / 2
    assert m["reward/failures"] == 1.0 and m["reward/unparsed/mean"] == 0.25 and m["score/mean"] == 22.0


def test_bad_judge_settings_fail_loudly(monkeypatch):
    monkeypatch.setattr(judge_mod, "hf_generator", scripted)
    for override, needle in [("reward.judge.template='{prompt} {verdict}'", "verdict"),
                             ("reward.judge.temperature=0", "T must be > 0"),
                             ("reward.judge.aggregation=median", "sum, mean"),
                             ("reward.judge.pattern='Score'", "exactly one")]:
        with pytest.raises(ValueError, match=needle):
            CompositeReward(rlx.compose(["reward=judge", override]).reward)


# ---------------------------------------------------------------- the embedded model as the judge
@pytest.mark.slow
def test_embedded_judge_counts_unparsable_judgements_as_failures(warm_tiny):
    # The embedded model has only read "a+b=" prompts: it answers the judge prompt with digits, not "Score: n".
    import torch

    torch.manual_seed(0)
    cfg = rlx.compose(["reward=judge", "reward.judge.k=2"])
    reward = CompositeReward(cfg.reward)
    prompts, responses = ["3+4=", "12+30=", "5+5=", "40+2="], ["7", "42", "11", "forty-two"]
    out = reward.score(prompts, responses, answer=["7", "42", "10", "42"])
    judge = reward.terms["judge"][0].judge
    pairs, shares, judgements = judge.last
    assert pairs == list(zip(prompts, responses)) and [len(j) for j in judgements] == [2] * 4
    unparsable = [all(parse_score(j, judge.pattern, 1, 10) is None for j in js) for js in judgements]
    assert any(unparsable), judgements
    assert out["failed"] == unparsable and reward.failures["judge"] == sum(unparsable)
    assert out["terms"]["unparsed"] == shares
    m = rollout_metrics(out["total"], out["score"], out["terms"], out["failed"], torch.ones(4, 1, dtype=torch.bool),
                        torch.zeros(4, dtype=torch.bool), 1)
    assert m["reward/failures"] == float(sum(unparsable))


@pytest.mark.slow
def test_two_steps_of_grpo_with_the_judge_log_the_failures(tmp_path, warm_tiny):
    # The policy is the random-init embedded model (FAST), the judge the warm-started one (warm_tiny builds it).
    cfg = rlx.compose(FAST + ["reward=judge", "reward.judge.k=2", "trainer.steps=2", "data.prompts_per_step=2",
                              "algo.group_size=4", "data.eval_size=4", "hardware.num_threads=1"])
    summary = rlx.run(cfg, run_dir=tmp_path / "run")
    assert summary["steps"] == 2
    rows = [r for r in read_metrics(tmp_path / "run") if "reward/failures" in r]
    assert [r["step"] for r in rows] == [1, 2]
    # 2 prompts × 4 samples per step, nearly every one unjudgeable by the embedded model: counted, not crashed
    assert all(0 < r["reward/failures"] <= 8 for r in rows), rows
    assert all("reward/judge/mean" in r and "reward/unparsed/mean" in r for r in rows)
    # every sample failed: no finite reward, so each step's update is skipped (trainer.max_bad_steps=3 in a row
    # would stop a longer run); the held-out samples the judge could not score are eval failures
    last = read_metrics(tmp_path / "run")[-1]
    assert last["health/skipped_steps"] == sum(r["reward/failures"] == 8 for r in rows)
    assert 0 < last["eval/arithmetic/failures"] <= 4
