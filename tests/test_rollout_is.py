"""Engine log-probs, the engine/trainer mismatch metrics and the truncated importance-sampling correction
(rollout.engine_logprobs, rollout.is_correction=tis; rlx/rollout/correction.py)."""

import math

import pytest
import torch
from conftest import FAST, loss_inputs, read_metrics
from omegaconf import OmegaConf

import rlx
from rlx.catalogue import load as load_components
from rlx.config import CONF_DIR, ConfigError, check_cli, group_choices
from rlx.metrics import VOCABULARY
from rlx.models.logprobs import token_logprobs
from rlx.registry import ALGOS
from rlx.rollout.base import records_logprobs
from rlx.rollout.correction import logp_mismatch, tis_weights
from rlx.rollout.hf import HFEngine

PROMPTS = ["1+1=", "10+10=", "99+7=", "5+62="]
ROLLOUT_METRICS = ["rollout/logp_diff", "rollout/logp_diff_max", "rollout/is_weight_mean", "rollout/is_clip_frac"]


def _engine(model, tok, **rollout):
    cfg = {"max_new_tokens": 6, "temperature": 1.0, "top_k": 0, "top_p": 1.0, **rollout}
    return HFEngine(model, tok, OmegaConf.create(cfg))


# ---------------------------------------------------------------- (a) engine log-probs = trainer log-probs


@pytest.mark.parametrize("fast", [True, False], ids=["sampler", "generate"])
def test_engine_logprobs_equal_the_trainers(tiny, fast):
    model, tok = tiny
    eng = _engine(model, tok, engine_logprobs=True)
    eng.fast = fast   # rlx's sampler, or transformers' generate (output_logits)
    torch.manual_seed(0)
    out = eng.generate(PROMPTS, n=4)
    ids = torch.cat([out.prompt_ids, out.completion_ids], 1)
    am = torch.cat([out.prompt_mask, out.response_mask.long()], 1)
    with torch.no_grad():
        trainer, _ = token_logprobs(model, ids, am, out.completion_ids.shape[1])
    mask = out.response_mask
    assert out.engine_logp.shape == mask.shape and out.engine_logp.dtype == torch.float32
    assert (out.engine_logp[mask] < 0).all() and (out.engine_logp[~mask] == 0).all()
    assert (out.engine_logp - trainer)[mask].abs().max().item() < 1e-5


def test_engine_logprobs_ignore_temperature(tiny):
    """The recorded log-probs are log softmax of the raw logits (the trainer's convention), not of the
    tempered sampling distribution: one-token samples at temperature 0.5 score log softmax(z)[y]."""
    model, tok = tiny
    eng = _engine(model, tok, max_new_tokens=1, temperature=0.5, engine_logprobs=True)
    torch.manual_seed(0)
    out = eng.generate([PROMPTS[1]], n=16)
    with torch.no_grad():
        z = model(input_ids=out.prompt_ids[:1]).logits[0, -1].float()
    expected = torch.log_softmax(z, -1)[out.completion_ids[:, 0]]
    assert torch.allclose(out.engine_logp[:, 0], expected, atol=1e-5)


# ---------------------------------------------------------------- (d) off = sampling unchanged, no RNG draws


@pytest.mark.parametrize("fast", [True, False], ids=["sampler", "generate"])
def test_recording_draws_no_random_numbers(tiny, fast):
    model, tok = tiny
    runs = []
    for record in (False, True):
        eng = _engine(model, tok, engine_logprobs=record)
        eng.fast = fast
        torch.manual_seed(123)
        out = eng.generate(PROMPTS, n=4)
        runs.append((out, torch.get_rng_state()))
    (off, rng_off), (on, rng_on) = runs
    assert off.engine_logp is None and on.engine_logp is not None
    assert torch.equal(off.completion_ids, on.completion_ids) and off.texts == on.texts
    assert torch.equal(rng_off, rng_on)   # the generator is where it would be without recording


def test_recording_is_off_by_default_and_auto_follows_the_engine():
    cfg = rlx.compose(FAST).rollout
    assert cfg.engine_logprobs is None and cfg.is_correction == "none"
    assert not records_logprobs(cfg, free=False)   # HF engine, default run: nothing recorded
    assert records_logprobs(cfg, free=True)        # vLLM returns them with the sample
    assert records_logprobs(rlx.compose([*FAST, "rollout.is_correction=tis"]).rollout, free=False)
    assert not records_logprobs(rlx.compose([*FAST, "rollout.engine_logprobs=false"]).rollout, free=True)


# ---------------------------------------------------------------- (b) TIS weights by hand


def test_tis_weights_hand_computed():
    # log π_old − log μ per token: [0, log 0.5, log 1.5, log 3 | padding]
    # ratio π_old/μ = [1, 0.5, 1.5, 3] -> w = min(ratio, 2) = [1, 0.5, 1.5, 2] (the last one capped)
    # is_weight_mean = (1 + 0.5 + 1.5 + 2) / 4 = 1.25; is_clip_frac = 1/4 (one token hit the cap)
    # logp_diff = (0 + log 2 + log 1.5 + log 3) / 4 = (0.693147 + 0.405465 + 1.098612) / 4 = 0.549306
    # logp_diff_max = log 3 = 1.098612 (the padding token, |diff| = 7, is left out)
    engine = torch.tensor([[-1.0, -1.0, -1.0, -1.0, -8.0]])
    old = engine + torch.tensor([[0.0, math.log(0.5), math.log(1.5), math.log(3.0), 7.0]])
    mask = torch.tensor([[True, True, True, True, False]])
    w, m = tis_weights(old, engine, mask, is_cap=2.0)
    assert w[0].tolist() == pytest.approx([1.0, 0.5, 1.5, 2.0, 1.0], abs=1e-6)   # padding: 1
    assert not w.requires_grad
    assert m["rollout/is_weight_mean"].item() == pytest.approx(1.25, abs=1e-6)
    assert m["rollout/is_clip_frac"].item() == pytest.approx(0.25)
    d = logp_mismatch(old, engine, mask)
    assert d["rollout/logp_diff"].item() == pytest.approx(0.549306, abs=1e-5)
    assert d["rollout/logp_diff_max"].item() == pytest.approx(1.098612, abs=1e-5)


def test_tis_multiplies_the_clipped_token_terms():
    from rlx.algos.grpo import grpo_loss

    # A = +1 on 4 tokens, token_mean, w = [1, 0.5, 1.5, 2]; ratios [1, 1, 1, 1.5]:
    # per token −min(ρA, clip(ρ, 0.8, 1.2)A) = [−1, −1, −1, −1.2] (the last clipped), times w
    # = [−1, −0.5, −1.5, −2.4] -> loss = −5.4 / 4 = −1.35
    # d loss / d logp_t = −w_t·ρ_t·A / 4 = [−0.25, −0.125, −0.375, 0] (the clipped token has no gradient)
    logp = torch.log(torch.tensor([[1.0, 1.0, 1.0, 1.5]])).requires_grad_(True)
    old = torch.zeros(1, 4)
    w = torch.tensor([[1.0, 0.5, 1.5, 2.0]])
    loss, m = grpo_loss(logp, old, torch.ones(1, 4), torch.ones(1, 4, dtype=torch.bool), is_weights=w)
    loss.backward()
    assert loss.item() == pytest.approx(-1.35)
    assert logp.grad[0].tolist() == pytest.approx([-0.25, -0.125, -0.375, 0.0])
    assert m["policy/clip_frac"].item() == pytest.approx(0.25)   # the clip metrics are not reweighted


# ---------------------------------------------------------------- (c) weights of 1 change nothing


def _online_algos(takes_is_weights: bool):
    """Presets whose algorithm class runs online and does (not) take the weights: the classes' own ClassVars, read
    through each preset's ``algo.name`` (composing every preset here cost ~12 s of each test worker's collection)."""
    load_components()
    classes = {a: ALGOS.get(OmegaConf.load(CONF_DIR / "algo" / f"{a}.yaml").algo.name) for a in group_choices("algo")}
    return [a for a, cls in classes.items()
            if cls.trainer == "online" and getattr(cls, "takes_is_weights", None) == takes_is_weights]


def _loss_and_grad(algo, is_weights=None):
    torch.manual_seed(0)
    n, T = 4, 5
    logp = (-torch.rand(n, T) - 0.1).requires_grad_(True)
    old = logp.detach() + 0.3 * torch.randn(n, T)   # ratios off 1 so that clipping is active on some tokens
    mask = torch.ones(n, T, dtype=torch.bool)
    mask[1, 3:] = False
    adv = torch.randn(n, 1).expand(n, T).contiguous()
    entropy = torch.rand(n, T) if "entropy" in algo.requires else None
    weights = is_weights(old) if is_weights is not None else None
    mb = loss_inputs(old, adv, mask, old - 0.1, rewards=torch.tensor([1.0, 0.0, 1.0, 0.0]), entropy=entropy,
                     is_weights=weights)
    loss, _ = algo.loss(logp, mb)
    loss.backward()
    return loss.detach(), logp.grad


@pytest.mark.parametrize("name", _online_algos(takes_is_weights=True))
@pytest.mark.slow
def test_tis_with_matching_engine_logprobs_changes_nothing(name):
    algo = rlx.build("algo", rlx.compose([f"algo={name}"]).algo)
    plain = _loss_and_grad(algo)
    # engine log-probs equal to the trainer's old ones: w = min(exp(0), 2) = 1 on every token
    same = _loss_and_grad(algo, lambda old: tis_weights(old, old, torch.ones_like(old, dtype=torch.bool),
                                                         is_cap=2.0)[0])
    assert torch.equal(plain[0], same[0]) and torch.equal(plain[1], same[1])
    # ... and the weights do reach the loss: doubling every weight changes the gradient
    doubled = _loss_and_grad(algo, lambda old: torch.full_like(old, 2.0))
    assert not torch.allclose(plain[1], doubled[1])


# ---------------------------------------------------------------- config: keys and refused combinations


def test_correction_keys_are_checked():
    check_cli(["rollout.is_correction=tis", "rollout.is_cap=3", "rollout.engine_logprobs=true"])
    with pytest.raises(ConfigError, match="did you mean 'rollout.is_correction'"):
        check_cli(["rollout.is_corection=tis"])
    with pytest.raises(ConfigError, match="did you mean 'tis'"):
        check_cli(["rollout.is_correction=tiss"])
    with pytest.raises(ConfigError, match="must be >= 1"):
        check_cli(["rollout.is_cap=0.5"])
    with pytest.raises(ConfigError, match="null \\(auto\\), true or false"):
        check_cli(["rollout.engine_logprobs=auto"])
    with pytest.raises(ConfigError, match="needs the engine's log-probs"):
        check_cli(["rollout.is_correction=tis", "rollout.engine_logprobs=false"])


@pytest.mark.parametrize("algo,why", [("gspo", "per response, no per-token"),
                                      ("gmpo", "per response, no per-token"),
                                      ("rlsc", "per response, no per-token"),
                                      ("dpo", "trains offline")])
def test_correction_refused_where_it_cannot_apply(algo, why):
    with pytest.raises(ConfigError, match=why):
        rlx.compose([f"algo={algo}", "rollout.is_correction=tis"])
    rlx.compose([f"algo={algo}", "rollout.engine_logprobs=true"])   # the metric alone is fine


@pytest.mark.slow
def test_the_online_algorithms_without_a_per_token_term():
    assert _online_algos(takes_is_weights=False) == ["gmpo", "gspo", "gvpo", "online_dpo", "rlsc", "spin"]


# ---------------------------------------------------------------- (a, e) a 2-step run logs the metrics


@pytest.mark.parametrize("mini", ["null", "16"], ids=["on_policy", "off_policy"])
@pytest.mark.slow
def test_two_step_run_logs_the_mismatch_and_the_weights(tmp_path, mini):
    # on-policy: the old log-probs are the training forward's own; 2 mini-batches of 16: batch.old_logp
    cfg = rlx.compose(["algo=grpo", "trainer.steps=2", "data.prompts_per_step=4", "hardware.autocast=false",
                       "rollout.is_correction=tis", f"trainer.mini_batch_size={mini}", *FAST])
    rlx.run(cfg, run_dir=tmp_path)
    rows = [r for r in read_metrics(tmp_path) if r["step"] >= 1]
    assert len(rows) == 2
    for row in rows:
        missing = [k for k in ROLLOUT_METRICS if k not in row]
        assert not missing, missing
        assert row["rollout/logp_diff"] < 1e-5 and row["rollout/logp_diff_max"] < 1e-5   # fp32: same numbers
        assert row["rollout/is_weight_mean"] == pytest.approx(1.0, abs=1e-5)
        assert row["rollout/is_clip_frac"] == 0.0
    assert all(k in VOCABULARY for k in ROLLOUT_METRICS)


def test_default_run_logs_no_rollout_metrics(tmp_path):
    cfg = rlx.compose(["algo=grpo", "trainer.steps=1", "data.prompts_per_step=2", *FAST])
    rlx.run(cfg, run_dir=tmp_path)
    assert not any(k.startswith("rollout/") for r in read_metrics(tmp_path) for k in r)
