"""SPIN (rlx/algos/spin.py): the demonstration rows, the pair layout and the loss by hand, the config checks, and a
3-step run through rlx.run where the reference is refreshed every step (so the loss is log 2 at every step)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import loss_inputs, read_metrics
from omegaconf import OmegaConf

import rlx
from rlx.algos.spin import SPIN, demo_rollout
from rlx.batch import Batch
from rlx.config import ConfigError
from rlx.rollout.base import Sampler
from rlx.rollout.hf import HFEngine

LOG2 = math.log(2.0)


def build(*overrides, **keys):
    return rlx.build("algo", OmegaConf.merge(rlx.compose(["algo=spin", *overrides]).algo, keys))


def test_demonstrations_are_encoded_as_sft_encodes_them(tiny):
    _, tok = tiny
    records = [{"prompt": "1+2=", "completion": "3"}, {"prompt": "4+5=", "completion": "1+1=2>9"}]
    enc = tok(["1+2=", "4+5="], return_tensors="pt", padding=True, add_special_tokens=False)
    out = demo_rollout(tok, records, enc["input_ids"], enc["attention_mask"])
    first = tok("3", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    second = tok("1+1=2>9", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert out.completion_ids[0, :len(first)].tolist() == first
    assert out.completion_ids[1].tolist() == second and out.completion_ids.shape[1] == len(second)
    assert (out.completion_ids[0, len(first):] == tok.pad_token_id).all()
    assert out.response_mask.sum(-1).tolist() == [len(first), len(second)]
    assert out.texts == ["3", "1+1=2>9"] and not out.truncated.any()
    with pytest.raises(ValueError, match=r"record 1 \(prompt '4\+5='\) has no demonstration"):
        demo_rollout(tok, [records[0], {"prompt": "4+5=", "answer": "9"}], enc["input_ids"], enc["attention_mask"])


def test_pairs_are_demonstration_then_sample(tiny):
    model, tok = tiny
    engine = HFEngine(model, tok, OmegaConf.create({"max_new_tokens": 4, "temperature": 1.0, "top_k": 0,
                                                    "top_p": 1.0, "engine_logprobs": False}))
    sampler = Sampler(generate=lambda records, n: engine.generate([r["prompt"] for r in records], n=n),
                      model=model, autocast=False, tokenizer=tok)
    records = [{"prompt": "1+2=", "completion": "3"}, {"prompt": "7+8=", "completion": "15"}]
    out = build().sample_completions(sampler, records, 2)
    assert len(out.texts) == 4 and out.texts[0] == "3" and out.texts[2] == "15"   # rows 0, 2: the demonstrations
    assert torch.equal(out.prompt_ids[0], out.prompt_ids[1]) and torch.equal(out.prompt_ids[2], out.prompt_ids[3])
    same = (out.texts[1] == "3") + (out.texts[3] == "15")
    assert out.extra_metrics == {"spin/identical_frac": same / 2}


def test_loss_by_hand():
    # β = 0.5; demonstration: log π_θ = −3 (sum), log π_ref = −4; sample: −5 against −4.5
    # h = (−3 + 4) − (−5 + 4.5) = 1.5;  L = −log σ(0.75) = log(1 + e^−0.75) = 0.386871
    a = build()
    mask = torch.tensor([[True, True], [True, False]])
    logp = torch.tensor([[-1.0, -2.0], [-5.0, 0.0]])
    ref = torch.tensor([[-1.5, -2.5], [-4.5, 0.0]])
    batch = Batch(torch.zeros(2, 4, dtype=torch.long), torch.ones(2, 4, dtype=torch.long), mask,
                  torch.tensor([1.0, 0.0]))
    adv, extras = a.advantages(batch)
    assert adv.tolist() == [[1.0, 1.0], [-1.0, 0.0]]   # +1 on the demonstration, −1 on the sample (response tokens)
    assert extras == {"spin/demo_reward": 1.0, "spin/sample_reward": 0.0}
    loss, m = a.loss(logp, loss_inputs(logp.detach(), adv, mask, ref_logp=ref))
    assert loss.item() == pytest.approx(math.log1p(math.exp(-0.75)), abs=1e-6)
    assert float(m["pref/accuracy"]) == 1.0   # the demonstration's implicit reward is above the sample's
    # the label follows the position, not the reward: a sample that scores above its demonstration is still y_l
    batch.rewards = torch.tensor([0.0, 1.0])
    assert torch.equal(a.advantages(batch)[0], adv)


def test_every_prompt_is_kept():
    a = build()
    rewards = torch.tensor([[1.0, 1.0], [0.0, 0.0], [1.0, 0.0]])   # ties do not drop a pair, unlike online DPO
    assert a.keep(rewards).all() and a.keep_samples(rewards)[0].all()


def test_config_checks_name_the_key():
    a = build()
    assert isinstance(a, SPIN) and a.requires == {"ref_logp"} and (a.group_size, a.ref_update_every) == (2, 1)
    with pytest.raises(ConfigError, match="algo.group_size=4: spin pairs .* must be 2"):
        build("algo.group_size=4")
    with pytest.raises(ConfigError, match="env=guess: algo=spin"):
        rlx.compose(["algo=spin", "env=guess"])
    with pytest.raises(ConfigError, match="rollout.is_correction=tis: algo=spin"):
        rlx.compose(["algo=spin", "rollout.is_correction=tis"])
    with pytest.raises(ConfigError, match="trainer.mini_batch_size=32: spin trains on whole pairs"):
        rlx.compose(["algo=spin", "trainer.mini_batch_size=32"])


def test_spin_runs_three_steps_at_log_2(tmp_path, warm_tiny):
    rlx.run(rlx.compose(["algo=spin", f"model.path={warm_tiny}", "trainer.steps=3", "trainer.progress=false",
                         "trainer.eval_every=0", "hardware.num_threads=1", "data.prompts_per_step=4",
                         "data.eval_size=16"]), run_dir=tmp_path / "spin")
    rows = read_metrics(tmp_path / "spin")
    assert [r["step"] for r in rows] == [0, 1, 2, 3] and "eval/arithmetic/accuracy" in rows[-1]
    for r in rows[1:]:
        # π_ref ← π_θ before every step and one on-policy update: the loss is taken at π_θ = π_ref
        assert r["loss/total"] == pytest.approx(LOG2, abs=1e-5) and r["policy/kl_ref"] == pytest.approx(0, abs=1e-6)
        assert r["groups/kept_frac"] == 1.0 and r["spin/demo_reward"] == pytest.approx(1.1)   # correct, well formed
        assert 0.0 <= r["spin/sample_reward"] <= 1.1 and 0.0 <= r["spin/identical_frac"] <= 1.0
    assert any(r["optim/grad_norm"] > 0 for r in rows[1:])   # a pair that differs gives a gradient
