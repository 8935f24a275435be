"""EEPO (rlx/algos/eepo.py): the forgetting loss and its gradient by hand, the merge of the two halves, the entropy
gate and its window, the schedule on the real tiny model (the second half comes from the forgetting model, the
parameters and gradients are restored bit for bit, the same seed gives the same rollout), a 2-step run through
the loop, an exact resume, and the preset."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import FAST, read_metrics
from omegaconf import OmegaConf

import rlx
from rlx.algos.eepo import EEPO, EntropyWindow, entropy_gate, forget_loss
from rlx.config import ConfigError
from rlx.models.logprobs import token_logprobs
from rlx.ops import masked_mean
from rlx.rollout.base import Rollout, Sampler, merge_rollouts

T_, F_ = True, False
PAD = 99


def eepo(*overrides, **keys):
    """The preset's algorithm (command-line ``overrides``), with ``keys`` set on the built node."""
    return rlx.build("algo", OmegaConf.merge(rlx.compose(["algo=eepo", *overrides]).algo, keys))


# ---------------------------------------------------------------- the forgetting loss

def test_forget_loss_by_hand():
    # row 0: p = 0.9, 0.5 → −log 0.1 = 2.302585, −log 0.5 = 0.693147, row mean 1.497866
    # row 1: p = 0.99 and a masked token → −log 0.01 = 4.605170
    # L = (1.497866 + 4.605170)/2 = 3.051518
    p = torch.tensor([[0.9, 0.5], [0.99, 0.3]])
    mask = torch.tensor([[T_, T_], [T_, F_]])
    logp = p.log().requires_grad_(True)
    loss = forget_loss(logp, mask)
    assert loss.item() == pytest.approx((-math.log(0.1) - math.log(0.5)) / 4 - math.log(0.01) / 2, rel=1e-5)
    assert loss.item() == pytest.approx(3.051518, abs=2e-6)
    loss.backward()
    # d/dlog p of −log(1 − p) = p/(1 − p) (9, 1, 99), times 1/|o_k| and 1/|rows|: 9/4, 1/4, 99/2; masked: 0.
    # All positive: a descent step lowers every sampled token's log-prob, the surest (0.99) by far the most
    torch.testing.assert_close(logp.grad, torch.tensor([[2.25, 0.25], [49.5, 0.0]]), rtol=1e-4, atol=1e-5)


def test_forget_loss_on_logits_lowers_the_sampled_token():
    # logits [2, 0, 0], sampled token 0: p = e²/(e² + 2) = 7.389056/9.389056 = 0.786986
    # L = −log(1 − p) = −log 0.213014 = 1.546397; ∂L/∂z_0 = p = 0.786986, ∂L/∂z_j = −p·p_j/(1 − p) = −p/2
    logits = torch.tensor([[[2.0, 0.0, 0.0]]], requires_grad=True)
    logp = torch.log_softmax(logits, -1)[..., 0]
    loss = forget_loss(logp, torch.ones(1, 1, dtype=torch.bool))
    assert loss.item() == pytest.approx(1.546397, abs=1e-5)
    loss.backward()
    p = math.exp(2) / (math.exp(2) + 2)
    torch.testing.assert_close(logits.grad[0, 0], torch.tensor([p, -p / 2, -p / 2]), rtol=1e-5, atol=1e-6)
    # one SGD step of 0.5: z = [2 − 0.393493, 0.196747, 0.196747] → p = e^1.606507/(e^1.606507 + 2e^0.196747)
    stepped = torch.softmax(logits.detach() - 0.5 * logits.grad, -1)[0, 0, 0].item()
    assert stepped == pytest.approx(4.985366 / (4.985366 + 2 * 1.217436), rel=1e-5) and stepped < p


def test_forget_loss_clips_a_certain_token_and_skips_empty_rows():
    # p = 1 (log p = 0): −log(1 − min(1, 1 − 1e-6)) = −log 1e-6 = 13.815511, no gradient through the clip;
    # a row with no valid token is not in the mean
    logp = torch.tensor([[0.0], [math.log(0.5)]], requires_grad=True)
    loss = forget_loss(logp, torch.tensor([[T_], [F_]]))
    assert loss.item() == pytest.approx(-math.log(1e-6), rel=1e-4)
    loss.backward()
    assert logp.grad.abs().max().item() == 0.0
    assert forget_loss(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.bool)).item() == 0.0


# ---------------------------------------------------------------- merging the halves

def _rollout(prompts, comps, lens, logp=False, texts=None, truncated=None):
    """Rows of a single-turn Rollout: prompt ids [n, P], completions right-padded with PAD past ``lens``, truncated
    where a row fills the width (or as given)."""
    comp = torch.tensor(comps)
    mask = torch.arange(comp.shape[1]).expand_as(comp) < torch.tensor(lens).unsqueeze(-1)
    comp = comp.masked_fill(~mask, PAD)
    n = comp.shape[0]
    return Rollout(torch.tensor(prompts), torch.ones(n, len(prompts[0]), dtype=torch.long), comp, mask,
                   torch.tensor(truncated or [length == comp.shape[1] for length in lens]),
                   texts or [str(r) for r in comps],
                   gen_tokens=int(mask.sum()),
                   engine_logp=(-torch.arange(1, comp.numel() + 1, dtype=torch.float32).view_as(comp) * mask)
                   if logp else None)


def test_merge_keeps_each_records_completions_contiguous_and_pads():
    # 2 records, prompts [1, 2] and [3, 4]; first: 2 rows each, width 3; second: 2 rows each, width 1
    first = _rollout([[1, 2], [1, 2], [3, 4], [3, 4]], [[5, 6, 7], [5, 6, 0], [7, 0, 0], [8, 9, 10]], [3, 2, 1, 3],
                     logp=True, texts=["a0", "a1", "b0", "b1"])
    second = _rollout([[1, 2], [1, 2], [3, 4], [3, 4]], [[11], [12], [13], [14]], [1, 1, 1, 1],
                      logp=True, texts=["a2", "a3", "b2", "b3"], truncated=[F_, T_, F_, F_])
    out = merge_rollouts(first, second, 2, PAD)
    assert out.texts == ["a0", "a1", "a2", "a3", "b0", "b1", "b2", "b3"]   # record 0's four, then record 1's
    assert out.prompt_ids.tolist() == [[1, 2]] * 4 + [[3, 4]] * 4
    assert out.completion_ids.tolist() == [[5, 6, 7], [5, 6, PAD], [11, PAD, PAD], [12, PAD, PAD],
                                           [7, PAD, PAD], [8, 9, 10], [13, PAD, PAD], [14, PAD, PAD]]
    assert out.response_mask.sum(-1).tolist() == [3, 2, 1, 1, 1, 3, 1, 1]
    assert out.truncated.tolist() == [T_, F_, F_, T_, F_, T_, F_, F_]
    # engine log-probs: first's -1..-12 (0 past a response), second's -1..-4, then 0-padded to width 3
    assert out.engine_logp.tolist() == [[-1, -2, -3], [-4, -5, 0], [-1, 0, 0], [-2, 0, 0],
                                        [-7, 0, 0], [-10, -11, -12], [-3, 0, 0], [-4, 0, 0]]
    assert out.gen_tokens == 9 + 4 and out.extra_metrics is None


def test_merge_refuses_what_it_cannot_join():
    a = _rollout([[1, 2], [3, 4]], [[5], [6]], [1, 1])
    with pytest.raises(ValueError, match="prompt columns differ"):
        merge_rollouts(a, _rollout([[1, 2], [3, 5]], [[5], [6]], [1, 1]), 2, PAD)
    with pytest.raises(ValueError, match="engine_logp recorded in one rollout only"):
        merge_rollouts(a, _rollout([[1, 2], [3, 4]], [[5], [6]], [1, 1], logp=True), 2, PAD)
    episode = _rollout([[1, 2], [3, 4]], [[5], [6]], [1, 1])
    episode.turn = torch.zeros(2, 1, dtype=torch.long)
    with pytest.raises(ValueError, match="single-turn"):
        merge_rollouts(a, episode, 2, PAD)


# ---------------------------------------------------------------- the gate

def test_entropy_gate_and_its_window():
    assert entropy_gate([0.5], 0.7) and not entropy_gate([0.8], 0.7)
    assert not entropy_gate([0.7], 0.7)                     # strictly below α
    assert entropy_gate([0.8, 0.7, 0.5], 0.7)               # mean 0.6667
    assert not entropy_gate([0.9, 0.7, 0.6], 0.7)           # mean 0.7333: this step's 0.6 alone would fire
    w = EntropyWindow(3)
    assert [w.push(h) for h in (0.9, 0.7, 0.6, 0.5)][-1] == [0.7, 0.6, 0.5]   # the oldest leaves
    other = EntropyWindow(3)
    other.load_state_dict(w.state_dict())
    assert other.values == [0.7, 0.6, 0.5]
    a = eepo()
    a.window.push(0.1)
    b = eepo()
    b.load_state_dict(a.state_dict())
    assert b.window.values == [0.1] and eepo().window.values == []   # each build has its own window


# ---------------------------------------------------------------- the schedule on the tiny model

RECORDS = [{"prompt": "12+7="}, {"prompt": "40+41="}, {"prompt": "3+9="}]


def _sampler(tiny, seen: list):
    """A Sampler over the session's tiny model (HF engine, temperature 1, 4 new tokens); each generate call
    appends (rows, mean probability of the first call's sampled tokens under the model at that moment)."""
    from rlx.rollout.hf import HFEngine

    model, tok = tiny
    engine = HFEngine(model, tok, OmegaConf.create({"max_new_tokens": 4, "temperature": 1.0, "top_k": 0,
                                                    "top_p": 1.0, "engine_logprobs": False}))

    def generate(records, n):
        with torch.no_grad():
            p = None
            if seen:
                first = seen[0][2]
                ids = torch.cat([first.prompt_ids, first.completion_ids], 1)
                am = torch.cat([first.prompt_mask, first.response_mask.long()], 1)
                logp = token_logprobs(model, ids, am, first.completion_ids.shape[1])[0]
                p = masked_mean(logp.exp(), first.response_mask).item()
        out = engine.generate([r["prompt"] for r in records], n=n)
        seen.append((len(out.texts), p, out))
        return out

    return Sampler(generate=generate, model=model, autocast=False, tokenizer=tok)


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("fire", [True, False])
def test_the_second_half_comes_from_the_forgetting_model_and_the_policy_is_restored(tiny, fire):
    model, _ = tiny
    before = _snapshot(model)
    grads_before = [p.grad for p in model.parameters()]
    # α = 100 nats: always below (the random-init model's entropy is at most log V = 5.7); α = 0: never
    a = eepo(group_size=4, entropy_threshold=100.0 if fire else 0.0, entropy_window=1, unlearn_lr=0.5)
    seen: list = []
    torch.manual_seed(0)
    out = a.sample_completions(_sampler(tiny, seen), RECORDS, 4)
    (n1, _, first), (n2, p_second, second) = seen
    assert (n1, n2) == (6, 6) and len(out.texts) == 12            # G/2 = 2 per record, twice
    # the probability of the first half's tokens under the model that sampled the second half, against the policy
    ids = torch.cat([first.prompt_ids, first.completion_ids], 1)
    am = torch.cat([first.prompt_mask, first.response_mask.long()], 1)
    with torch.no_grad():
        logp = token_logprobs(model, ids, am, first.completion_ids.shape[1])[0]
    p_policy = masked_mean(logp.exp(), first.response_mask).item()
    if fire:
        # forgotten: the sampled tokens became less likely (random init, p ≈ 1/V: 0.0041 → 0.0037 at η = 0.5)
        assert p_second < 0.95 * p_policy, (p_second, p_policy)
    else:
        assert p_second == p_policy
    # the policy is back, bit for bit, and no gradient was left behind
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [p.grad for p in model.parameters()] == grads_before
    # each record: its 2 first-half rows, then its 2 second-half rows
    assert out.texts == [t for b in range(3) for t in (*first.texts[2 * b:2 * b + 2], *second.texts[2 * b:2 * b + 2])]
    assert torch.equal(out.prompt_ids[::4], first.prompt_ids[::2])
    m = out.extra_metrics
    assert m["eepo/unlearned"] == float(fire) and m["eepo/entropy_gate"] == m["eepo/entropy_first_half"] > 0
    assert m["eepo/forget_loss"] > 0


def test_the_same_seed_gives_the_same_rollout(tiny):
    a = eepo(group_size=4, entropy_threshold=100.0, unlearn_lr=0.5)
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        outs.append((a.sample_completions(_sampler(tiny, []), RECORDS, 4), torch.get_rng_state()))
    (x, rng_x), (y, rng_y) = outs
    assert torch.equal(x.completion_ids, y.completion_ids) and x.texts == y.texts and torch.equal(rng_x, rng_y)
    assert a.window.values[-2] == a.window.values[-1]               # the same first half, the same entropy


# ---------------------------------------------------------------- through the loop

RUN = ["algo=eepo", "data.prompts_per_step=4", "algo.entropy_threshold=100", "hardware.num_threads=1", *FAST]


def test_two_steps_through_the_loop(tmp_path):
    rlx.run(rlx.compose([*RUN, "trainer.steps=2"]), run_dir=tmp_path / "run")
    rows = read_metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == [0, 1, 2]
    for r in rows[1:]:
        assert r["eepo/unlearned"] == 1.0 and 0 < r["eepo/entropy_first_half"] < math.log(300)
        assert "loss/total" in r and "policy/kl_ref" in r and r["groups/kept_frac"] == 1.0
    assert rows[2]["eepo/entropy_gate"] == pytest.approx((rows[1]["eepo/entropy_first_half"]
                                                          + rows[2]["eepo/entropy_first_half"]) / 2)


def _without_perf_and_eval(rows):
    """Metric rows less perf/ (timings) and eval/ (a run also evaluates at its own last step: the cut run's step 2)."""
    return [{k: v for k, v in r.items() if not k.startswith(("perf/", "eval/"))} for r in rows]


def test_resume_equals_the_uninterrupted_run(tmp_path):
    # the gate fires at every step (α = 100); its window is algorithm state: a run cut after step 2 and resumed
    # gates step 3 on the entropies of steps 1-3, and draws the same samples as the uninterrupted run
    rlx.run(rlx.compose([*RUN, "trainer.steps=3"]), run_dir=tmp_path / "ref")
    cut = [*RUN, "trainer.save_every=2"]
    rlx.run(rlx.compose([*cut, "trainer.steps=2"]), run_dir=tmp_path / "cut")
    rlx.run(rlx.compose([*cut, "trainer.steps=3", "trainer.resume=true"]), run_dir=tmp_path / "cut")
    ref = _without_perf_and_eval(read_metrics(tmp_path / "ref"))
    assert _without_perf_and_eval(read_metrics(tmp_path / "cut")) == ref
    assert [r["eepo/unlearned"] for r in ref[1:]] == [1.0, 1.0, 1.0]
    assert ref[3]["eepo/entropy_gate"] == pytest.approx(sum(r["eepo/entropy_first_half"] for r in ref[1:]) / 3)


# ---------------------------------------------------------------- the preset and its checks

def test_preset_composes_and_builds():
    a = eepo()
    assert isinstance(a, EEPO) and a.group_size == 8 and a.gen_rounds() == 1
    assert (a.entropy_threshold, a.entropy_window, a.unlearn_lr) == (0.7, 3, 3e-3)
    assert a.beta == 0.04 and "ref_logp" in a.requires


@pytest.mark.parametrize("key,value,needle", [
    ("group_size", 5, "algo.group_size=5: eepo samples G/2"),
    ("entropy_threshold", -0.1, "algo.entropy_threshold=-0.1: must be >= 0"),
    ("entropy_window", 0, "algo.entropy_window=0: must be an integer >= 1"),
    ("unlearn_lr", -1.0, "algo.unlearn_lr=-1.0: must be >= 0"),
])
def test_bad_values_name_the_key(key, value, needle):
    with pytest.raises(ConfigError, match=needle):
        eepo(**{key: value})


def test_an_engine_with_its_own_weights_is_refused():
    with pytest.raises(ConfigError, match="rollout.engine=vllm: algo=eepo changes the policy's parameters"):
        rlx.compose(["algo=eepo", "rollout.engine=vllm"])
