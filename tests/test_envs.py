"""Multi-turn environments (rlx/envs) and the episode loop (rlx/rollout/episodes.py): the envs' rules, the layout
of an episode in a batch, zero gradient on observation tokens, bad input ending an episode (not the run), the
config errors, and the one-turn case of the episode loop equal to the single-turn loop."""

from __future__ import annotations

import time

import pytest
import torch
from conftest import episode_runner, read_metrics, run_cli
from omegaconf import OmegaConf

import rlx
from rlx.envs.base import Env, EnvError, Episode, state_hash
from rlx.envs.calculator import CalculatorEpisode
from rlx.envs.guess import GuessEpisode
from rlx.envs.retry import RetryEpisode


# ---------------------------------------------------------------- the envs' rules (no model)
def test_calculator_call_result_answer_and_tool_off():
    ep = CalculatorEpisode({"prompt": "123*45=", "answer": "5535"}, tool=True)
    assert ep.state() == ()
    assert ep.observe("<calc>123*45</calc>") == "<r>5535</r>"
    assert ep.state() == ("5535",) and ep.tool_calls == 1
    assert ep.observe("5535") is None   # not a call: the answer
    off = CalculatorEpisode({"prompt": "123*45=", "answer": "5535"}, tool=False)
    assert off.observe("<calc>123*45</calc>") == "<r>?</r>"


@pytest.mark.parametrize("text", ["<calc>123*</calc>", "<calc>2**99999</calc>", "<calc>123*45"])
def test_calculator_malformed_call_raises_and_counts(text):
    ep = CalculatorEpisode({"prompt": "123*45=", "answer": "5535"}, tool=True)
    with pytest.raises(EnvError, match="malformed tool call"):
        ep.observe(text)
    assert ep.tool_errors == 1


def test_guess_feedback_and_recurring_states():
    a, b = (GuessEpisode({"prompt": "?1-15:", "answer": "11", "n": 15}) for _ in range(2))
    assert a.state() == b.state() == (15, 1, 15)
    assert a.observe("8") == ">" and b.observe("7") == ">"
    assert a.state() == (15, 9, 15) and b.state() == (15, 8, 15)
    assert b.observe("8") == ">" and b.state() == a.state()   # another history, the same interval: one anchor
    assert state_hash(a.state()) == state_hash(b.state()) != state_hash((15, 1, 15))
    assert a.observe("11") is None
    with pytest.raises(EnvError, match="integer"):
        b.observe("eleven")


def test_retry_feedback_and_discount():
    ep = RetryEpisode({"prompt": "2+2=", "answer": "4"}, feedback=" try again:", discount=0.9)
    assert ep.observe("5") == " try again:" and ep.observe("3") == " try again:"
    assert ep.observe("4") is None
    assert ep.reward_scale(3) == pytest.approx(0.81)


# ---------------------------------------------------------------- episodes with a real model
def test_episode_layout(guess_model):
    env, data, model, tok = guess_model
    torch.manual_seed(0)
    out = episode_runner(guess_model, max_new_tokens=4).run(data.train_batch(0, 8), n=4)
    assert out.completion_ids.shape[0] == 32 and out.turn.shape == out.completion_ids.shape
    assert (out.response_mask == (out.turn > 0)).all()
    assert ((out.turn_state != 0) == (out.turn > 0)).all()
    obs = out.attention.bool() & ~out.response_mask
    assert obs.any(), "no episode took a second turn"
    # every observation token is ">" or "<", and sits between two policy turns
    gt, lt = (tok(c, add_special_tokens=False)["input_ids"] for c in (">", "<"))
    assert set(out.completion_ids[obs].tolist()) <= set(gt + lt)
    for row in range(32):
        turns = out.turn[row][out.response_mask[row]]
        assert (turns.diff() >= 0).all() and torch.equal(turns.unique(), torch.arange(1, int(turns.max()) + 1))
    # the first turn's state is the same for every episode of a prompt (the whole range): an anchor state
    first = out.turn_state[out.turn == 1].view(-1)
    assert first.numel() > 0
    assert out.extra_metrics["episode/turns_mean"] > 1


def test_observation_tokens_get_zero_gradient(guess_model):
    """A real backward through the GRPO loss (with its KL term) on an episode batch: the gradient reaching the
    log-probs of observation tokens is exactly zero, that of policy tokens is not."""
    from rlx.batch import LossInputs
    from rlx.models.logprobs import token_logprobs

    env, data, model, tok = guess_model
    torch.manual_seed(1)
    out = episode_runner(guess_model, max_new_tokens=4).run(data.train_batch(0, 4), n=4)
    ids = torch.cat([out.prompt_ids, out.completion_ids], 1)
    am = torch.cat([out.prompt_mask, out.attention], 1)
    mask, T = out.response_mask, out.completion_ids.shape[1]
    obs = out.attention.bool() & ~mask
    assert obs.any()
    algo = rlx.build("algo", rlx.compose(["algo.beta=0.1"]).algo)
    logp, _ = token_logprobs(model, ids, am, T)
    logp.retain_grad()
    adv = torch.randn(mask.shape)   # non-zero advantages on every column, observations included
    mb = LossInputs(old_logp=logp.detach(), advantages=adv, response_mask=mask, rewards=torch.zeros(len(mask)),
                    num_tokens=mask.sum(), num_seqs=len(mask), max_len=T, ref_logp=logp.detach() - 0.1)
    loss, _ = algo.loss(logp, mb)
    model.zero_grad()
    loss.backward()
    assert torch.equal(logp.grad[obs], torch.zeros(int(obs.sum())))
    assert (logp.grad[mask] != 0).float().mean() > 0.9
    model.zero_grad()


class _Scripted(Env):
    """An env whose episodes answer every turn with ``obs`` (after ``delay`` seconds) or raise ``error``."""

    def __init__(self, obs="!", delay=0.0, error=None, **limits):
        cfg = dict(name="scripted", max_turns=3, max_context_tokens=120, tool_timeout_s=10.0)
        super().__init__(OmegaConf.create({**cfg, **limits}))
        self.obs, self.delay, self.error = obs, delay, error

    def start(self, record):
        env = self

        class _Ep(Episode):
            def observe(self, text):
                time.sleep(env.delay)
                if env.error is not None:
                    raise env.error
                return env.obs

        return _Ep(record)


@pytest.mark.parametrize("case", ["raises", "timeout", "context"])
def test_bad_input_ends_the_episode_not_the_run(guess_model, case):
    _, data, model, tok = guess_model
    env = {"raises": _Scripted(error=ValueError("the env broke")),
           "timeout": _Scripted(delay=3.0, tool_timeout_s=0.2),
           "context": _Scripted(obs="x" * 80, max_context_tokens=60)}[case]
    torch.manual_seed(2)
    t0 = time.perf_counter()
    out = episode_runner(guess_model, max_new_tokens=4, env=env).run(data.train_batch(0, 4), n=2)
    ended_by_eos = int((~out.truncated).sum())   # episodes whose first turn ended with EOS reached the env
    assert ended_by_eos > 0
    assert out.extra_metrics["env/failures"] == ended_by_eos
    assert out.extra_metrics["episode/turns_mean"] == 1.0   # no failed episode took another turn
    assert time.perf_counter() - t0 < 30


def test_bad_env_values_exit_2_before_loading(tmp_path):
    for args, needle in ((["env=calculatr"], "did you mean 'env=calculator'"),
                         (["env=guess", "env.max_turns=-1"], "env.max_turns=-1: must be >= 1"),
                         (["env=guess", "algo=dpo"], "a multi-turn env needs an online algorithm")):
        proc = run_cli(args, run_dir=tmp_path / args[-1].replace("=", "_"), check=False, timeout=60)
        assert proc.returncode == 2, (args, proc.stderr[-500:])
        assert needle in proc.stderr
        assert "[rlx] model" not in proc.stdout + proc.stderr


def test_one_turn_episode_loop_equals_single_turn_loop(tmp_path, warm_tiny):
    """env=retry with one turn runs the episode loop (generate from ids, the episode layout, the reward from the
    final turn); with the same model it must give every single-turn metric of env=single (perf/* aside)."""
    common = ["trainer.steps=3", "trainer.eval_every=3", "trainer.progress=false", "hardware.num_threads=1",
              "data.prompts_per_step=8", "data.eval_size=50", f"model.path={warm_tiny}"]
    run_cli(common + ["env=single"], run_dir=tmp_path / "single")
    run_cli(common + ["env=retry", "env.max_turns=1"], run_dir=tmp_path / "episodes")
    a, b = read_metrics(tmp_path / "single"), read_metrics(tmp_path / "episodes")
    assert len(a) == len(b) == 4
    extra = ("perf/", "episode/", "tool/", "env/")
    for ra, rb in zip(a, b):
        assert {k for k in rb if not k.startswith(extra)} == {k for k in ra if not k.startswith("perf/")}
        for k, v in ra.items():
            if not k.startswith("perf/"):
                assert rb[k] == v, (k, v, rb[k])
    assert any(r.get("reward/mean", 0) > 0 for r in b)


@pytest.mark.slow
def test_every_online_algorithm_runs_on_a_multi_turn_env(tmp_path):
    """Every online preset, unchanged, trains a step on env=guess through the public API (rlx.run): the episode
    metrics are logged and nothing in an algorithm's file had to know about turns."""
    from rlx.config import group_choices

    online = [a for a in group_choices("algo") if rlx.build("algo", rlx.compose([f"algo={a}"]).algo).trainer == "online"]
    assert {"grpo", "gigpo", "tree_grpo", "ppo", "reinforce_pp", "remax"} <= set(online)
    # GHPO hints single-turn worked solutions, SPIN pairs a single-turn demonstration with a sample: both refuse an
    # env with exit 2 (tests/test_ghpo.py, tests/test_spin.py)
    for algo in set(online) - {"ghpo", "spin"}:
        cfg = rlx.compose([f"algo={algo}", "env=guess", "trainer.steps=1", "data.prompts_per_step=2", "data.sizes=[7]",
                           "model.init=random", "trainer.progress=false", "trainer.eval_every=0",
                           "hardware.num_threads=1"])
        rlx.run(cfg, run_dir=tmp_path / algo)
        row = read_metrics(tmp_path / algo)[1]
        assert row["episode/turns_mean"] >= 1 and "env/failures" in row, algo
        assert "eval/guess/accuracy" in row, algo
