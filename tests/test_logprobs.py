"""The training forward: left padding does not change log-probs; micro-batching does not change
the gradient."""

import copy

import pytest
import torch

from rlx.algos.grpo import grpo_loss
from rlx.models.logprobs import token_logprobs


def _encode(tok, prompts, completions):
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    comp = [tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for c in completions]
    T = max(map(len, comp))
    cids = torch.full((len(comp), T), tok.pad_token_id)
    cmask = torch.zeros(len(comp), T, dtype=torch.long)
    for i, c in enumerate(comp):
        cids[i, :len(c)], cmask[i, :len(c)] = torch.tensor(c), 1
    return torch.cat([enc["input_ids"], cids], 1), torch.cat([enc["attention_mask"], cmask], 1), cmask.bool(), T


def test_left_padded_equals_unpadded(tiny):
    model, tok = tiny
    prompts, comps = ["3+4=", "12+85=", "99+99="], ["7", "97", "198"]
    ids, am, mask, T = _encode(tok, prompts, comps)
    with torch.no_grad():
        batched, _ = token_logprobs(model.eval(), ids, am, T)
        for i in range(len(prompts)):
            one_ids, one_am, one_mask, t1 = _encode(tok, [prompts[i]], [comps[i]])
            alone, _ = token_logprobs(model, one_ids, one_am, t1)
            n = int(one_mask.sum())
            assert mask[i].sum() == n
            assert torch.allclose(batched[i, :n], alone[0, :n], atol=1e-5), i


def test_gradient_independent_of_micro_batch(tiny):
    model, tok = tiny
    model = copy.deepcopy(model).train()
    torch.manual_seed(0)
    prompts = [f"{a}+{b}=" for a, b in [(1, 2), (10, 20), (33, 44), (5, 91), (60, 7), (0, 0), (8, 80), (99, 1)]]
    comps = ["3", "30", "77", "96", "67", "0", "88", "100"]
    ids, am, mask, T = _encode(tok, prompts, comps)
    adv = torch.randn(len(prompts), 1).expand(-1, T)
    with torch.no_grad():
        old, _ = token_logprobs(model, ids, am, T)
    old = old + 0.05 * torch.randn_like(old)  # off-policy so clipping is exercised

    def grads(micro, mode):
        model.zero_grad()
        norm = {"num_tokens": mask.sum(), "num_seqs": len(prompts), "max_len": T}
        for i in range(0, len(prompts), micro):
            s = slice(i, i + micro)
            logp, _ = token_logprobs(model, ids[s], am[s], T)
            loss, _ = grpo_loss(logp, old[s], adv[s], mask[s], loss_agg_mode=mode, **norm)
            loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    for mode in ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"):
        full = grads(8, mode)
        for micro in (1, 3):
            assert torch.allclose(grads(micro, mode), full, atol=1e-6), (mode, micro)


def test_digits_are_single_tokens_and_round_trip(tiny, tmp_path):
    from transformers import AutoTokenizer

    _, tok = tiny
    for d in "0123456789":
        assert len(tok(d, add_special_tokens=False)["input_ids"]) == 1
    assert len(tok("12345+678=", add_special_tokens=False)["input_ids"]) == 10
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    texts = [f"{a}+{b}={a + b}" for a in range(0, 100, 7) for b in range(0, 100, 13)] + ["hello, world", "-5-7=-12"]
    for t in texts:
        assert again(t, add_special_tokens=False)["input_ids"] == tok(t, add_special_tokens=False)["input_ids"], t
        assert again.decode(again(t, add_special_tokens=False)["input_ids"]) == t
    assert again.padding_side == "left"


@pytest.mark.parametrize("greedy", [True, False])
def test_generation_is_left_padded_and_masked(tiny, greedy):
    from omegaconf import OmegaConf

    from rlx.rollout.hf import HFEngine

    model, tok = tiny
    eng = HFEngine(model, tok, OmegaConf.create({"max_new_tokens": 4, "temperature": 1.0, "top_k": 0, "top_p": 1.0}))
    out = eng.generate(["1+1=", "10+10="], n=3, greedy=greedy)
    assert out.prompt_ids.shape[0] == 6 and out.completion_ids.shape == (6, 4)
    assert out.prompt_mask[0, 0] == 0 and out.prompt_mask[-1].all()  # the shorter prompt is left-padded
    eos_pos = (out.completion_ids == tok.eos_token_id)
    # nothing but padding after the first EOS, and the mask covers exactly up to it
    for i in range(6):
        n = int(out.response_mask[i].sum())
        assert (out.completion_ids[i, n:] == tok.pad_token_id).all()
        assert eos_pos[i, : n - 1].sum() == 0
    if greedy:
        assert out.texts[0] == out.texts[1] == out.texts[2]
