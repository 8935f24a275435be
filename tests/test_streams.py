"""Per-prompt random streams (rlx/rollout/streams.py): inverse-CDF sampling by hand and in distribution, and a
prompt's samples independent of the batch around it (what makes sharded rollouts equal one process)."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from rlx.rollout import streams
from rlx.rollout.base import Rollout, concat_rollouts
from rlx.rollout.hf import HFEngine


def test_inverse_cdf_by_hand():
    p = torch.tensor([[0.5, 0.0, 0.5]] * 4)
    u = torch.tensor([0.3, 0.5, 0.7, 0.0])
    assert streams.inverse_cdf(p, u).tolist() == [0, 2, 2, 0]   # the zero-probability token is never drawn
    # unnormalised weights, and u·total rounding up to the total: the last token with mass, not a masked one
    w = torch.tensor([[1.0, 3.0, 0.0]])
    assert streams.inverse_cdf(w, torch.tensor([0.2])).tolist() == [0]   # 0.8 < 1
    assert streams.inverse_cdf(w, torch.tensor([0.26])).tolist() == [1]  # 1.04 ≥ 1
    assert streams.inverse_cdf(w, torch.tensor([1.0])).tolist() == [1]
    with pytest.raises(RuntimeError, match="probability tensor contains"):   # an overflowed policy, as multinomial
        streams.inverse_cdf(torch.tensor([[0.5, float("nan")]]), torch.tensor([0.3]))


def test_inverse_cdf_draws_from_the_distribution():
    p = torch.tensor([0.2, 0.5, 0.3])
    u = torch.rand(40000, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(streams.inverse_cdf(p.expand(40000, 3), u), minlength=3).float() / 40000
    assert torch.allclose(freq, p, atol=0.01)   # binomial sd ≤ 0.0025


def test_keys_are_stable_and_distinct():
    keys = streams.prompt_keys(0, 3, 0, 4)
    assert keys == streams.prompt_keys(0, 3, 0, 4) and len(set(keys)) == 4
    assert not set(keys) & set(streams.prompt_keys(0, 3, 1, 4))   # another round
    assert not set(keys) & set(streams.prompt_keys(1, 3, 0, 4))   # another seed
    assert streams.call_key(keys[0], 0) == keys[0] and streams.call_key(keys[0], 1) != keys[0]
    u = streams.uniforms(keys[:2], 3, 5)
    assert u.shape == (6, 5) and torch.equal(u[3:], streams.uniforms(keys[1:2], 3, 5))   # rows of a prompt: its own


@pytest.fixture(scope="module")
def engine(tiny):
    model, tok = tiny
    return HFEngine(model, tok, OmegaConf.create({"max_new_tokens": 6, "temperature": 1.0, "top_k": 0,
                                                 "top_p": 1.0, "engine_logprobs": False}))


def test_a_prompts_samples_do_not_depend_on_its_batch(engine):
    prompts = ["1+2=", "37+48=", "5-9=", "12*3="]
    keys = streams.prompt_keys(0, 1, 0, 4)
    torch.manual_seed(0)
    whole = engine.generate(prompts, n=3, keys=keys)
    torch.manual_seed(123)   # the global generator plays no part
    halves = [engine.generate(prompts[:2], n=3, keys=keys[:2]), engine.generate(prompts[2:], n=3, keys=keys[2:])]
    assert whole.texts == halves[0].texts + halves[1].texts
    joined = concat_rollouts(halves, engine.tok.pad_token_id)   # the ranks' shares as one rollout
    assert torch.equal(joined.completion_ids[:, :whole.completion_ids.shape[1]], whole.completion_ids)
    assert torch.equal(joined.response_mask[:, :whole.response_mask.shape[1]], whole.response_mask)
    P = whole.prompt_ids.shape[1]
    assert joined.prompt_ids.shape[1] == P and torch.equal(joined.prompt_mask, whole.prompt_mask)
    assert len(set(whole.texts[:3])) > 1 or len(set(whole.texts[3:6])) > 1   # samples of a prompt differ
    other = engine.generate(prompts, n=3, keys=[streams.call_key(k, 1) for k in keys])
    assert other.texts != whole.texts   # a second call in a round draws other numbers


def test_concat_refuses_episode_rollouts():
    r = Rollout(torch.ones(1, 2, dtype=torch.long), torch.ones(1, 2, dtype=torch.long), torch.ones(1, 1, dtype=torch.long),
                torch.ones(1, 1, dtype=torch.bool), torch.zeros(1, dtype=torch.bool), ["x"])
    e = Rollout(**{**vars(r), "turn": torch.zeros(1, 1, dtype=torch.long)})
    with pytest.raises(ValueError, match="single-turn rollouts only"):
        concat_rollouts([r, e], 0)
    assert concat_rollouts([r, r], 0).texts == ["x", "x"]
