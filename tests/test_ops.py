"""Masked ops, loss aggregation and KL estimators against hand-computed values and closed forms."""

import math

import pytest
import torch

from rlx.ops import aggregate, group_normalize, kl_penalty, logprobs_from_logits, response_mask_from_eos

# Two sequences: lengths 2 and 1 (last column padding in row 1).
LOSS = torch.tensor([[1.0, 3.0], [6.0, 100.0]])
MASK = torch.tensor([[True, True], [True, False]])


def test_token_mean():
    # (1 + 3 + 6) / 3 tokens = 10/3; the 100 is padding and never counts
    assert aggregate(LOSS, MASK, "token_mean").item() == pytest.approx(10 / 3)


def test_seq_mean_token_mean():
    # row means: (1+3)/2 = 2 and 6/1 = 6 -> (2 + 6)/2 = 4
    assert aggregate(LOSS, MASK, "seq_mean_token_mean").item() == pytest.approx(4.0)


def test_seq_mean_token_sum():
    # row sums: 4 and 6 -> (4 + 6)/2 = 5
    assert aggregate(LOSS, MASK, "seq_mean_token_sum").item() == pytest.approx(5.0)


def test_seq_mean_token_sum_norm():
    # Dr.GRPO: (4 + 6) / (2 seqs * L_max 2) = 2.5; with L_max = 10: 10/20 = 0.5
    assert aggregate(LOSS, MASK, "seq_mean_token_sum_norm").item() == pytest.approx(2.5)
    assert aggregate(LOSS, MASK, "seq_mean_token_sum_norm", max_len=10).item() == pytest.approx(0.5)


def test_aggregation_weights_per_token():
    # algorithms.md §8.3: responses of 200 and 10 tokens. GRPO (seq_mean_token_mean) weights each token
    # of the long one by (1/200)/2 and of the short one by (1/10)/2; token_mean weights all by 1/210.
    mask = torch.zeros(2, 200, dtype=torch.bool)
    mask[0, :200], mask[1, :10] = True, True
    x = torch.zeros(2, 200, requires_grad=True)
    aggregate(x, mask, "seq_mean_token_mean").backward()
    assert x.grad[0, 0].item() == pytest.approx(1 / 200 / 2)
    assert x.grad[1, 0].item() == pytest.approx(1 / 10 / 2)
    x.grad = None
    aggregate(x, mask, "token_mean").backward()
    assert x.grad[0, 0].item() == pytest.approx(1 / 210) and x.grad[1, 9].item() == pytest.approx(1 / 210)
    assert x.grad[1, 10].item() == 0.0


def test_micro_batch_totals_sum_to_full():
    # Given the mini-batch totals, the micro-batch losses add up to the full loss in every mode.
    torch.manual_seed(0)
    loss, mask = torch.randn(6, 5), torch.rand(6, 5) > 0.3
    for mode in ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_mean_token_sum_norm"):
        full = aggregate(loss, mask, mode)
        parts = sum(aggregate(loss[i:i + 2], mask[i:i + 2], mode, num_tokens=mask.sum(), num_seqs=6, max_len=5)
                    for i in range(0, 6, 2))
        assert parts.item() == pytest.approx(full.item(), abs=1e-6), mode


def test_unknown_mode_is_loud():
    with pytest.raises(ValueError, match="token_mean"):
        aggregate(LOSS, MASK, "token_meen")


def test_kl_estimators_closed_form():
    # π_θ(x) = 0.5, π_ref(x) = 0.25 for the sampled token: log r = log(0.25/0.5) = −log 2
    logp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    log2 = math.log(2)
    assert kl_penalty(logp, ref, "k1").item() == pytest.approx(log2)             # −log r
    assert kl_penalty(logp, ref, "k2").item() == pytest.approx(0.5 * log2 ** 2)  # ½ (log r)²
    assert kl_penalty(logp, ref, "k3").item() == pytest.approx(0.5 - 1 + log2)  # (r − 1) − log r, r = ½
    assert kl_penalty(logp, logp, "k3").item() == 0.0


def test_kl_estimators_are_unbiased_in_expectation():
    # For categoricals p, q: E_{x~p}[k1] = E_p[k3] = KL(p‖q) exactly (sum over the support).
    p = torch.tensor([0.7, 0.2, 0.1])
    q = torch.tensor([0.4, 0.4, 0.2])
    kl = (p * (p / q).log()).sum()
    for est in ("k1", "k3"):
        e = (p * kl_penalty(p.log(), q.log(), est)).sum()
        assert e.item() == pytest.approx(kl.item(), abs=1e-6), est


def test_group_normalize_fixture():
    # algorithms.md §8.1: rewards [1, 0, 2]: mean 1, unbiased std 1 -> [0, −1, +1]
    adv = group_normalize(torch.tensor([1.0, 0.0, 2.0]), 3, scale=True, eps=0.0)
    assert adv.tolist() == pytest.approx([0.0, -1.0, 1.0])
    # all-equal group -> all zeros (no signal), no NaN
    assert group_normalize(torch.ones(4), 4).tolist() == [0.0] * 4


def test_logprobs_and_entropy():
    logits = torch.tensor([[[0.0, math.log(3.0)]]])  # p = [0.25, 0.75]
    logp, ent = logprobs_from_logits(logits, torch.tensor([[1]]), with_entropy=True)
    assert logp.item() == pytest.approx(math.log(0.75))
    assert ent.item() == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))


def test_response_mask_includes_first_eos_only():
    eos = 1
    comp = torch.tensor([[5, 6, 1, 0], [1, 0, 0, 0], [5, 5, 5, 5]])
    assert response_mask_from_eos(comp, eos).tolist() == [
        [True, True, True, False], [True, False, False, False], [True, True, True, True]]
