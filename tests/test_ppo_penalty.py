"""PPO-penalty (rlx/algos/ppo_penalty.py): the loss and its gradient by hand, the adaptive β over three steps driven
through ``loss`` and ``advantages`` as the online loop calls them, β and the pending measurement through
state_dict / load_state_dict, and the preset's keys and its on-policy config error."""

import io
import math

import pytest
import torch
from conftest import algo_batch, loss_inputs

import rlx
from rlx.algos.ppo import ppo_policy_loss
from rlx.algos.ppo_penalty import adapt_kl_coef, kl_penalty_loss
from rlx.config import ConfigError, check_cli

# one response of two tokens whose ratios are r = 2 and 0.5, advantages +1 and −1
LOGP = torch.tensor([[math.log(2.0), -math.log(2.0)]])
OLD = torch.zeros(1, 2)
ADV = torch.tensor([[1.0, -1.0]])
MASK = torch.ones(1, 2, dtype=torch.bool)


def algo(*overrides):
    return rlx.build("algo", rlx.compose(["algo=ppo_penalty", *overrides]).algo)


def test_loss_and_gradient_by_hand():
    logp = LOGP.clone().requires_grad_(True)
    loss, m = kl_penalty_loss(logp, OLD, ADV, MASK, kl_coef=1.0, loss_agg_mode="token_mean")
    # surrogate −r·A = [−2, +0.5] -> token mean −0.75
    # KL_t = (r − 1) − ln r = [1 − 0.693147, −0.5 + 0.693147] = [0.306853, 0.193147] -> mean 0.25 (the ln 2 cancel)
    # β = 1: −0.75 + 1·0.25 = −0.5
    assert loss.item() == pytest.approx(-0.5, abs=1e-6)
    assert m["loss/policy"].item() == pytest.approx(-0.75) and m["policy/kl_old"].item() == pytest.approx(0.25)
    loss.backward()
    # d/dlogp [−r·A + β((r − 1) − ln r)] = −r·A + β·(r − 1), over 2 tokens:
    #   t1: (−2 + 1·1)/2 = −0.5;   t2: (0.5 + 1·(−0.5))/2 = 0
    assert logp.grad.flatten().tolist() == pytest.approx([-0.5, 0.0], abs=1e-6)
    # β = 2: −0.75 + 2·0.25 = −0.25
    assert kl_penalty_loss(LOGP, OLD, ADV, MASK, kl_coef=2.0, loss_agg_mode="token_mean")[0].item() == \
        pytest.approx(-0.25, abs=1e-6)
    # no clip: PPO's (ε = 0.2) clips both tokens (r = 2 > 1.2 with A > 0, r = 0.5 < 0.8 with A < 0) -> no gradient
    logp = LOGP.clone().requires_grad_(True)
    ppo_policy_loss(logp, OLD, ADV, MASK, eps_low=0.2, eps_high=0.2, loss_agg_mode="token_mean")[0].backward()
    assert logp.grad.abs().max().item() == 0.0


def test_adaptive_rule():
    # d_targ = 0.01: β/2 below 0.01/1.5 = 0.00667, β·2 above 0.015, unchanged in between (the bounds included)
    assert adapt_kl_coef(1.0, 0.003, 0.01) == 0.5
    assert adapt_kl_coef(1.0, 0.012, 0.01) == 1.0
    assert adapt_kl_coef(1.0, 0.01 / 1.5, 0.01) == 1.0 and adapt_kl_coef(1.0, 0.01 * 1.5, 0.01) == 1.0
    assert adapt_kl_coef(1.0, 0.03, 0.01) == 2.0


def _batch():
    """The batch ``advantages`` reads (β = 0: no reference log-probs needed)."""
    return algo_batch(torch.tensor([1.0]), MASK.clone(), old_logp=OLD.clone(), values=torch.zeros(1, 2))


def test_beta_schedule_over_three_steps():
    a = algo("algo.beta=0.0", "algo.kl_target=0.1")   # d_targ = 0.1: the band is [0.0667, 0.15]
    mb = loss_inputs(OLD, ADV, MASK)
    # step 1: β = init_kl_coef = 1, nothing measured yet; its update sees the hand example's KL, mean 0.25
    _, m = a.advantages(_batch())
    assert m["ppo_penalty/kl_coef"] == 1.0 and "ppo_penalty/kl_measured" not in m
    a.loss(LOGP, mb)
    # step 2: d = 0.25 > 0.15 -> β = 2, and the loss uses it: −0.75 + 2·0.25 = −0.25. Two micro-batches this time,
    # 2 tokens each, KL means 0.25 and 0 (on-policy, logp = old) -> d = (0.5 + 0)/4 = 0.125
    _, m = a.advantages(_batch())
    assert (m["ppo_penalty/kl_coef"], m["ppo_penalty/kl_measured"]) == (2.0, pytest.approx(0.25))
    assert a.loss(LOGP, mb)[0].item() == pytest.approx(-0.25, abs=1e-6)
    a.loss(OLD, mb)
    # step 3: 0.0667 <= d = 0.125 <= 0.15 -> β stays 2; its update is on-policy only: d = 0
    _, m = a.advantages(_batch())
    assert (m["ppo_penalty/kl_coef"], m["ppo_penalty/kl_measured"]) == (2.0, pytest.approx(0.125))
    a.loss(OLD, mb)
    # step 4: d = 0 < 0.0667 -> β = 1
    _, m = a.advantages(_batch())
    assert (m["ppo_penalty/kl_coef"], m["ppo_penalty/kl_measured"]) == (1.0, 0.0)
    # a step without a policy update (critic warm-up) measures nothing and leaves β
    _, m = a.advantages(_batch())
    assert m["ppo_penalty/kl_coef"] == 1.0 and "ppo_penalty/kl_measured" not in m
    # a non-finite forward (the trainer's guard skips its step) is not measured
    a.loss(LOGP * math.nan, mb)
    assert "ppo_penalty/kl_measured" not in a.advantages(_batch())[1]


def test_beta_and_the_pending_measurement_survive_state_dict():
    a = algo("algo.beta=0.0", "algo.kl_target=0.1")
    mb = loss_inputs(OLD, ADV, MASK)
    a.advantages(_batch())
    a.loss(LOGP, mb)
    a.advantages(_batch())   # d = 0.25 -> β = 2
    a.loss(LOGP, mb)         # this step's update: Σ KL_t = 0.5 over 2 tokens, pending until the next step
    state = a.state_dict()
    assert state["kl_penalty"] == {"kl_coef": 2.0, "kl_sum": pytest.approx(0.5), "n_tokens": 2.0}
    assert "kl_ctl" in state   # PPO's reward-KL coefficient is saved as before
    buf = io.BytesIO()   # through the checkpoint's serialisation (loaded with weights_only)
    torch.save(state, buf)
    buf.seek(0)
    b = algo("algo.beta=0.0", "algo.kl_target=0.1")
    b.load_state_dict(torch.load(buf, weights_only=True))
    assert b.penalty.value == 2.0
    # the resumed object moves β as the uninterrupted one: d = 0.25 > 0.15 -> β = 4
    (_, ma), (_, mb_) = a.advantages(_batch()), b.advantages(_batch())
    assert ma["ppo_penalty/kl_coef"] == mb_["ppo_penalty/kl_coef"] == 4.0
    assert ma["ppo_penalty/kl_measured"] == mb_["ppo_penalty/kl_measured"] == pytest.approx(0.25)
    # without the state: β = 1 and no measurement
    _, mc = algo("algo.beta=0.0", "algo.kl_target=0.1").advantages(_batch())
    assert mc["ppo_penalty/kl_coef"] == 1.0 and "ppo_penalty/kl_measured" not in mc


def test_preset_builds_and_checks_its_keys():
    a = algo()
    assert (a.init_kl_coef, a.kl_target, a.beta, a.loss_agg_mode) == (1.0, 0.01, 0.05, "token_mean")
    assert a.requires == {"old_logp", "values", "ref_logp"}   # critic; the reference for the reward's KL (β > 0)
    assert a.kl_ctl.adaptive is False   # the reward's KL coefficient is fixed
    with pytest.raises(ConfigError, match="did you mean 'algo.kl_target'"):
        rlx.compose(["algo=ppo_penalty", "algo.kl_targt=1"])
    with pytest.raises(ConfigError, match="unknown config key 'algo.eps_high'"):   # no clip: not a key here
        rlx.compose(["algo=ppo_penalty", "algo.eps_high=0.2"])
    with pytest.raises(ConfigError, match="algo.init_kl_coef=0.0"):
        algo("algo.init_kl_coef=0.0")
    with pytest.raises(ConfigError, match="algo.kl_target=0.0"):
        algo("algo.kl_target=0.0")


def test_an_on_policy_update_is_a_config_error():
    check_cli(["algo=ppo_penalty"])   # the preset: 2 epochs
    with pytest.raises(ConfigError, match="trainer.update_epochs=1"):
        check_cli(["algo=ppo_penalty", "trainer.update_epochs=1"])
    check_cli(["algo=ppo_penalty", "trainer.update_epochs=1", "trainer.mini_batch_size=8"])   # 4 mini-batches of 32
