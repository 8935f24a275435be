"""GHPO (rlx/algos/ghpo.py): hint texts and step counts by hand (data=sums records and a generic worked solution),
keep and retry_records on hand-made rewards (which records are retried, at which stage, from the original prompt;
the last stage is not retried), the online loop's own ``rollout`` over two steps with a stub generator (rounds,
batch fill, the hint counts and their reset between steps), the preset and its checks, and a 2-step run of the
tiny model on data=sums whose reward only the hinted prompts can earn."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from conftest import FAST, read_metrics
from omegaconf import OmegaConf

import rlx
from rlx.algos.ghpo import GHPO, hint, hint_step_count
from rlx.batch import Batch
from rlx.config import ConfigError
from rlx.data.sums import SumsTask
from rlx.trainers.online import OnlineTrainer

T_, F_ = True, False
FOUR_STEPS = SumsTask.record((7, 3, 9, 4, 5))   # 7+3=10;10+9=19;19+4=23;23+5=28>28
TWO_STEPS = SumsTask.record((7, 3, 9))          # 7+3=10;10+9=19>19
ONE_STEP = SumsTask.record((7, 3))              # 7+3=10>10


def ghpo(*overrides, **keys):
    """The preset's algorithm (command-line ``overrides``), with ``keys`` set on the built node."""
    return rlx.build("algo", OmegaConf.merge(rlx.compose(["algo=ghpo", *overrides]).algo, keys))


def test_hint_step_counts_by_hand():
    # k = min(max(1, ⌊ω·n⌋), n − 1)
    # n = 4: ⌊1⌋, ⌊2⌋, ⌊3⌋ = 1, 2, 3;  n = 2: ⌊0.5⌋ → 1, ⌊1⌋ = 1, ⌊1.5⌋ = 1;  n = 3: ⌊0.75⌋ → 1, ⌊1.5⌋ = 1, ⌊2.25⌋ = 2
    # n = 5: ⌊1.25⌋ = 1, ⌊2.5⌋ = 2, ⌊3.75⌋ = 3;  n = 10, ω = 0.7: 7 (0.7·10 = 7.000000000000001 in floats)
    assert [hint_step_count(4, w) for w in (0.25, 0.5, 0.75)] == [1, 2, 3]
    assert [hint_step_count(2, w) for w in (0.25, 0.5, 0.75)] == [1, 1, 1]
    assert [hint_step_count(3, w) for w in (0.25, 0.5, 0.75)] == [1, 1, 2]
    assert [hint_step_count(5, w) for w in (0.25, 0.5, 0.75)] == [1, 2, 3]
    assert hint_step_count(10, 0.7) == 7 and hint_step_count(100, 0.29) == 29   # 0.29·100 = 28.999999999999996
    assert hint_step_count(4, 0.999) == 3                                       # the last step is the model's


def test_hint_text_of_sums_records_by_hand():
    assert FOUR_STEPS["completion"] == "7+3=10;10+9=19;19+4=23;23+5=28>28"
    assert hint(FOUR_STEPS, 0.25) == ("7+3=10;", 1)
    assert hint(FOUR_STEPS, 0.5) == ("7+3=10;10+9=19;", 2)
    assert hint(FOUR_STEPS, 0.75) == ("7+3=10;10+9=19;19+4=23;", 3)
    assert [hint(TWO_STEPS, w) for w in (0.25, 0.5, 0.75)] == [("7+3=10;", 1)] * 3
    # the brief's example: "7+3+9+4=" (3 steps) at ω = 0.25 → "7+3=10;"
    assert hint(SumsTask.record((7, 3, 9, 4)), 0.25) == ("7+3=10;", 1)
    # cannot be hinted: one step (the model must write a step), or no step labels
    assert hint(ONE_STEP, 0.5) is None
    assert hint({"prompt": "1+1=", "answer": "2", "completion": "2"}, 0.5) is None


def test_hint_of_any_worked_solution_whose_steps_appear_in_order():
    # steps searched in order, each after the end of the previous one: "y=2" first occurs before "x=1", so step 2
    # is the second "y=2" (at 13), and the hint is everything before it
    r = {"prompt": "Q: ", "steps": ["x=1", "y=2", "z=3"], "completion": "y=2 then x=1, y=2 and z=3. Answer 3"}
    assert hint(r, 0.5) == ("y=2 then x=1, ", 1)
    assert hint(r, 0.75) == ("y=2 then x=1, y=2 and ", 2)
    prose = {"prompt": "Q: ", "steps": ["a=1", "b=a+1=2", "c=b*2=4"],
             "completion": "First a=1. Then b=a+1=2. So c=b*2=4. Answer 4"}
    assert hint(prose, 0.25) == ("First a=1. Then ", 1)


def test_a_step_missing_from_the_completion_names_the_prompt():
    bad = {"prompt": "2+2+2=", "steps": ["2+2=4", "4+2=6"], "completion": "2+2=4;4+2=7>7"}
    with pytest.raises(ValueError, match=r"step 2 '4\+2=6' of the record with prompt '2\+2\+2='"):
        hint(bad, 0.5)
    out_of_order = {"prompt": "Q", "steps": ["b", "a"], "completion": "a;b>"}
    with pytest.raises(ValueError, match="with prompt 'Q'"):
        hint(out_of_order, 0.5)


def test_keep_is_any_success_above_the_threshold():
    rewards = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [-0.5, 0.0, 0.0]])
    assert ghpo().keep(rewards).tolist() == [F_, T_, T_, F_]                   # r = 0 is a failure (not > 0)
    shaped = torch.tensor([[0.1, 0.1], [0.1, 1.1], [0.0, 0.0]])               # a 0.1 format term
    assert ghpo().keep(shaped).tolist() == [T_, T_, F_]
    assert ghpo(success_threshold=0.1).keep(shaped).tolist() == [F_, T_, F_]  # the format share alone fails


def test_retry_records_stage_by_stage_from_the_original_prompt():
    a = ghpo()
    records = [FOUR_STEPS, TWO_STEPS, ONE_STEP, SumsTask.record((1, 2, 3, 4, 5))]
    keep = a.keep(torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 1.0]]))
    assert keep.tolist() == [F_, F_, F_, T_]
    stage1 = a.retry_records(records, keep)
    # record 3 solved (not retried), record 2 has one step (cannot be hinted: its group is dropped)
    assert [r["prompt"] for r in stage1] == ["7+3+9+4+5=7+3=10;", "7+3+9=7+3=10;"]
    assert [(r["raw_prompt"], r["hint_stage"], r["hint_steps"]) for r in stage1] == [
        ("7+3+9+4+5=", 1, 1), ("7+3+9=", 1, 1)]
    assert all(r["answer"] == s["answer"] and r["steps"] == s["steps"] for r, s in zip(stage1, records))
    assert records[0]["prompt"] == "7+3+9+4+5=" and "hint_stage" not in records[0]   # the data's record untouched
    # stage 2: the second fails again, the first is solved; the hint is rebuilt from raw_prompt, not appended
    stage2 = a.retry_records(stage1, torch.tensor([F_, T_]))
    assert [(r["prompt"], r["hint_stage"], r["hint_steps"]) for r in stage2] == [("7+3+9+4+5=7+3=10;10+9=19;", 2, 2)]
    stage3 = a.retry_records(stage2, torch.tensor([F_]))
    assert [(r["prompt"], r["hint_stage"], r["hint_steps"]) for r in stage3] == [
        ("7+3+9+4+5=7+3=10;10+9=19;19+4=23;", 3, 3)]
    assert a.retry_records(stage3, torch.tensor([F_])) == []                  # the last stage: dropped
    # two stages only: a stage-2 record is at the last stage
    assert ghpo(hint_ratios=[0.25, 0.5]).retry_records(stage2, torch.tensor([F_])) == []


def test_a_data_set_without_step_labels_fails_at_the_first_retry():
    a = ghpo()
    rows = [{"prompt": "1+1=", "answer": "2"}]
    assert a.retry_records(rows, torch.tensor([T_])) == []                   # solved: nothing to hint
    with pytest.raises(ValueError, match=r"prompt '1\+1=' has no 'steps' and 'completion'.*data\.name"):
        a.retry_records(rows, torch.tensor([F_]))


# ---------------------------------------------------------------- the online loop's own rollout, stub generation

def _stub_loop(algo, records: list[dict], solves, G=2, B=3, T=2):
    """``OnlineTrainer.rollout`` on a stub trainer whose generation round scores a record 1 (all G samples) when
    ``solves(record)``, else 0; fresh rounds take the next B of ``records``. Each group's token ids hold its
    record's index in ``records`` (1-based) and its stage, to see which groups the batch kept."""
    index = {r["prompt"]: i + 1 for i, r in enumerate(records)}
    state = SimpleNamespace(cursor=0, rounds=[])

    def generate_round(B_, G_, retry, round_=0):
        if retry is None:
            retry = records[state.cursor:state.cursor + B_]
            state.cursor += B_
        n = len(retry)
        rewards = torch.tensor([float(solves(r)) for r in retry]).repeat_interleave(G_)
        ids = torch.tensor([[index[r.get("raw_prompt", r["prompt"])], r.get("hint_stage", 0), 0]
                            for r in retry]).repeat_interleave(G_, 0)
        mask = torch.ones(n * G_, T, dtype=torch.bool)
        batch = Batch(ids, torch.ones_like(ids), mask, rewards)
        raw = dict(total=rewards.tolist(), score=rewards.tolist(), terms={}, failed=[False] * n * G_,
                   response_mask=mask, truncated=torch.zeros(n * G_, dtype=torch.bool), gen_s=1.0,
                   gen_tokens=n * G_ * T, shape_metrics={}, extra_metrics=None, rewards=rewards, local_samples=n * G_)
        state.rounds.append([r["prompt"] for r in retry])
        return batch, raw, algo.keep(rewards.view(-1, G_)), retry

    stub = SimpleNamespace(cfg=OmegaConf.create({"data": {"prompts_per_step": B}}), algo=algo,
                           tok=SimpleNamespace(pad_token_id=0), _generate_round=generate_round,
                           _select=OnlineTrainer._select)
    return stub, state


def test_the_loop_hints_stage_by_stage_and_counts_per_step():
    # rule: a record is solved once its hint gives away >= need[prompt] steps (need 0 = solved unhinted)
    a = ghpo(group_size=2)
    recs = [FOUR_STEPS, TWO_STEPS, SumsTask.record((1, 2, 3, 4)),            # step 1: 4, 2 and 3 steps
            SumsTask.record((2, 2)), SumsTask.record((5, 5, 5)), SumsTask.record((1, 1, 1, 1))]   # step 2
    need = {FOUR_STEPS["prompt"]: 2, TWO_STEPS["prompt"]: 2, "1+2+3+4=": 0, "2+2=": 1, "5+5+5=": 1, "1+1+1+1=": 3}
    stub, state = _stub_loop(a, recs, lambda r: r.get("hint_steps", 0) >= need[r.get("raw_prompt", r["prompt"])])
    batch, metrics, select = OnlineTrainer.rollout(stub)
    # step 1: round 1 (fresh) keeps 1+2+3+4 (need 0); FOUR_STEPS (n = 4) gets k = 1, 2: solved at stage 2;
    # TWO_STEPS (n = 2) gets k = 1, 1, 1 and is never solved: dropped after stage 3 → 4 rounds, 2 of 3 groups kept
    assert state.rounds == [["7+3+9+4+5=", "7+3+9=", "1+2+3+4="],
                            ["7+3+9+4+5=7+3=10;", "7+3+9=7+3=10;"],
                            ["7+3+9+4+5=7+3=10;10+9=19;", "7+3+9=7+3=10;"],
                            ["7+3+9=7+3=10;"]]
    assert batch.input_ids[:, :2].tolist() == [[3, 0], [3, 0], [1, 2], [1, 2]]   # (record, stage) of each row
    assert metrics["ghpo/gen_rounds"] == 4.0 and metrics["ghpo/batch_fill"] == pytest.approx(2 / 3)
    assert metrics["groups/kept_frac"] == pytest.approx(2 / 8)   # 2 solved of 3 + 2 + 2 + 1 groups generated
    # 2 + 2 + 1 groups generated with a hint, 1 of them solved (FOUR_STEPS at stage 2)
    assert (metrics["ghpo/retried_groups"], metrics["ghpo/retried_kept"]) == (5.0, 1.0) and select == {}
    # step 2: the counts start again. 2+2= has one step (no hint; dropped), 5+5+5= (n = 2) solved at stage 1,
    # 1+1+1+1= (n = 3: k = 1, 1, 2) never reaches 3 steps: dropped after stage 3
    state.rounds.clear()
    batch, metrics, select = OnlineTrainer.rollout(stub)
    assert state.rounds == [["2+2=", "5+5+5=", "1+1+1+1="],
                            ["5+5+5=5+5=10;", "1+1+1+1=1+1=2;"],
                            ["1+1+1+1=1+1=2;"], ["1+1+1+1=1+1=2;2+1=3;"]]
    assert batch.input_ids[:, :2].tolist() == [[5, 1], [5, 1]]
    assert metrics["ghpo/batch_fill"] == pytest.approx(1 / 3)
    assert (metrics["ghpo/retried_groups"], metrics["ghpo/retried_kept"]) == (4.0, 1.0)
    assert a.state_dict() == {}                                   # nothing carries over between steps


def test_easy_prompts_take_one_round():
    a = ghpo(group_size=2)
    stub, state = _stub_loop(a, [FOUR_STEPS, TWO_STEPS, ONE_STEP], lambda r: True)
    batch, metrics, select = OnlineTrainer.rollout(stub)
    assert len(state.rounds) == 1 and len(batch) == 6 and metrics["ghpo/batch_fill"] == 1.0
    assert (metrics["ghpo/retried_groups"], metrics["ghpo/retried_kept"]) == (0.0, 0.0) and select == {}


# ---------------------------------------------------------------- the preset and its checks

def test_preset_composes_and_builds():
    cfg = rlx.compose(["algo=ghpo"])
    a = rlx.build("algo", cfg.algo)
    assert isinstance(a, GHPO) and a.hint_ratios == (0.25, 0.5, 0.75) and a.success_threshold == 0.0
    assert a.group_size == 8 and a.beta == 0.0 and "ref_logp" not in a.requires and a.gen_rounds() == 4
    # the preset picks the step-labelled task, its reward and room for its solutions (as experiment=sums)
    assert (cfg.data.name, cfg.reward.name, cfg.rollout.max_new_tokens) == ("sums", "sums", 48)
    assert rlx.compose(["algo=ghpo", "data=jsonl", "data.path=rows.jsonl"]).data.name == "jsonl"   # checked later


def test_a_data_set_without_step_labels_is_refused_naming_data_name():
    with pytest.raises(ConfigError, match="data.name=arithmetic: algo=ghpo .* step labels"):
        rlx.compose(["algo=ghpo", "data=arithmetic"])


def test_a_multi_turn_env_is_refused_naming_env():
    with pytest.raises(ConfigError, match="env=guess: algo=ghpo hints single-turn prompts"):
        rlx.compose(["algo=ghpo", "env=guess"])


@pytest.mark.parametrize("value, why", [("[0.25,1.0]", r"\[0.25, 1.0\]: each ratio must be in \(0, 1\)"),
                                        ("[0.0,0.5]", r"\[0.0, 0.5\]: each ratio must be in \(0, 1\)"),
                                        ("[0.5,0.25]", r"\[0.5, 0.25\]: must increase"),
                                        ("[0.5,0.5]", r"\[0.5, 0.5\]: must increase"),
                                        ("[]", r"\[\]: must be a non-empty list")])
def test_bad_hint_ratios_name_the_key(value, why):
    with pytest.raises(ConfigError, match=f"algo.hint_ratios={why}"):
        rlx.compose(["algo=ghpo", f"algo.hint_ratios={value}"])


# ---------------------------------------------------------------- a real run

@pytest.mark.slow
def test_two_steps_of_the_tiny_model_train_on_hinted_groups(tmp_path):
    # data=sums (the preset's) with a reward only a prompt that gives away >= 2 steps can earn: no sample is
    # solved unhinted, every prompt is hinted, and which stage solves it follows from its step count n alone
    # (k = 1, 1, 1 for n = 2; 1, 1, 2 for n = 3; 1, 2 for n = 4, 5): the counts below are worked out per prompt.
    reward = tmp_path / "hinted.py"
    reward.write_text("def score(prompts, completions, **_):\n"
                      "    return [float(p.count('=') - 1 >= 2) for p in prompts]   # '=' of the problem + 1 per step\n")
    cfg = rlx.compose(["algo=ghpo", "algo.group_size=2", "data.prompts_per_step=4", "rollout.max_new_tokens=4",
                       "trainer.steps=2", "hardware.num_threads=1", "reward=python", f"reward.fn={reward}:score",
                       *FAST])
    rlx.run(cfg, run_dir=tmp_path / "run")
    rows = read_metrics(tmp_path / "run")
    data = rlx.build("data", cfg.data)
    for step, row in zip((1, 2), rows[1:]):
        n_steps = [len(r["steps"]) for r in data.train_batch(4 * (step - 1), 4)]
        stages = [next((j for j in (1, 2, 3) if hint_step_count(n, (0.25, 0.5, 0.75)[j - 1]) >= 2), None)
                  for n in n_steps]
        solved = [s for s in stages if s is not None]
        assert row["ghpo/batch_fill"] == len(solved) / 4, (step, n_steps)
        assert row["ghpo/gen_rounds"] == (4.0 if None in stages or 3 in stages else 3.0)
        assert row["ghpo/retried_kept"] == len(solved)
        assert row["ghpo/retried_groups"] == sum(3 if s is None else s for s in stages)
        if solved:
            assert row["reward/mean"] > 0 and "loss/total" in row
