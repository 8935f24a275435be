"""The process reward model (algo=prm) and its token-level reward (reward=prm): the step-labelled data of
data=sums_prm (labels up to the first wrong step, PRM800K's convention) and data=prm_steps' file rows (a row
without step labels names its file and line); the BCE loss by hand; where each step's reward lands (token
positions by hand); PPO's and REINFORCE++'s token rewards with a token-level term, by hand, and unchanged
without one; the refusal of a token-level term by algorithms that cannot use it; and a real 2-step algo=prm
run whose saved PRM then rewards 2 steps of PPO, through rlx.run."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch
from conftest import FAST, algo_batch, read_metrics

import rlx
import rlx.algos.prm  # noqa: F401  (registration, until rlx/algos/__init__.py imports it)
import rlx.data.prm_steps  # noqa: F401
import rlx.data.sums_prm  # noqa: F401
import rlx.rewards.prm  # noqa: F401
import rlx.trainers.prm  # noqa: F401
from rlx.algos.kl_control import kl_penalized_token_rewards, returns_to_go
from rlx.algos.ppo import PPO, gae
from rlx.algos.prm import prm_loss
from rlx.algos.reinforce_pp import batch_normalize
from rlx.batch import token_reward_matrix
from rlx.config import ConfigError
from rlx.data.rows import BadRowError
from rlx.data.sums import solution
from rlx.models.prm_head import encode, load_prm, save_prm, step_ends, step_logits
from rlx.models.value_head import ValueModel
from rlx.rewards.prm import place

T_, F_ = True, False


def close(x, expected, atol=1e-6):
    torch.testing.assert_close(x.float(), torch.tensor(expected, dtype=torch.float32), atol=atol, rtol=0)


@pytest.fixture(scope="module")
def sums_tiny():
    """(model, tokenizer) of the embedded model for data=sums (its character tokenizer), random init."""
    cfg = rlx.compose(["algo=prm", *FAST])
    return rlx.build("model", cfg.model, log=lambda *_: None, data=cfg.data)


# ---------------------------------------------------------------- the generated step labels


def test_sums_prm_label_invariants():
    data = rlx.build("data", rlx.compose(["algo=prm", "data.eval_size=100", "data.step_eval_size=60",
                                          "data.dev_size=50", "data.train_size=400"]).data)
    train, held = data.train_batch(0, 400), data.step_eval_set()
    kinds, ks = set(), set()
    for rec in train + held:
        terms = [int(t) for t in rec["prompt"].rstrip("=").split("+")]
        steps, total = solution(terms)   # recomputed, not read from the record
        k, labels, written = rec["first_wrong"], rec["labels"], rec["steps"]
        # one label per written step, each step ended by ';' and the last by '>' (the PRM's delimiters)
        assert len(labels) == len(written) == len(steps)
        assert rec["completion"] == ";".join(written) + ">" + rec["completion"].rsplit(">", 1)[1]
        if k == 0:   # a correct solution: every step labelled correct, the right answer
            assert written == steps and labels == [1] * len(steps) and rec["completion"].endswith(f">{total}")
            continue
        # steps before k correct (label 1), step k wrong (label 0), the rest unlabelled (PRM800K)
        assert labels == [1] * (k - 1) + [0] + [None] * (len(steps) - k)
        assert written[: k - 1] == steps[: k - 1] and written[k - 1] != steps[k - 1]
        lhs, got = written[k - 1].split("=")
        left, right = (int(v) for v in lhs.split("+"))
        assert left == sum(terms[:k])   # the running total so far is right; the slip is in this step
        if rec["error"] == "total":
            assert right == terms[k] and abs(int(got) - (left + right)) in (1, 2)
        else:
            assert abs(right - terms[k]) == 1 and int(got) == left + right
        # after the slip: the right numbers added to the wrong running total, so the answer is wrong
        run = int(got)
        for step, t in zip(written[k:], terms[k + 1:]):
            assert step == f"{run}+{t}={run + t}"
            run += t
        assert rec["completion"].endswith(f">{run}") and run != total
        kinds.add(rec["error"])
        ks.add(k)
    assert kinds == {"total", "operand"} and ks == {1, 2, 3, 4, 5}
    assert 0.4 < sum(r["first_wrong"] > 0 for r in train) / len(train) < 0.6   # wrong_share 0.5
    # held-out solutions come from the eval problems (the first step_eval_size, in order); training never does
    eval_prompts = [r["prompt"] for r in data.eval_set()]
    assert [r["prompt"] for r in held] == eval_prompts[:60]
    heldout = set(eval_prompts) | {r["prompt"] for r in data.dev_set()}
    assert not heldout & {r["prompt"] for r in data.train_batch(0, 4000)}   # 10 epochs of the pool


# ---------------------------------------------------------------- step labels from a file


GOOD = {"prompt": "7+3+9=", "steps": ["7+3=10", "10+9=20"], "labels": [True, False]}


def load(tmp_path, rows, *overrides):
    path = tmp_path / "prm.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path, rlx.build("data", rlx.compose(["algo=prm", "data=prm_steps", f"data.path={path}", *overrides]).data)


@pytest.mark.parametrize("bad, needle", [
    ({"prompt": "7+3=", "chosen": "10", "rejected": "11"}, "no step labels: missing field 'labels'"),
    (dict(GOOD, labels=[True]), "1 labels for 2 steps"),
    (dict(GOOD, labels=[True, 2]), "'labels[1]' must be true, false (or 1, 0) or null"),
    (dict(GOOD, labels=[None, None]), "no labelled step"),
    (dict(GOOD, steps=["7+3=10\n", "10+9=19"]), "step 0 contains data.step_end"),
    ("{not json", "not valid JSON"),
])
def test_bad_rows_name_file_and_line(tmp_path, bad, needle):
    with pytest.raises(BadRowError) as e:
        load(tmp_path, [GOOD, GOOD, bad, GOOD])
    path = tmp_path / "prm.jsonl"
    assert f"{path}:3: " in str(e.value) and needle in str(e.value)


def test_file_rows_are_step_labels(tmp_path):
    _, data = load(tmp_path, [GOOD, {"prompt": "1+1=", "completion": "2", "label": True}, GOOD],
                   "data.bad_rows=drop")
    assert len(data.train) == 2 and dict(data.dropped) == {"no step label": 1}
    rec = data.train_batch(0, 1)[0]
    # each step followed by data.step_end (a newline), the PRM's one delimiter
    assert rec["completion"] == "7+3=10\n10+9=20\n" and rec["labels"] == [1, 0] and data.delimiters == ("\n",)


# ---------------------------------------------------------------- the loss


def test_prm_loss_by_hand():
    # BCE per labelled step: −[y log σ(z) + (1 − y) log(1 − σ(z))] = log(1 + e^−z) for y = 1, log(1 + e^z) for y = 0
    #   row 0: z = 2, y = 1: log(1 + e^−2) = 0.126928;   z = −1, y = 0: log(1 + e^−1) = 0.313262;
    #          z = 0.5 unlabelled (after the first wrong step): not counted
    #   row 1: z = 0, y = 0: log 2 = 0.693147;           z = 3, y = 0: log(1 + e^3) = 3.048587
    #   mean over the M = 4 labelled steps: 4.181924 / 4 = 1.045481
    # accuracy (z > 0) == y: ✓ ✓ ✓ ✗ = 3/4; over the 3 wrong steps: ✓ ✓ ✗ = 2/3
    z = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, 0.0]], requires_grad=True)
    y = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[T_, T_, F_], [T_, T_, F_]])
    loss, m = prm_loss(z, y, mask)
    assert loss.item() == pytest.approx(1.045481, abs=1e-6)
    assert m["prm/step_accuracy"] == pytest.approx(3 / 4) and m["prm/wrong_step_accuracy"] == pytest.approx(2 / 3)
    assert m["prm/steps"] == 4 and m["prm/wrong_steps"] == 3
    # gradient (σ(z) − y) / M on labelled steps, 0 on the others: z = 2 -> (0.880797 − 1)/4 = −0.029801
    loss.backward()
    close(z.grad, [[-0.029801, 0.268941 / 4, 0.0], [0.125, 0.952574 / 4, 0.0]])
    # a zero head (z ≡ 0) costs log 2 per step whatever the labels
    assert prm_loss(torch.zeros(2, 3), y, mask)[0].item() == pytest.approx(math.log(2))


# ---------------------------------------------------------------- where the step rewards land


def test_step_ends_by_hand(sums_tiny):
    _, tok = sums_tiny
    ids = tok("7+3=10;10+9=20>20", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    # one token per character:  7 + 3 = 1 0 ; 1 0 + 9  =  2  0  >  2  0  EOS
    #                           0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17
    # step 1 ends at the ';' (6), step 2 at the '>' (14); EOS decodes to '' and is no '>'
    assert len(ids) == 18 and step_ends(tok, ids, (";", ">")) == [6, 14]
    assert place([-0.5, -0.25], [6, 14], 18) == [0.0] * 6 + [-0.5] + [0.0] * 7 + [-0.25] + [0.0] * 3


def test_prm_reward_places_each_step_reward_at_its_end(tmp_path, sums_tiny):
    model, tok = sums_tiny
    prm = ValueModel(model)   # zero head weight, bias −1: z_k = −1 at every step end, p_k = σ(−1) = 0.268941
    torch.nn.init.constant_(prm.v_head.bias, -1.0)
    save_prm(prm, tmp_path / "model", tok, (";", ">"))
    ids = tok("7+3=10;10+9=20>20", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]

    def score(*overrides, completion_ids=(ids,)):
        cfg = rlx.compose(["algo=ppo", "reward=prm", f"reward.path={tmp_path}", *overrides]).reward
        return rlx.build("reward", cfg).score(["7+3+9="], ["7+3=10;10+9=20>20"], answer=["19"],
                                              completion_ids=list(completion_ids))

    # clip (the preset): min(σ(−1) − 0.5, 0) = −0.231059 at tokens 6 and 14, times the preset's weight 0.1;
    # 0 at the other 16 tokens
    s = score()
    r = -0.231059
    assert s["token_rewards"][0] == pytest.approx([0.0] * 6 + [0.1 * r] + [0.0] * 7 + [0.1 * r] + [0.0] * 3, abs=1e-6)
    # the term's logged value is its sum; the sequence total is the outcome term alone (answer 20 ≠ 19: 0)
    assert s["terms"]["prm"][0] == pytest.approx(2 * r, abs=1e-6) and s["total"] == [0.0]
    # log_prob: log σ(−1) = −1.313262 at each step end (sum = log of the product score σ(−1)²); weight 2 doubles it
    s = score("reward.terms.prm.step_reward=log_prob", "reward.terms.prm.weight=2.0")
    assert [s["token_rewards"][0][j] for j in (6, 14)] == pytest.approx([-2.626523] * 2, abs=1e-6)
    assert s["terms"]["prm"][0] == pytest.approx(2 * -1.313262, abs=1e-6)
    # ids that do not decode to the completion (another tokenizer): the sample fails, nothing is placed
    s = score(completion_ids=(ids[:-3],))
    assert s["failed"] == [True] and s["token_rewards"] == [None] and math.isnan(s["total"][0])
    # the batch's [N, T] matrix: each list from column 0, a failed sample all zeros
    close(token_reward_matrix([[1.0, 2.0], None, [3.0, 4.0, 5.0]], 3), [[1, 2, 0], [0, 0, 0], [3, 4, 5]])
    assert token_reward_matrix(None, 3) is None


# ---------------------------------------------------------------- the algorithms' token rewards


def ppo_algo(**over):
    return PPO.from_config(rlx.compose(["algo=ppo", *[f"algo.{k}={v}" for k, v in over.items()]]).algo)


def test_ppo_token_rewards_with_a_dense_term_by_hand():
    # β = 0.1, k1 KL = old − ref = [0.5, 0, −1] on 3 valid tokens (+1 padding); score 1 at the last valid token;
    # the token-level term gives −0.25 at token 1 and −0.5 at token 2 (and 9 at the padding, which must not leak):
    #   r = [−0.05 + 0, −0 − 0.25, 0.1 + 1 − 0.5, 0] = [−0.05, −0.25, 0.6, 0]
    # GAE with V = [0.5, 0.2, 0.4], γ = 1, λ = 0.5, V after the last token 0:
    #   t=2: δ = 0.6 + 0 − 0.4 = 0.2                  A = 0.2
    #   t=1: δ = −0.25 + 0.4 − 0.2 = −0.05            A = −0.05 + 0.5·0.2 = 0.05
    #   t=0: δ = −0.05 + 0.2 − 0.5 = −0.35            A = −0.35 + 0.5·0.05 = −0.325
    algo = ppo_algo(beta=0.1, gamma=1.0, lam=0.5, whiten_advantages=False)
    mask = torch.tensor([[T_, T_, T_, F_]])
    batch = algo_batch(torch.tensor([1.0]), mask, old_logp=torch.tensor([[-1.0, -1.0, -2.0, -5.0]]),
                       ref_logp=torch.tensor([[-1.5, -1.0, -1.0, -7.0]]), values=torch.tensor([[0.5, 0.2, 0.4, 9.0]]),
                       token_rewards=torch.tensor([[0.0, -0.25, -0.5, 9.0]]))
    r, _ = algo.token_rewards(batch)
    close(r, [[-0.05, -0.25, 0.6, 0.0]])
    adv, _ = algo.advantages(batch)
    close(adv, [[-0.325, 0.05, 0.2, 0.0]])
    close(gae(r, batch.values, mask, gamma=1.0, lam=0.5)[0], [[-0.325, 0.05, 0.2, 0.0]])
    # without a token-level term (None) the numbers are exactly those of before: the term's zeros change nothing
    batch.token_rewards = None
    r0, _ = algo.token_rewards(batch)
    batch.token_rewards = torch.zeros(1, 4)
    assert torch.equal(r0, algo.token_rewards(batch)[0])
    close(r0, [[-0.05, 0.0, 1.1, 0.0]])


def test_reinforce_pp_adds_token_rewards_before_its_returns():
    # no KL (kl_coef 0); scores [1, 0]; token-level rewards row 0 [0, −0.5, 0], row 1 [−0.25, 0, (pad) 7]
    #   r   = [[0, −0.5, 1], [−0.25, 0]]          returns-to-go (γ = 1) = [[0.5, 0.5, 1], [−0.25, 0]]
    # then REINFORCE++'s batch normalisation over the 5 valid tokens
    algo = rlx.build("algo", rlx.compose(["algo=reinforce_pp", "algo.kl_coef=0.0"]).algo)
    mask = torch.tensor([[T_, T_, T_], [T_, T_, F_]])
    dense = torch.tensor([[0.0, -0.5, 0.0], [-0.25, 0.0, 7.0]])
    batch = algo_batch(torch.tensor([1.0, 0.0]), mask, token_rewards=dense)
    g = returns_to_go(kl_penalized_token_rewards(batch.rewards, torch.zeros(2, 3), mask, 0.0, dense), mask)
    close(g, [[0.5, 0.5, 1.0], [-0.25, 0.0, 0.0]])
    adv, _ = algo.advantages(batch)
    close(adv, batch_normalize(g, mask).tolist())
    assert algo.takes_token_rewards and ppo_algo().takes_token_rewards


# ---------------------------------------------------------------- refusals


def test_algorithms_that_cannot_use_token_rewards_refuse_the_term():
    with pytest.raises(ConfigError) as e:
        rlx.compose(["algo=grpo", "reward=prm"])
    assert str(e.value).startswith("reward.terms.prm: fn=prm gives per-token rewards") and "algo=grpo" in str(e.value)
    for algo in ("rloo", "reinforce_pp_baseline", "dapo"):
        with pytest.raises(ConfigError, match="reward.terms.prm"):
            rlx.compose([f"algo={algo}", "reward=prm"])
    with pytest.raises(ConfigError, match="env=guess takes several turns"):
        rlx.compose(["algo=ppo", "reward=prm", "env=guess"])
    for ok in ("ppo", "reinforce_pp", "vapo"):   # the PPO family and REINFORCE++ take them
        assert rlx.compose([f"algo={ok}", "reward=prm"]).reward.terms.prm.fn == "prm"
    with pytest.raises(ConfigError, match="algo=prm trains on step-labelled solutions"):
        rlx.compose(["algo=prm", "data=arithmetic_pref"])


def test_cli_refusal_exits_2_before_anything_loads(monkeypatch, capsys):
    from rlx.__main__ import main

    monkeypatch.setattr(sys, "argv", ["rlx", "algo=grpo", "reward=prm", "reward.path=/nonexistent"])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("rlx: config error: reward.terms.prm:")
    assert "building the embedded model" not in err


# ---------------------------------------------------------------- a real run


@pytest.mark.slow
def test_prm_trains_saves_and_rewards_ppo(tmp_path):
    small = ["trainer.steps=2", "data.prompts_per_step=4", "data.eval_size=32", "data.dev_size=16",
             "hardware.num_threads=1", *FAST]
    cfg = rlx.compose(["algo=prm", "data.train_size=8", "data.step_eval_size=16", *small])
    summary = rlx.run(cfg, tmp_path / "prm")
    rows = read_metrics(tmp_path / "prm")
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert "eval/sums_prm/step_accuracy" in rows[0] and "eval/sums_prm/wrong_step_accuracy" in rows[-1]
    assert {"prm/step_accuracy", "prm/wrong_step_accuracy", "loss/total"} <= rows[1].keys()
    info = json.loads((tmp_path / "prm" / "model" / "rlx_value_model.json").read_text())
    assert summary["model_dir"] == str(tmp_path / "prm" / "model") and info["head"] == "prm"
    assert info["step_delimiters"] == [";", ">"] and info["step_accuracy"] == rows[-1]["eval/sums_prm/step_accuracy"]

    # the reward reads the saved PRM as the trainer encodes a solution: log σ(z_k) at each step's end token
    rec = rlx.build("data", cfg.data).step_eval_set()[0]
    model, tok, delimiters = load_prm(tmp_path / "prm")
    ids = tok(rec["completion"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ends = step_ends(tok, ids, delimiters)
    assert len(ends) == len(rec["steps"])
    with torch.no_grad():
        z, _ = step_logits(model, *encode(tok, [rec["prompt"]], [ids]), [ends])
    rcfg = rlx.compose(["algo=ppo", "reward=prm", f"reward.path={tmp_path / 'prm'}",
                        "reward.terms.prm.step_reward=log_prob", "reward.terms.prm.weight=1.0"]).reward
    per_token = rlx.build("reward", rcfg).score([rec["prompt"]], [rec["completion"]], answer=[rec["answer"]],
                                                completion_ids=[ids])["token_rewards"][0]
    assert [per_token[j] for j in ends] == pytest.approx(torch.nn.functional.logsigmoid(z[0]).tolist(), abs=1e-5)
    assert all(v == 0.0 for j, v in enumerate(per_token) if j not in ends)

    # PPO with the PRM as a token-level term beside the exact-answer reward: 2 steps
    ppo = rlx.compose(["algo=ppo", "data=sums", "reward=prm", f"reward.path={tmp_path / 'prm'}",
                       "rollout.max_new_tokens=16", *small])
    rlx.run(ppo, tmp_path / "ppo")
    rows = read_metrics(tmp_path / "ppo")
    assert [r["step"] for r in rows] == [0, 1, 2]
    for row in rows[1:]:
        assert {"reward/prm/mean", "reward/correct/mean", "value/explained_var", "ppo/kl_coef"} <= row.keys()
        assert row["reward/failures"] == 0 and -1.0 <= row["reward/prm/mean"] <= 0.0   # clip: never positive
