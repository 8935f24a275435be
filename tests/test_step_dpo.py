"""Step-DPO (algo=step_dpo) and its step pairs: the loss on a hand-computed example (arithmetic in the comments) and
as DPO's; the invariant tying it to response-level DPO (a shared prefix cancels from h); the generated pairs
of data=sums_steps (correct prefix, correct chosen step, plausible wrong rejected step, the prefix in the prompt and
not in the loss-bearing tokens, held-out pairs only from held-out problems); data=step_pairs' file rows (a row
without step labels names its file and line); and a 2-step run through rlx.run."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from conftest import FAST, read_metrics

import rlx
from rlx.algos.dpo import dpo_loss
from rlx.algos.preference import PrefBatch
from rlx.config import ConfigError
from rlx.data.preference import BadRowError
from rlx.data.step_pairs import step_tokens
from rlx.data.sums import solution
from rlx.models.logprobs import token_logprobs
from rlx.ops import masked_sum
from rlx.trainers.offline import encode

T = torch.tensor


def step_dpo(*overrides):
    return rlx.build("algo", rlx.compose(["algo=step_dpo", *overrides]).algo)


def sums_steps(*overrides):
    return rlx.build("data", rlx.compose(["algo=step_dpo", *overrides]).data)


# ---------------------------------------------------------------- the loss


def test_step_dpo_hand_computed():
    algo = step_dpo("algo.beta=0.4")
    # row 0: h = (-1 - -2) - (-3 - -2) = 1 - (-1) = 2; β h = 0.4 * 2 = 0.8; -log σ(0.8) = log(1 + e^-0.8)
    #        = log(1 + 0.449329) = 0.371101
    # row 1: policy = reference, h = 0: -log σ(0) = log 2 = 0.693147;  mean = (0.371101 + 0.693147) / 2 = 0.532124
    batch = PrefBatch(
        logps=T([[-1.0, -3.0], [-4.0, -6.0]]),
        n_tokens=T([[7.0, 7.0], [6.0, 6.0]]),
        scores=T([[1.0, 0.0], [1.0, 0.0]]),
        ref_logps=T([[-2.0, -2.0], [-4.0, -6.0]]),
    )
    loss, metrics = algo.loss(batch)
    assert loss.item() == pytest.approx(0.532124, abs=1e-6)
    assert loss.item() == pytest.approx((math.log(1 + math.exp(-0.8)) + math.log(2)) / 2, abs=1e-7)
    assert metrics["loss/total"].item() == loss.item()
    # DPO's loss, reused: the same numbers from rlx.algos.dpo.dpo_loss
    dpo, _ = dpo_loss(T([-1.0, -4.0]), T([-3.0, -6.0]), T([-2.0, -4.0]), T([-2.0, -6.0]), beta=0.4)
    assert loss.item() == dpo.item()
    # implicit reward β log π/π_ref of each step: 0.4 * (-1 - -2) = 0.4, 0.4 * (-3 - -2) = -0.4
    torch.testing.assert_close(algo.implicit_rewards(batch)[0], T([0.4, -0.4]))


def test_response_level_pairs_are_refused():
    with pytest.raises(
        ConfigError, match="data.name=arithmetic_pref: algo=step_dpo trains on step-level pairs"
    ):
        rlx.compose(["algo=step_dpo", "data=arithmetic_pref"])
    assert rlx.compose(["algo=step_dpo"]).data.name == "sums_steps"  # the preset's data
    assert rlx.compose(["algo=step_dpo", "data=step_pairs"]).data.name == "step_pairs"


def test_shared_prefix_cancels_so_step_dpo_is_dpo_on_the_whole_continuation(tiny):
    # h of (x + prefix, s_w vs s_l) equals h of (x, prefix + s_w vs prefix + s_l): the prefix's tokens have the same
    # context in both responses, so their log-ratio is the same on both sides and cancels; Step-DPO only drops it
    # from the sums (each log-ratio below differs between the two forms, h does not).
    ref, tok = tiny
    policy = copy.deepcopy(ref)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x, prefix, steps = "7+3+9+4=", "7+3=10;", ["10+9=19", "10+9=20"]
    p_step, r_step = step_tokens(tok, x + prefix, steps)
    p_whole, r_whole = step_tokens(tok, x, [prefix + s for s in steps])
    assert [p_step + r for r in r_step] == [p_whole + r for r in r_whole]  # the same token sequences

    def logps(model, prompt_ids, response_ids):
        ids, am, mask, T_ = encode([(prompt_ids, r) for r in response_ids], tok.pad_token_id, "cpu")
        with torch.no_grad():
            return masked_sum(token_logprobs(model, ids, am, T_)[0], mask, -1)

    ratio_step = logps(policy, p_step, r_step) - logps(ref, p_step, r_step)
    ratio_whole = logps(policy, p_whole, r_whole) - logps(ref, p_whole, r_whole)
    assert (ratio_step - ratio_whole).abs().min() > 1e-4  # the prefix's log-ratio is not 0 ...
    h_step, h_whole = ratio_step[0] - ratio_step[1], ratio_whole[0] - ratio_whole[1]
    assert h_step.item() == pytest.approx(h_whole.item(), abs=1e-5)  # ... but it cancels from h


# ---------------------------------------------------------------- the generated pairs


def test_pair_builder_invariants(tiny):
    _, tok = tiny
    data = sums_steps(
        "data.eval_size=100", "data.pref_eval_size=60", "data.dev_size=50", "data.train_size=300"
    )
    data.prepare(tok)
    train, held = data.train_batch(0, 300), data.pref_eval_set()
    kinds, ks = set(), set()
    for rec in train + held:
        terms = [int(t) for t in rec["problem"].rstrip("=").split("+")]
        steps, total = solution(terms)  # recomputed, not read from the record
        k, prefix = rec["k"], rec["initial_reason_steps"]
        worked = ";".join(steps) + f">{total}"
        # the prefix is the first k-1 correct steps of the solution, and the prompt ends with it
        assert 1 <= k <= len(steps) and prefix == "".join(s + ";" for s in steps[: k - 1])
        assert worked.startswith(prefix)
        assert rec["prompt"] == rec["problem"] + prefix
        # chosen is the correct next step; the SFT target continues the prefix to the answer
        assert rec["chosen"] == steps[k - 1] and rec["responses"] == [rec["chosen"], rec["rejected"]]
        assert prefix + rec["completion"] == worked
        # rejected is a different, plausibly wrong k-th step: the same running total on the left, then either a
        # sum off by 1 or 2 (total) or the next number misread by 1 and summed right (operand)
        assert rec["rejected"] != rec["chosen"]
        lhs, got = rec["rejected"].split("=")
        left, right = (int(v) for v in lhs.split("+"))
        assert left == sum(terms[:k])
        if rec["error"] == "total":
            assert right == terms[k] and abs(int(got) - (left + right)) in (1, 2) and int(got) >= 0
        else:
            assert abs(right - terms[k]) == 1 and 0 <= right <= 9 and int(got) == left + right
        # the prefix is in the prompt's tokens; the loss-bearing tokens are the step alone (no prefix, no EOS)
        assert tok.decode(rec["prompt_ids"]) == rec["prompt"]
        assert [tok.decode(ids) for ids in rec["response_ids"]] == rec["responses"]
        assert all(tok.eos_token_id not in ids for ids in rec["response_ids"])
        kinds.add(rec["error"])
        ks.add(k)
    assert kinds == {"total", "operand"} and ks == {1, 2, 3, 4, 5}
    # held-out pairs come from the eval problems (the first pref_eval_size, in order); training pairs never do
    eval_problems = [r["prompt"] for r in data.eval_set()]
    assert [r["problem"] for r in held] == eval_problems[:60]
    heldout = set(eval_problems) | {r["prompt"] for r in data.dev_set()}
    assert not heldout & {r["problem"] for r in data.train_batch(0, 3000)}  # 10 epochs of the pool


def test_run_seed_sets_the_order_not_the_pairs():
    a, b = sums_steps("seed=0"), sums_steps("seed=1")
    assert [r["id"] for r in a.train_batch(0, 8)] != [r["id"] for r in b.train_batch(0, 8)]
    assert a.train_example(5) == b.train_example(5) and a.pref_eval_set() == b.pref_eval_set()
    epoch = a.train_batch(0, 4096)  # one epoch visits each pool problem once
    assert sorted(r["id"] for r in epoch) == list(range(4096))


# ---------------------------------------------------------------- pairs from a file


GOOD = {"prompt": "7+3+9+4=", "initial_reason_steps": "7+3=10;", "chosen": "10+9=19", "rejected": "10+9=20"}


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def load(path, *overrides):
    return rlx.build(
        "data", rlx.compose(["algo=step_dpo", "data=step_pairs", f"data.path={path}", *overrides]).data
    )


@pytest.mark.parametrize(
    "bad, needle",
    [
        # a response-level pair: no initial_reason_steps
        ({"prompt": "7+3+9+4=", "chosen": "7+3+9+4=19", "rejected": "7+3+9+4=20"}, "no step label"),
        (dict(GOOD, rejected="10+9=19"), "chosen and rejected are the same step"),
        (dict(GOOD, chosen=19), "'chosen' must be a string"),
        (dict(GOOD, rejected=" "), "empty 'rejected' step"),
        ("{not json", "not valid JSON"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, bad, needle):
    path = write_jsonl(tmp_path / "steps.jsonl", [GOOD, GOOD, bad, GOOD])
    with pytest.raises(BadRowError) as e:
        load(path)
    assert f"{path}:3: " in str(e.value) and needle in str(e.value)


def test_file_rows_are_step_pairs(tmp_path, tiny):
    _, tok = tiny
    first = dict(GOOD, prompt="5+5+1=", initial_reason_steps="", chosen="5+5=10", rejected="5+5=11")
    rows = [first, {"prompt": "1+1=", "chosen": "2", "rejected": "3"}, GOOD, GOOD]
    data = load(write_jsonl(tmp_path / "steps.jsonl", rows), "data.bad_rows=drop")
    assert len(data.train) == 3 and dict(data.dropped) == {"no step label": 1}
    data.prepare(tok)
    by_line = {r["where"].rsplit(":", 1)[1]: r for r in data.train}
    rec = by_line["3"]
    assert rec["prompt"] == "7+3+9+4=7+3=10;" and tok.decode(rec["prompt_ids"]) == rec["prompt"]
    # the loss-bearing tokens: the step alone, no EOS
    assert [tok.decode(ids) for ids in rec["response_ids"]] == ["10+9=19", "10+9=20"]
    assert by_line["1"]["prompt"] == "5+5+1="  # the first step: an empty prefix


# ---------------------------------------------------------------- a real run


@pytest.mark.slow
def test_two_steps_of_step_dpo(tmp_path):
    cfg = rlx.compose(
        [
            "algo=step_dpo",
            "trainer.steps=2",
            "data.prompts_per_step=4",
            "data.train_size=8",
            "data.eval_size=20",
            "data.pref_eval_size=20",
            "data.dev_size=10",
            "hardware.num_threads=1",
            *FAST,
        ]
    )
    rlx.run(cfg, run_dir=tmp_path / "run")
    rows = read_metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == [0, 1, 2]
    # generation accuracy on sums' eval problems and held-out pair accuracy, at step 0 and at the end
    for key in ("eval/sums/accuracy", "eval/sums_steps/pref_accuracy"):
        assert key in rows[0] and key in rows[-1], key
    # first step: policy = reference, h = 0, -log σ(0) = log 2 and no margin; the update then moves the policy
    assert rows[1]["loss/total"] == pytest.approx(math.log(2), abs=1e-5)
    assert rows[1]["pref/margin"] == pytest.approx(0.0, abs=1e-4) and abs(rows[2]["pref/margin"]) > 1e-4
    for key in ("pref/accuracy", "logps/chosen", "logps/rejected", "optim/lr", "perf/step_s"):
        assert key in rows[1], key
