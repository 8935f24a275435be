"""Label-free RL: TTRL's majority-vote pseudo-labels (hand examples), the guarantee that the data's
labels never reach the training reward (through the user's path, with a control run that does see
them), and RLSC's self-confidence loss against the closed form of ∇Σp²."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import FAST, algo_batch, read_metrics

import rlx
from rlx.algos.rlsc import rlsc_loss
from rlx.rewards.vote import maj_at_k, majority, majority_labels, pass_at_k


def test_majority_vote_hand_examples():
    assert majority(["7", "5", "7", None]) == "7"
    assert majority(["5", "7"]) == "5"                 # a tie goes to the answer seen first
    assert majority([None, None]) is None              # no answer: no label
    # Two groups of 3: ["1", "2", "2"] -> "2"; [None, "4", None] -> "4".
    assert majority_labels(["1", "2", "2", None, "4", None], 3) == ["2"] * 3 + ["4"] * 3
    with pytest.raises(ValueError):
        majority_labels(["1", "2", "3"], 2)


def test_pass_and_maj_at_k_hand_examples():
    # Problem 1: answers 7, 5, 7 (7 correct) -> pass 1, maj 1; problem 2: 1, None, 1 all wrong -> 0, 0.
    answers, scores = ["7", "5", "7", "1", None, "1"], [1, 0, 1, 0, 0, 0]
    assert pass_at_k(scores, 3) == 0.5 and maj_at_k(answers, scores, 3) == 0.5
    # Problem where the right answer is in the minority: pass@3 counts it, maj@3 does not.
    assert pass_at_k([1, 0, 0], 3) == 1.0 and maj_at_k(["9", "8", "8"], [1, 0, 0], 3) == 0.0


def test_ttrl_rewards_agreement_with_the_majority(cfg):
    algo = rlx.build("algo", rlx.compose(["algo=ttrl", "algo.group_size=4"]).algo)
    reward = rlx.build("reward", cfg.reward)
    completions = ["12", "12", "13", "x", "5", "6", "x", "x"]           # G = 4: majorities "12" and "5"
    labels = algo.pseudo_labels(reward.answers(completions), 4)
    assert labels == ["12"] * 4 + ["5"] * 4
    # Scored with the task reward against the pseudo-labels: 1 where a sample agrees.
    assert reward.score(["p"] * 8, completions, answer=labels)["score"] == [1, 1, 0, 0, 1, 0, 0, 0]
    adv, _ = algo.advantages(algo_batch(torch.tensor([1.0, 1, 0, 0]), torch.ones(4, 2, dtype=torch.bool)))
    assert torch.allclose(adv[:, 0], torch.tensor([0.866, 0.866, -0.866, -0.866]), atol=1e-3)  # GRPO's


RECORDER = '''
import json

LOG = {log!r}


def score(prompts, completions, completion_ids, **fields):
    with open(LOG, "a") as fh:
        fh.write(json.dumps({{"fields": sorted(fields), "values": fields}}) + "\\n")
    answer = fields.get("answer", [None] * len(completions))
    return [1.0 if a is not None and c.strip() == str(a) else 0.0 for c, a in zip(completions, answer)]


score.extract_answer = lambda completion: completion.strip() or None
'''


def _label_run(tmp_path, algo):
    train = [{"prompt": f"{a}+{b}=", "answer": f"SECRET-TRAIN-{a}-{b}", "hint": f"SECRET-TRAIN-hint-{a}"}
             for a in range(10) for b in range(8)]
    held = [{"prompt": f"{a}+{a}=", "answer": f"SECRET-EVAL-{a}"} for a in range(6)]
    for name, rows in (("train", train), ("eval", held)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    log = tmp_path / f"calls_{algo}.jsonl"
    (tmp_path / "recorder.py").write_text(RECORDER.format(log=str(log)))
    run_dir = tmp_path / f"run_{algo}"
    cfg = rlx.compose([f"algo={algo}", "data=jsonl", f"data.path={tmp_path / 'train.jsonl'}",
                       f"data.eval_path={tmp_path / 'eval.jsonl'}", "data.prompts_per_step=4", "reward=python",
                       f"reward.fn={tmp_path / 'recorder.py'}:score", "trainer.steps=2", "algo.group_size=4",
                       "hardware.num_threads=1", *FAST])
    rlx.run(cfg, run_dir)   # the path python -m rlx takes after composing
    return [json.loads(line) for line in log.read_text().splitlines()], read_metrics(run_dir)


def test_ttrl_never_passes_training_labels_to_the_reward(tmp_path):
    calls, rows = _label_run(tmp_path, "ttrl")
    train_calls = [c for c in calls if "SECRET-EVAL" not in json.dumps(c)]
    eval_calls = [c for c in calls if "SECRET-EVAL" in json.dumps(c)]
    assert len(train_calls) == 2 and len(eval_calls) == 2            # 2 steps; evaluation at steps 0 and 2
    assert "SECRET-TRAIN" not in json.dumps(calls)                     # no label, no other data field
    for c in train_calls:
        assert c["fields"] == ["answer"]                               # only the pseudo-labels
    assert all("eval/jsonl/accuracy" in r for r in (rows[0], rows[-1]))


def test_grpo_control_run_does_see_the_labels(tmp_path):
    # The same recorder under a labelled algorithm: the labels are visible, so the test above can fail.
    calls, _ = _label_run(tmp_path, "grpo")
    assert "SECRET-TRAIN-" in json.dumps(calls) and "SECRET-TRAIN-hint" in json.dumps(calls)


def test_rlsc_loss_hand_example_and_the_gradient_of_sum_p_squared():
    # Two one-token responses with p_old 0.5 and 0.25, alpha = 0: L = -(0.5 log 0.5 + 0.25 log 0.25) / 2
    logp = torch.log(torch.tensor([[0.5], [0.25]]))
    mask = torch.ones(2, 1, dtype=torch.bool)
    loss, m = rlsc_loss(logp, logp, mask, alpha=0.0)
    expected = -(0.5 * torch.log(torch.tensor(0.5)) + 0.25 * torch.log(torch.tensor(0.25))) / 2
    assert torch.allclose(loss, expected) and torch.allclose(m["rlsc/confidence"], torch.tensor(0.375))
    # Closed form (algorithms.md §8.8): with samples whose frequencies equal p = [1/2, 1/4, 1/4]
    # (a, a, b, c), -∇L = Σ_y p(y)² ∇log p(y) = ½ ∇ Σ_y p(y)².
    z = torch.tensor([0.3, -0.4, -0.4], requires_grad=True)
    z.data = torch.log(torch.tensor([0.5, 0.25, 0.25]))
    p = torch.softmax(z, 0)
    (0.5 * p.square().sum()).backward()
    closed_form = z.grad.clone()
    z.grad = None
    logp = torch.log_softmax(z, 0)[torch.tensor([0, 0, 1, 2])].unsqueeze(-1)
    loss, _ = rlsc_loss(logp, logp.detach(), torch.ones(4, 1, dtype=torch.bool), alpha=0.0)
    loss.backward()
    assert torch.allclose(-z.grad, closed_form, atol=1e-6)
