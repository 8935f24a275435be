"""PPO (GAE, KL-in-reward placement, value clipping), reward-model training (Bradley–Terry on pairs
and K = 3 ranks), VAPO's length-adaptive λ, and the RLHF pipeline, on examples a reader can check by hand."""

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import FAST, algo_batch, read_metrics

import rlx
from rlx.algos.ppo import PPO, clipped_value_loss, explained_variance, gae
from rlx.algos.rm import bradley_terry_loss
from rlx.algos.vapo import VAPO, length_adaptive_lambda, positive_ntp_loss

T_, F_ = True, False


def close(x, expected, atol=1e-6):
    torch.testing.assert_close(x.float(), torch.tensor(expected, dtype=torch.float32), atol=atol, rtol=0)


# ---------------------------------------------------------------- GAE


def test_gae_hand_computed():
    # row 0: r = [0, 0, 1], V = [0.5, 0.2, 0.4], γ = 1, λ = 0.5, V after the last token = 0
    #   t=2: δ = 1 + 0 − 0.4 = 0.6                A = 0.6
    #   t=1: δ = 0 + 0.4 − 0.2 = 0.2               A = 0.2 + 0.5·0.6 = 0.5
    #   t=0: δ = 0 + 0.2 − 0.5 = −0.3              A = −0.3 + 0.5·0.5 = −0.05
    #   returns = A + V = [0.45, 0.7, 1.0]
    # row 1: two valid tokens, then padding with garbage reward/value that must not leak in
    #   t=1: δ = 2 + 0 − 1 = 1, A = 1;  t=0: δ = 0 + 1 − 1 = 0, A = 0 + 0.5·1 = 0.5;  pad: A = 0, R = 0
    r = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 7.0]])
    v = torch.tensor([[0.5, 0.2, 0.4], [1.0, 1.0, 9.0]])
    mask = torch.tensor([[T_, T_, T_], [T_, T_, F_]])
    adv, ret = gae(r, v, mask, gamma=1.0, lam=0.5)
    close(adv, [[-0.05, 0.5, 0.6], [0.5, 1.0, 0.0]])
    close(ret, [[0.45, 0.7, 1.0], [1.5, 2.0, 0.0]])


def test_gae_discount():
    # γ = 0.5, λ = 1, V = 0: A_t = Σ_l γ^l r_{t+l}: r = [1, 0, 4] -> A = [1 + 0.25·4, 0.5·4, 4] = [2, 2, 4]
    adv, _ = gae(torch.tensor([[1.0, 0.0, 4.0]]), torch.zeros(1, 3), torch.ones(1, 3, dtype=torch.bool),
                 gamma=0.5, lam=1.0)
    close(adv, [[2.0, 2.0, 4.0]])


def gae_loop(r, v, mask, gamma, lam):
    """Reference: one row at a time, plain Python, over the valid prefix only."""
    adv = [[0.0] * len(row) for row in r]
    for i in range(len(r)):
        n = sum(mask[i])
        last = 0.0
        for t in reversed(range(n)):
            nv = v[i][t + 1] if t + 1 < n else 0.0
            last = r[i][t] + gamma * nv - v[i][t] + gamma * lam[i] * last
            adv[i][t] = last
    return adv


def test_gae_matches_loop_reference():
    g = torch.Generator().manual_seed(0)
    N, T = 6, 9
    r, v = torch.randn(N, T, generator=g), torch.randn(N, T, generator=g)
    lengths = torch.tensor([9, 1, 4, 7, 2, 5])
    mask = torch.arange(T) < lengths.unsqueeze(1)
    lam = torch.tensor([0.95, 0.0, 1.0, 0.5, 0.9, 0.3])   # per-row λ (VAPO's length-adaptive case)
    adv, ret = gae(r, v, mask, gamma=0.9, lam=lam)
    ref = gae_loop(r.tolist(), v.tolist(), mask.tolist(), 0.9, lam.tolist())
    close(adv, ref, atol=1e-5)
    assert torch.equal(ret[~mask], torch.zeros_like(ret[~mask]))
    # invariant: γ = λ = 1 makes R̂_t the plain return-to-go Σ_{s≥t} r_s whatever V is
    _, ret1 = gae(r, v, mask, gamma=1.0, lam=1.0)
    rtg = (r * mask).flip(1).cumsum(1).flip(1) * mask
    assert torch.allclose(ret1, rtg, atol=1e-5)


# ---------------------------------------------------------------- KL in the reward


def ppo_algo(**over):
    cfg = rlx.compose(["algo=ppo", *[f"algo.{k}={v}" for k, v in over.items()]]).algo
    return PPO.from_config(cfg)


def test_kl_reward_placement():
    # β = 0.1, k1 KL = log π_old − log π_ref. Row 0: 2 valid tokens + padding; score 2 at the last valid one.
    #   KL = [−1 − (−1.5), −2 − (−1)] = [0.5, −1]  ->  r = [−0.05, 0.1 + 2] = [−0.05, 2.1]; padding stays 0
    # Row 1: no valid token (an unscorable sample): all zeros, the score goes nowhere.
    algo = ppo_algo(beta=0.1)
    old = torch.tensor([[-1.0, -2.0, -5.0], [-1.0, -1.0, -1.0]])
    ref = torch.tensor([[-1.5, -1.0, -7.0], [-3.0, -3.0, -3.0]])
    mask = torch.tensor([[T_, T_, F_], [F_, F_, F_]])
    r, kl = algo.token_rewards(algo_batch(torch.tensor([2.0, 5.0]), mask, old_logp=old, ref_logp=ref))
    close(r, [[-0.05, 2.1, 0.0], [0.0, 0.0, 0.0]])
    assert kl[~mask].abs().sum() == 0


def test_adaptive_kl_moves_beta_and_round_trips():
    # Ziegler et al. §2.2: KL above target -> β grows by (1 + 0.2·n/horizon) at most
    algo = ppo_algo(beta=0.1, kl_ctrl="adaptive", kl_target=0.5, kl_horizon=100)
    mask = torch.ones(4, 2, dtype=torch.bool)
    batch = algo_batch(torch.zeros(4), mask, old_logp=torch.zeros(4, 2), ref_logp=torch.full((4, 2), -1.0),
                       values=torch.zeros(4, 2))
    _, metrics = algo.advantages(batch)   # seq KL = 2 > 0.5: error clipped to 0.2
    assert metrics["ppo/kl_seq"] == pytest.approx(2.0) and metrics["ppo/kl_coef"] == pytest.approx(0.1)
    assert algo.kl_ctl.value == pytest.approx(0.1 * (1 + 0.2 * 4 / 100))
    other = ppo_algo(beta=0.1, kl_ctrl="adaptive", kl_target=0.5, kl_horizon=100)
    other.load_state_dict(algo.state_dict())
    assert other.kl_ctl.value == algo.kl_ctl.value


# ---------------------------------------------------------------- value loss


def test_value_clipping_hand_computed():
    # V_old = 1, R̂ = 2, ε_v = 0.2, loss = ½·max((V − R̂)², (V_old + clip(V − V_old, ±0.2) − R̂)²)
    #   V = 1.5: unclipped 0.25, clipped (1.2 − 2)² = 0.64 -> ½·0.64 = 0.32, clipped branch active, no gradient
    #   V = 1.1: inside the range, both 0.81 -> 0.405, not clipped
    #   V = 0.5: unclipped 2.25, clipped (0.8 − 2)² = 1.44 -> 1.125, the unclipped branch (gradient V − R̂ = −1.5)
    values = torch.tensor([[1.5, 1.1, 0.5]], requires_grad=True)
    old, ret = torch.ones(1, 3), torch.full((1, 3), 2.0)
    loss, m = clipped_value_loss(values, old, ret, torch.ones(1, 3, dtype=torch.bool), cliprange_value=0.2,
                                 loss_agg_mode="token_mean")
    assert loss.item() == pytest.approx((0.32 + 0.405 + 1.125) / 3)
    assert m["value/clip_frac"].item() == pytest.approx(1 / 3)
    loss.backward()
    close(values.grad, [[0.0, (1.1 - 2) / 3, (0.5 - 2) / 3]])
    # unclipped and weighted: vf_coef·½·mean((V − R̂)²)
    loss, _ = clipped_value_loss(values.detach(), old, ret, torch.ones(1, 3, dtype=torch.bool), cliprange_value=None,
                                 vf_coef=0.5, loss_agg_mode="token_mean")
    assert loss.item() == pytest.approx(0.5 * 0.5 * (0.25 + 0.81 + 2.25) / 3)


def test_explained_variance():
    # V = R̂ -> 1; V = constant -> 0 (Var(R̂ − c) = Var(R̂))
    ret, mask = torch.tensor([[1.0, 2.0, 3.0]]), torch.ones(1, 3, dtype=torch.bool)
    assert explained_variance(ret, ret, mask) == pytest.approx(1.0)
    assert explained_variance(torch.full((1, 3), 7.0), ret, mask) == pytest.approx(0.0)


# ---------------------------------------------------------------- reward model loss


def test_rm_loss_one_pair():
    # s_w = 1, s_l = 0: −log σ(1) = log(1 + e^−1) = 0.31326; accuracy 1, margin 1
    loss, m = bradley_terry_loss(torch.tensor([[1.0, 0.0]]))
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    assert m["rm/accuracy"] == 1.0 and m["rm/margin"] == pytest.approx(1.0)
    # equal scores: loss log 2, accuracy ½ (a tie counts half)
    loss, m = bradley_terry_loss(torch.tensor([[0.3, 0.3]]))
    assert loss.item() == pytest.approx(math.log(2)) and m["rm/accuracy"] == 0.5


def test_rm_loss_three_ranks():
    # K = 3, scores [2, 0, 1] ranked best first: pairs (0,1) d = 2, (0,2) d = 1, (1,2) d = −1
    #   loss = (log(1+e^−2) + log(1+e^−1) + log(1+e^1)) / 3 = (0.12693 + 0.31326 + 1.31326) / 3 = 0.58448
    #   accuracy 2/3, margin (2 + 1 − 1)/3
    scores = torch.tensor([[2.0, 0.0, 1.0]])
    loss, m = bradley_terry_loss(scores)
    expected = sum(math.log(1 + math.exp(-d)) for d in (2, 1, -1)) / 3
    assert loss.item() == pytest.approx(expected, abs=1e-6) and expected == pytest.approx(0.58448, abs=1e-5)
    assert m["rm/accuracy"] == pytest.approx(2 / 3) and m["rm/margin"] == pytest.approx(2 / 3)
    # invariant: the K = 3 loss is the mean of the three K = 2 losses
    pairs = torch.tensor([[2.0, 0.0], [2.0, 1.0], [0.0, 1.0]])
    assert loss.item() == pytest.approx(bradley_terry_loss(pairs)[0].item(), abs=1e-6)
    # ranks from the data: the order [1, 2, 0] means column 2 is best; equal ranks form no pair
    loss_r, m_r = bradley_terry_loss(torch.tensor([[0.0, 1.0, 2.0]]), ranks=torch.tensor([[1, 2, 0]]))
    assert loss_r.item() == pytest.approx(expected, abs=1e-6)
    _, m_tie = bradley_terry_loss(torch.tensor([[2.0, 0.0, 1.0]]), ranks=torch.tensor([[0, 0, 1]]))
    assert m_tie["rm/pairs"] == 2.0


# ---------------------------------------------------------------- VAPO


def test_vapo_length_adaptive_lambda():
    # λ = 1 − 1/(α·ℓ), α = 0.05: ℓ = 100 -> 0.8, ℓ = 1000 -> 0.98, ℓ = 20 -> 0 (boundary), ℓ = 10 -> −1 -> clamped 0
    lam = length_adaptive_lambda(torch.tensor([100, 1000, 20, 10]), alpha=0.05)
    assert lam.tolist() == pytest.approx([0.8, 0.98, 0.0, 0.0])


def test_vapo_lambdas_are_not_the_notes_ones():
    # algorithms.md §7: the notes give policy λ = 1, value λ = 0.9; the papers use λ_critic = 1, actor < 1
    algo = VAPO.from_config(rlx.compose(["algo=vapo"]).algo)
    mask = torch.ones(2, 400, dtype=torch.bool)
    assert algo.critic_lambda(mask) == 1.0
    assert algo.actor_lambda(mask).tolist() == pytest.approx([1 - 1 / 20] * 2)


def test_vapo_ntp_on_positive_samples_only():
    # rewards [1, 0], threshold 1: only row 0's 2 tokens count; −(log ½ + log ¼)/3 valid tokens · μ
    logp = torch.log(torch.tensor([[0.5, 0.25], [0.1, 0.1]]))
    mask = torch.tensor([[T_, T_], [T_, F_]])
    loss, m = positive_ntp_loss(logp, mask, torch.tensor([1.0, 0.0]), positive_reward=1.0, mu=0.1)
    assert loss.item() == pytest.approx(0.1 * (math.log(2) + math.log(4)) / 3)
    assert m["vapo/positive_frac"].item() == 0.5


# ---------------------------------------------------------------- runs


SMALL_PREF = ["data.pref_eval_size=16", "data.eval_size=32", "data.dev_size=16", "hardware.num_threads=1"]


def test_rm_trains_saves_and_scores_as_a_reward(tmp_path):
    # algo=rm with K = 3 ranked responses, 2 steps, then reward=rm reads the saved model: its score of
    # (prompt, response) equals the trained model's own score of the same sequence (same encoding, same head)
    cfg = rlx.compose(["algo=rm", *FAST, *SMALL_PREF, "trainer.steps=2", "data.prompts_per_step=4",
                       "data.responses_per_prompt=3", "algo.likelihood_weight=1.0"])
    summary = rlx.run(cfg, tmp_path)
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert {"rm/accuracy", "rm/margin", "loss/total", "rm/train_accuracy"} <= rows[2].keys()
    info = json.loads((tmp_path / "model" / "rlx_value_model.json").read_text())
    assert summary["model_dir"] == str(tmp_path / "model") and info["score_std"] > 0

    from rlx.models.value_head import load_value_model
    from rlx.trainers.rm import encode_records

    record = rlx.build("data", cfg.data).pref_eval_set()[0]
    rcfg = rlx.compose(["reward=rm", f"reward.path={tmp_path}", "reward.terms.rm.normalize=false"]).reward
    fn = rlx.build("reward", rcfg)
    via_reward = fn([record["prompt"]] * 2, [record["chosen"], record["rejected"]])
    model, tok = load_value_model(tmp_path)
    ids, am, T, _, _ = encode_records(tok, [record], "cpu")
    with torch.no_grad():
        direct = model.score(ids, am, T).tolist()
    assert via_reward == pytest.approx(direct, abs=1e-5)


def _same_metrics(a, b):
    strip = [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in (a, b)]
    assert strip[0] == strip[1]


@pytest.mark.slow
def test_ppo_logs_critic_metrics_and_resumes_exactly(tmp_path):
    # 4 PPO steps in one go vs 2 steps + resume from the step-2 checkpoint: identical metrics (the critic's
    # weights and optimizer, the KL controller's β and the data cursor are all in the checkpoint)
    base = ["algo=ppo", *FAST, "data.prompts_per_step=8", "data.eval_size=32", "data.dev_size=16",
            "trainer.save_every=2", "algo.kl_ctrl=adaptive", "algo.kl_horizon=50", "hardware.num_threads=1"]
    rlx.run(rlx.compose([*base, "trainer.steps=4"]), tmp_path / "a")
    rlx.run(rlx.compose([*base, "trainer.steps=2"]), tmp_path / "b")
    rlx.run(rlx.compose([*base, "trainer.steps=4", "trainer.resume=true"]), tmp_path / "b")
    a, b = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert [r["step"] for r in b] == [0, 1, 2, 3, 4]
    for ra, rb in zip(a, b):   # b's first run evaluated at its last step (2); a did not
        _same_metrics(ra, {k: v for k, v in rb.items() if not (rb["step"] == 2 and k.startswith("eval/"))})
    row = a[3]
    for key in ("value/explained_var", "value/clip_frac", "loss/value", "loss/policy", "policy/kl_ref",
                "ppo/kl_coef", "adv/mean", "policy/clip_frac"):
        assert key in row and math.isfinite(row[key]), key
    assert a[3]["ppo/kl_coef"] != a[1]["ppo/kl_coef"]   # the adaptive controller moved β


@pytest.mark.slow
def test_vapo_and_ppo_ptx_run(tmp_path):
    # VAPO: 1 value-pretraining step (policy frozen: loss/total is the value loss), then a policy step;
    # PPO-ptx: the pretraining term is logged
    over = [*FAST, "data.prompts_per_step=4", "data.eval_size=32", "data.dev_size=16", "trainer.steps=2",
            "hardware.num_threads=1"]
    rlx.run(rlx.compose(["algo=vapo", "algo.critic_warmup=1", *over]), tmp_path / "vapo")
    rows = read_metrics(tmp_path / "vapo")
    assert "loss/policy" not in rows[1] and rows[1]["loss/total"] == rows[1]["loss/value"]
    assert "loss/policy" in rows[2] and "vapo/positive_frac" in rows[2]
    rlx.run(rlx.compose(["algo=ppo_ptx", *over]), tmp_path / "ptx")
    assert read_metrics(tmp_path / "ptx")[2]["ptx/nll"] > 0


HH = "/work/shared/data/hh-rlhf-harmless-base/test.jsonl.gz"


@pytest.mark.skipif(not Path(HH).exists(), reason="needs the HH-RLHF file of the shared data dir")
@pytest.mark.slow
def test_rm_on_hh_rlhf(tmp_path):
    # the same RM code on real preference data: a few steps with the tiny model
    cfg = rlx.compose(["algo=rm", "data=hh_rlhf", f"data.path={HH}", "data.max_rows=200", "data.eval_size=8",
                       *FAST, "trainer.steps=3", "data.prompts_per_step=4", "hardware.num_threads=1"])
    rlx.run(cfg, tmp_path)
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [0, 1, 2, 3] and all(math.isfinite(r["loss/total"]) for r in rows[1:])
    assert 0 <= rows[-1]["rm/accuracy"] <= 1
    # the loader on real rows: prompt ends at the last Assistant turn, responses are non-empty
    data = rlx.build("data", cfg.data)
    for r in data.train_batch(0, 50):
        assert r["prompt"].endswith("\n\nAssistant:") and all(x.strip() for x in r["responses"])


@pytest.mark.slow
def test_pipeline_composes_and_runs(tmp_path):
    # experiment=rlhf_pipeline composes; with 2 steps per stage it runs SFT -> RM -> PPO, each stage in its
    # own dir feeding the next, and compares SFT and PPO with the RM score and the true score side by side
    cfg = rlx.compose(["experiment=rlhf_pipeline", "model.init=random", "trainer.progress=false",
                       "hardware.num_threads=1"])
    stages = cfg.pipeline.stages
    assert list(stages) == ["sft", "rm", "ppo"] and stages.ppo.init_from == "sft" and stages.ppo.reward_from == "rm"
    for name, st in stages.items():
        small = ["trainer.steps=2", "trainer.eval_every=0", "data.eval_size=32", "data.dev_size=16"]
        small += ["data.pref_eval_size=16"] if name != "sft" else []   # sft: data=arithmetic_demos
        st.overrides = [o for o in st.overrides if not o.startswith(("trainer.steps=", "trainer.eval_every="))] + small
    cfg.pipeline.eval_size = 16
    summary = rlx.run(cfg, tmp_path)
    for name in ("sft", "rm", "ppo"):
        assert (tmp_path / name / "model" / "config.json").exists() and summary["stages"][name]["steps"] == 2
    ppo_cfg = (tmp_path / "ppo" / "config.yaml").read_text()
    assert f"path: {tmp_path / 'sft' / 'model'}" in ppo_cfg and f"path: {tmp_path / 'rm'}" in ppo_cfg
    for name in ("sft", "ppo"):
        row = summary["compare"][name]
        assert {"rm/mean", "true_score/mean", "correct/mean", "bare/mean", "score/mean"} <= row.keys()
        assert row["score/mean"] == row["true_score/mean"]
        # the hidden rule is its two features: true = correct − 0.5·(1 − bare), per answer and so in the mean
        assert row["true_score/mean"] == pytest.approx(row["correct/mean"] - 0.5 * (1 - row["bare/mean"]))
    assert json.loads((tmp_path / "summary.json").read_text())["compare"].keys() == {"sft", "ppo"}


def test_arithmetic_demos():
    # the SFT demonstrations: correct answers, a share verbose_frac of them with the filler; a pure function
    # of the cursor; eval prompts are data=arithmetic's
    data = rlx.build("data", rlx.compose(["data=arithmetic_demos", "data.verbose_frac=0.7"]).data)
    recs = data.train_batch(0, 1000)
    assert recs[:5] == data.train_batch(0, 5)
    verbose = [r["completion"] == r["answer"] + "!" for r in recs]
    assert all(v or r["completion"] == r["answer"] for v, r in zip(verbose, recs))
    assert 0.65 < sum(verbose) / len(verbose) < 0.75
    assert data.eval_set() == rlx.build("data", rlx.compose(["data=arithmetic"]).data).eval_set()
