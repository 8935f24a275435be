"""The fast paths give the numbers of the plain ones: rlx's sampler against ``generate``, the shared-prompt
forward against one plain forward (values and gradients), the chunked log-prob function against its
closed form, and the autocast/attention settings."""

import copy
import math

import pytest
import torch
from omegaconf import OmegaConf

import rlx.models.logprobs as LP
from rlx.ops import logprobs_from_logits
from rlx.rollout.hf import HFEngine
from rlx.runtime.speed import FP32_SDPA, fp32_attention, resolve_autocast

PROMPTS = ["1+1=", "10+10=", "99+7=", "5+62="]   # 4, 6, 5 and 5 tokens: left padding differs per row


def _engine(model, tok, max_new=6, **sampling):
    cfg = {"max_new_tokens": max_new, "temperature": 1.0, "top_k": 0, "top_p": 1.0, **sampling}
    return HFEngine(model, tok, OmegaConf.create(cfg))


def _eos_first(tiny, ends: list[bool]):
    """The tiny model with its output row for EOS (untied from the input embedding) solved so that greedy
    decoding of PROMPTS[r] emits EOS as its first token exactly when ``ends[r]``: h_r·e = max_r ± 2."""
    model, tok = tiny
    model = copy.deepcopy(model).eval()
    enc = tok(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = model(**enc, output_hidden_states=True)
        h = out.hidden_states[-1][:, -1]                      # final (normed) hidden state at the last prompt token
        target = out.logits[:, -1].max(-1).values + torch.tensor([2.0 if e else -2.0 for e in ends])
        head = model.lm_head.weight.detach().clone()
        head[tok.eos_token_id] = torch.linalg.pinv(h) @ target  # min-norm e with h e = target
    model.lm_head.weight = torch.nn.Parameter(head)
    return model, tok


@pytest.mark.parametrize("lean_forward", [True, False], ids=["lean_forward", "model_forward"])
def test_greedy_sampler_equals_generate_token_for_token(tiny, lean_forward):
    from rlx.models import lean

    model, tok = _eos_first(tiny, [True, False, True, False])
    if not lean_forward:   # the sampler's other path: the model's own forward with a buffered transformers cache
        lean.disable(model)
    fast, slow = _engine(model, tok), _engine(model, tok)
    slow.fast = False
    prompts = PROMPTS * 8
    a, b = fast.generate(prompts, greedy=True), slow.generate(prompts, greedy=True)
    assert a.completion_ids.shape == b.completion_ids.shape
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert torch.equal(a.response_mask, b.response_mask) and a.texts == b.texts
    lengths = a.response_mask.sum(-1)
    assert lengths[0] == 1 and lengths[1] > 1   # half the rows ended at once: the finished-row drop ran


def test_sampler_stops_when_every_row_has_ended(tiny):
    model, tok = _eos_first(tiny, [True] * 4)
    out = _engine(model, tok, max_new=40).generate(PROMPTS, greedy=True)
    assert (out.completion_ids[:, 0] == tok.eos_token_id).all()   # every row ended at its first token ...
    assert out.completion_ids.shape == (4, 1)                      # ... so one step ran, not 40


def test_sampled_tokens_follow_the_warped_distribution(tiny):
    """temperature 0.5 then top-k 3, as transformers applies them: 3000 one-token samples of one prompt
    put no mass outside the top 3 and match softmax(z_top3 / 0.5) to within sampling noise."""
    model, tok = tiny
    eng = _engine(model, tok, max_new=1, temperature=0.5, top_k=3)
    torch.manual_seed(0)
    out = eng.generate([PROMPTS[1]], n=3000)
    with torch.no_grad():
        z = model(input_ids=out.prompt_ids[:1]).logits[0, -1].float()
    top = z.topk(3)
    p = torch.softmax(top.values / 0.5, -1)
    counts = torch.stack([(out.completion_ids[:, 0] == i).sum() for i in top.indices]).float()
    assert counts.sum() == 3000
    # multinomial s.e. of each frequency is sqrt(p(1-p)/3000) <= 0.0092; 0.03 is over 3 s.e.
    assert torch.allclose(counts / 3000, p, atol=0.03), (counts / 3000, p)


def _batch(tiny_model, tok, n=4):
    eng = _engine(tiny_model, tok, max_new=5)
    torch.manual_seed(1)
    out = eng.generate(PROMPTS, n=n)
    ids = torch.cat([out.prompt_ids, out.completion_ids], 1)
    am = torch.cat([out.prompt_mask, out.response_mask.long()], 1)
    return ids, am, out.response_mask


def test_shared_prompt_forward_equals_plain_forward(tiny, monkeypatch):
    model, tok = tiny
    model = copy.deepcopy(model).train()
    ids, am, mask = _batch(model, tok)
    T = mask.shape[1]
    trimmed, P = LP._trim(ids, am, T)[:2], ids.shape[1] - T
    # 16 rows, 4 prompts of <= 6 tokens: 12 x 6 x 1.0e6 = 7e7 token-params saved, under the 1e8 break-even
    assert LP._shared_prompts(model, *trimmed, P) is None
    monkeypatch.setattr(LP, "SHARE_MIN_TOKEN_PARAMS", 0)
    monkeypatch.setattr(LP, "SHARE_MIN_TOKENS", 0)   # 72 prompt tokens saved: under the 96-token break-even too
    assert LP._shared_prompts(model, *trimmed, P) is not None
    w = torch.randn(mask.shape)

    def run():
        model.zero_grad()
        logp, ent = LP.token_logprobs(model, ids, am, T, with_entropy=True)
        (((logp + 0.1 * ent) * w)[mask]).sum().backward()
        return logp.detach(), ent.detach(), torch.cat([p.grad.flatten() for p in model.parameters()])

    shared = run()
    monkeypatch.setattr(LP, "_shared_prompts", lambda *a: None)
    plain = run()
    for got, want in zip(shared, plain):
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-4)
    assert (shared[0][~mask] == 0).all()   # padding after EOS gets log-prob 0, as before


def test_chunked_logprobs_match_the_closed_form(monkeypatch):
    # z = [0, log 3] -> p = [1/4, 3/4]; token 1: log p = log 3/4, d log p/dz = onehot - p = [-1/4, 1/4]
    z = torch.tensor([[[0.0, math.log(3.0)]]], requires_grad=True)
    logp, ent = logprobs_from_logits(z, torch.tensor([[1]]), with_entropy=True)
    logp.sum().backward(retain_graph=True)
    assert logp.item() == pytest.approx(math.log(0.75))
    assert z.grad[0, 0].tolist() == pytest.approx([-0.25, 0.25])
    # dH/dz_j = -p_j (log p_j + H): H = 0.5623 nats -> [-1/4 (log 1/4 + H), -3/4 (log 3/4 + H)] = [0.2060, -0.2060]
    z.grad = None
    H = ent.item()
    ent.sum().backward()
    assert z.grad[0, 0].tolist() == pytest.approx([-0.25 * (math.log(0.25) + H), -0.75 * (math.log(0.75) + H)])
    # several chunks (2 rows each) give the values and gradients of the unchunked closed form
    monkeypatch.setattr("rlx.ops.LOGPROB_CHUNK_ELEMENTS", 14)
    torch.manual_seed(0)
    x = torch.randn(3, 4, 7, requires_grad=True)
    y = torch.randint(0, 7, (3, 4))
    w1, w2 = torch.randn(3, 4), torch.randn(3, 4)
    lp, h = logprobs_from_logits(x, y, with_entropy=True)
    ((lp * w1).sum() + (h * w2).sum()).backward()
    x2 = x.detach().clone().requires_grad_()
    ls = x2.log_softmax(-1)
    lp2, h2 = ls.gather(-1, y[..., None]).squeeze(-1), -(ls.exp() * ls).sum(-1)
    ((lp2 * w1).sum() + (h2 * w2).sum()).backward()
    assert torch.allclose(lp, lp2, atol=1e-6) and torch.allclose(h, h2, atol=1e-5)
    assert torch.allclose(x.grad, x2.grad, atol=1e-6)


def test_autocast_setting(tiny):
    model, _ = tiny
    cpu = torch.device("cpu")
    assert resolve_autocast(True, model, cpu) is True and resolve_autocast(False, model, cpu) is False
    assert resolve_autocast(None, model, cpu) is False   # auto: 1M parameters is below the bf16 break-even


def test_auto_autocast_needs_bf16_matrix_instructions(monkeypatch):
    from rlx.runtime import speed

    assert speed.cpu_bf16_matmul() in ("amx_bf16", "avx512_bf16", None)   # this machine's, from /proc/cpuinfo
    big = torch.nn.Linear(2000, 2000)   # 4M parameters: above the break-even
    cpu = torch.device("cpu")
    for flag, on in (("amx_bf16", True), ("avx512_bf16", True), (None, False)):
        monkeypatch.setattr(speed, "cpu_bf16_matmul", lambda flag=flag: flag)
        assert speed.resolve_autocast(None, big, cpu) is on, flag
    monkeypatch.setattr(speed, "cpu_bf16_matmul", lambda: "avx512_bf16")
    assert speed.resolve_autocast(None, big, cpu) is True
    assert speed.resolve_autocast(None, big.double(), cpu) is False   # model.dtype=float64 stays float64
    assert speed.resolve_autocast(True, big, cpu) is True             # an explicit setting is obeyed


def test_fp32_attention_sampling_matches_its_training_forward(tiny):
    """Under bf16 autocast with float32 attention, the sampler's greedy tokens are those that
    generate() picks with the same attention, and the forward's log-probs are close to sdpa's."""
    model, tok = tiny
    model = copy.deepcopy(model).eval()
    ids, am, mask = _batch(model, tok)
    with torch.no_grad():
        bf16_sdpa, _ = LP.token_logprobs(model, ids, am, mask.shape[1], autocast=True)
        assert fp32_attention(model) and model.config._attn_implementation == FP32_SDPA
        bf16_fp32attn, _ = LP.token_logprobs(model, ids, am, mask.shape[1], autocast=True)
    assert torch.allclose(bf16_sdpa[mask], bf16_fp32attn[mask], atol=0.05)
    fast, slow = _engine(model, tok), _engine(model, tok)
    fast.autocast = slow.autocast = True
    slow.fast = False
    assert torch.equal(fast.generate(PROMPTS, greedy=True).completion_ids,
                       slow.generate(PROMPTS, greedy=True).completion_ids)


def test_bf16_linear_reference_is_exact_under_autocast(tiny):
    """Autocast casts float32 weights to bf16 at each call; storing them in bf16 once gives the same numbers."""
    from rlx.models import make_reference
    from rlx.runtime.speed import bf16_linear_reference

    model, tok = tiny
    policy = copy.deepcopy(model)
    ref = make_reference(policy)
    ids, am, mask = _batch(model, tok)
    with torch.no_grad():
        want, _ = LP.token_logprobs(ref, ids, am, mask.shape[1], autocast=True)
        assert bf16_linear_reference(ref, policy) == 4 * 7 + 1   # 7 projections per layer and the (untied) head
        got, _ = LP.token_logprobs(ref, ids, am, mask.shape[1], autocast=True)
    assert ref.lm_head.weight.dtype == torch.bfloat16 and ref.get_input_embeddings().weight.dtype == torch.float32
    assert torch.equal(got, want)
    assert bf16_linear_reference(policy, policy) == 0   # trainable weights are never touched


def test_clip_grad_norm_equals_torch():
    from rlx.runtime.speed import clip_grad_norm

    for scale in (0.01, 10.0):   # within the limit (no multiply) and above it (scaled to norm 1)
        a = [torch.nn.Parameter(torch.zeros(3)) for _ in range(2)]
        b = [torch.nn.Parameter(torch.zeros(3)) for _ in range(2)]
        for i, (x, y) in enumerate(zip(a, b)):
            x.grad = torch.arange(3.0) * scale * (i + 1)
            y.grad = x.grad.clone()
        assert clip_grad_norm(a, 1.0) == pytest.approx(float(torch.nn.utils.clip_grad_norm_(b, 1.0)))
        assert all(torch.equal(x.grad, y.grad) for x, y in zip(a, b))


def test_thread_advice_warns_only_when_threads_are_unset_on_a_busy_machine():
    from rlx.runtime.speed import thread_advice

    assert thread_advice(None, load=0.2, cores=2) is None          # quiet machine: all cores are fine
    assert thread_advice(1, load=5.0, cores=2) is None             # the user chose a thread count
    msg = thread_advice(None, load=2, cores=2)
    assert "hardware.num_threads=1" in msg and "2 other process(es)" in msg


def test_busy_cores_sees_a_process_running_now_and_not_one_that_ended():
    # a real busy child counts while it spins; the 1-minute load average would still count it after it ended.
    # busy_cores counts every runnable process of the machine, and under xdist the other worker's tests start and end
    # processes too, so one trial can see the machine change by one between its two readings: up to 5 trials, the
    # first that sees the child come and go passes. A lagging count (the load average) fails every trial.
    import subprocess
    import sys
    import time

    from rlx.runtime.speed import busy_cores

    trials = []
    for _ in range(5):
        spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            time.sleep(0.3)
            during = busy_cores()
        finally:
            spin.kill()
            spin.wait()
        time.sleep(0.2)
        trials.append((during, busy_cores()))
        if during >= 1.0 and trials[-1][1] <= during - 1.0:   # the child counted, then no longer
            return
    raise AssertionError(f"(during, after) of each trial: {trials}")


def test_set_training_flags_only_sets_every_module_without_calling_train():
    from rlx.runtime.speed import set_training

    class Counting(torch.nn.Sequential):
        calls = 0

        def train(self, mode=True):   # transformers' override re-kernelizes here
            Counting.calls += 1
            return super().train(mode)

    model = Counting(torch.nn.Linear(2, 2), torch.nn.Sequential(torch.nn.Dropout(0.5)))
    set_training(model, False, flags_only=True)
    assert Counting.calls == 0 and not any(m.training for m in model.modules())
    set_training(model, True, flags_only=True)
    assert Counting.calls == 0 and all(m.training for m in model.modules())
    set_training(model, False)
    assert Counting.calls == 1 and not any(m.training for m in model.modules())
