"""The lean forward (rlx/models/lean.py) is the transformers forward: the same logits and gradients in
float32 bit for bit, the same cached decode, the same bits with packed bf16 weights, and the transformers
call wherever it does not apply."""

import copy

import pytest
import torch

from rlx.models import lean
from rlx.ops import position_ids_from_mask
from rlx.runtime.speed import fp32_attention

PROMPTS = ["1+1=", "10+10=", "99+7=", "5+62="]


def _inputs(tok, extra=3):
    enc = tok(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)
    tail = torch.arange(4 * extra).view(4, extra) % 10 + 4        # some digit tokens after each prompt
    ids = torch.cat([enc["input_ids"], tail], 1)
    am = torch.cat([enc["attention_mask"], torch.ones_like(tail)], 1)
    return ids, am, position_ids_from_mask(am)


def test_logits_and_gradients_equal_transformers_in_float32(tiny):
    model, tok = tiny
    model = copy.deepcopy(model).train()
    fast = lean.for_model(model)
    assert fast is not None, lean.why_not(model)
    ids, am, pos = _inputs(tok)
    assert (am == 0).any()   # left padding differs per row
    w = torch.randn(ids.shape[0], ids.shape[1], model.config.vocab_size, generator=torch.Generator().manual_seed(0))

    def run(forward):
        model.zero_grad()
        logits = forward()
        (logits * w)[am.bool()].sum().backward()
        return logits.detach()[am.bool()], [p.grad.clone() for p in model.parameters()]

    want, want_g = run(lambda: model(input_ids=ids, attention_mask=am, position_ids=pos, use_cache=False).logits)
    got, got_g = run(lambda: fast(ids, pos, am))
    assert torch.equal(got, want)
    assert all(torch.equal(a, b) for a, b in zip(got_g, want_g))


def test_cached_decode_equals_transformers(tiny):
    """Prompts prefilled once into a GrowCache, copied to 2 samples each in a BufferCache, then 3 one-token
    steps, against transformers' DynamicCache on the repeated rows."""
    from transformers import DynamicCache

    model, tok = tiny
    model = copy.deepcopy(model).eval()
    fast = lean.for_model(model)
    ids, am, pos = _inputs(tok, extra=0)
    P, n = ids.shape[1], 2
    with torch.no_grad():
        grow = fast.new_cache()
        got = [fast(ids, pos, am, grow, logits_to_keep=1).repeat_interleave(n, 0)]
        cache = lean.BufferCache(grow, n, P + 3)
        hf = DynamicCache(config=model.config)
        rid, ram, rpos = (t.repeat_interleave(n, 0) for t in (ids, am, pos))
        want = [model(input_ids=rid, attention_mask=ram, position_ids=rpos, cache=hf, use_cache=True,
                      logits_to_keep=1).logits]
        mask, step_pos = ram, rpos[:, -1:]
        for t in range(3):
            tok_t = torch.full((rid.shape[0], 1), 4 + t)
            mask, step_pos = torch.cat([mask, torch.ones_like(tok_t)], 1), step_pos + 1
            got.append(fast(tok_t, step_pos, mask, cache))
            want.append(model(input_ids=tok_t, attention_mask=mask, position_ids=step_pos, cache=hf,
                              use_cache=True).logits)
    for a, b in zip(got, want):
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


def test_frozen_weights_change_no_bit_in_float32(tiny):
    """``decoding()`` merges q|k|v and gate|up and normalises and rotates q and k together: the same bits."""
    model, tok = tiny
    fast = lean.for_model(copy.deepcopy(model).eval())
    ids, am, pos = _inputs(tok)
    with torch.no_grad():
        plain = fast(ids, pos, am)
        with fast.decoding():
            assert fast._frozen is not None and not fast._frozen.packed
            frozen = fast(ids, pos, am)
    assert torch.equal(frozen, plain)


def test_autocast_forward_equals_transformers_and_packed_weights_change_no_bit(tiny):
    """bf16 autocast with float32 attention (the 30M path): the lean forward gives transformers' logits, and
    ``decoding()`` (bf16 weights packed once for oneDNN) gives the same bits without autograd only."""
    model, tok = tiny
    model = copy.deepcopy(model).eval()
    assert fp32_attention(model)
    fast = lean.for_model(model)
    ids, am, pos = _inputs(tok)
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        want = model(input_ids=ids, attention_mask=am, position_ids=pos, use_cache=False).logits
        got = fast(ids, pos, am)
        with fast.decoding():
            packed = fast(ids, pos, am)
    assert torch.equal(got[am.bool()], want[am.bool()])
    if not lean._onednn_linear():
        pytest.skip("this torch build has no oneDNN packed linear: decoding() packs nothing")
    assert torch.equal(packed, got)
    with torch.autocast("cpu", torch.bfloat16), fast.decoding():   # with autograd: the trainable weights
        fast(ids, pos, am).float().sum().backward()
    assert model.model.layers[0].mlp.gate_proj.weight.grad is not None


def test_falls_back_where_it_does_not_apply(tiny):
    from peft import LoraConfig, get_peft_model

    model, tok = tiny
    ckpt = copy.deepcopy(model)
    ckpt.gradient_checkpointing_enable()
    assert lean.why_not(ckpt) == "activation checkpointing" and lean.for_model(ckpt) is None
    lora = get_peft_model(copy.deepcopy(model), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    assert lean.why_not(lora) is not None and lean.for_model(lora) is None
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    assert "attention" in lean.why_not(eager)
    off = copy.deepcopy(model)
    lean.disable(off)   # hardware.lean_forward=false
    assert lean.for_model(off) is None and lean.why_not(off) is None


@pytest.mark.slow
def test_the_switch_turns_the_lean_forward_off(tmp_path, capsys, warm_tiny):
    # hardware.lean_forward=false must reach the trainer: its log line says off, and the model has no lean forward
    import rlx

    cfg = rlx.compose(["hardware.lean_forward=false", "trainer.steps=1", "trainer.progress=false",
                       "data.eval_size=8", "data.prompts_per_step=2", "hardware.num_threads=1"])
    rlx.run(cfg, run_dir=tmp_path)
    out = capsys.readouterr()
    assert "lean forward: off" in out.out + out.err
    assert "lean forward: on" not in out.out + out.err


RANDOM_QWEN2 = ["model=qwen0_5b", "model.init=random", "model.arch.hidden_size=64", "model.arch.num_hidden_layers=2",
                "model.arch.num_attention_heads=4", "model.arch.num_key_value_heads=2",
                "model.arch.intermediate_size=128", "model.arch.vocab_size=1000"]


@pytest.mark.slow
def test_a_random_bf16_model_under_cpu_autocast_runs_with_the_lean_forward(tmp_path):
    # model=qwen0_5b model.init=random (bf16 parameters) with bf16 autocast switches attention to float32; the
    # lean forward's self-check runs outside autocast, where that attention returned float32 into a bf16 o_proj
    # ("expected m1 and m2 to have the same dtype"). It must pass the check and run.
    import rlx
    from rlx.catalogue import build
    from rlx.runtime.speed import prepare

    cfg = rlx.compose([*RANDOM_QWEN2, "hardware.autocast=true"])
    model, _ = build("model", cfg.model, log=lambda *a: None)
    assert next(model.parameters()).dtype == torch.bfloat16
    assert prepare(model, True, torch.device("cpu"), log=lambda *a: None)
    assert fp32_attention(model) or model.config._attn_implementation != "sdpa"
    assert lean.for_model(model) is not None
    rlx.run(rlx.compose([*RANDOM_QWEN2, "hardware.autocast=true", "algo=gspo", "trainer.steps=1",
                         "trainer.progress=false", "data.eval_size=8", "data.prompts_per_step=2",
                         "hardware.num_threads=1"]), run_dir=tmp_path / "run")
    assert (tmp_path / "run" / "summary.json").exists()


@pytest.mark.parametrize("algo", ["grpo", "dpo"])
@pytest.mark.slow
def test_a_run_gives_the_same_metrics_with_the_lean_forward_off(tmp_path, algo, capsys, warm_tiny):
    """Sampling, reference and training forwards, the update and the evaluation through the lean forward give
    the metrics of the same run through transformers' forward (every value of every step but perf/*). The
    warm-started model, so that GRPO's groups have reward variance and the updates move the weights."""
    from conftest import read_metrics

    import rlx

    runs = {}
    for flag in ("true", "false"):
        cfg = rlx.compose([f"algo={algo}", "trainer.progress=false", "trainer.steps=3", "trainer.eval_every=3",
                           "data.eval_size=32", *(["data.pref_eval_size=16"] if algo == "dpo" else []), "data.prompts_per_step=4", "hardware.autocast=false",
                           f"hardware.lean_forward={flag}"])
        rlx.run(cfg, run_dir=tmp_path / flag)
        runs[flag] = [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in read_metrics(tmp_path / flag)]
        printed = capsys.readouterr()
        assert ("lean forward: on" in printed.out + printed.err) == (flag == "true")   # the run did use it
    assert len(runs["true"]) == 4 and runs["true"][-1]["optim/grad_norm"] > 0   # eval at step 0, then 3 updates
    assert runs["true"] == runs["false"]
