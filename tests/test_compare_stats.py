"""The statistics of ``python -m rlx.compare`` (rlx/report/stats.py, seedstats.py): bootstrap CIs and
Welch's test with known answers, the verdicts on synthetic sweeps with a known shift and with none,
the eval-set size and binomial SE, AUC and steps-to-threshold, the tokens axis, why a panel is flat,
and ``--json``. Synthetic run dirs only (config.yaml, metrics.jsonl, summary.json as real runs write)."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import yaml

from rlx.report import compare, seedstats, stats
from rlx.report.axes import x_axes
from rlx.report.nosignal import reasons

Z = 1.959963984540054 + 0.8416212335729143   # z_0.975 + z_0.8


def write_run(d, algo: str, seed: int, final: float, *, eval_size=400, steps=20, eval_every=10, start=0.2,
              reward_shift=0.0, beta=0.04, epochs=1, mini=None, clip=0.0):
    """A run dir as ``python -m rlx`` leaves it: eval at 0, 10, 20 rising linearly to ``final``."""
    d.mkdir(parents=True)
    cfg = {"seed": seed, "algo": {"name": algo, "group_size": 4, "beta": beta},
           "trainer": {"steps": steps, "eval_every": eval_every, "update_epochs": epochs, "mini_batch_size": mini},
           "data": {"name": "arithmetic", "prompts_per_step": 2, "eval_size": eval_size}}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    rows = []
    for s in range(steps + 1):
        row = {"step": s}
        if s % eval_every == 0:
            acc = final if s == steps else start + (final - start) * s / steps
            row.update({"eval/arithmetic/accuracy": acc, "eval/arithmetic/failures": 0.0})
        if s:
            row.update({"reward/mean": 0.3 + reward_shift + 0.001 * seed, "response_length/mean": 4.0,
                        "policy/clip_frac": clip, "perf/step_s": 0.5})
            if beta:
                row["policy/kl_ref"] = 0.01 * s
        rows.append(row)
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "summary.json").write_text(json.dumps({"algo": algo, "steps": steps, "wall_s": 10.0,
                                                "final": {"eval/arithmetic/accuracy": rows[-1]["eval/arithmetic/accuracy"]}}))


def sweep(tmp_path, finals: dict, **kw):
    i = 0
    for algo, accs in finals.items():      # job numbers as a sweep's: the first algorithm's runs first
        for seed, acc in enumerate(accs):
            write_run(tmp_path / "sweep" / f"{i}_{algo}_s{seed}", algo, seed, acc, **kw.get(algo, {}))
            i += 1
    runs = [compare.load_run_dir(d) for d in compare.find_run_dirs([tmp_path / "sweep"])]
    return compare.group_runs(runs, ["algo"])


def metric(s: dict, mid: str) -> dict:
    return next(m for m in s["metrics"] if m["id"] == mid)


def test_welch_p_value_by_hand():
    # a = 1, 2, 3 and b = 4, 5, 6: means 2 and 5, variances 1 and 1, so s.e. = sqrt(1/3 + 1/3) = sqrt(2/3) and
    # t = -3 / sqrt(2/3) = -3.6742 (t² = 13.5); Welch df = (2/3)² / ((1/3)²/2 + (1/3)²/2) = 4. For 4 degrees of
    # freedom the t distribution has a closed form: with sin²θ = t²/(4 + t²) = 27/35 and cos²θ = 8/35,
    # P(|T| ≥ |t|) = 1 - sinθ (1 + cos²θ / 2) = 1 - sqrt(27/35) · 39/35 = 0.021312.
    w = stats.welch([1, 2, 3], [4, 5, 6])
    assert w["t"] == pytest.approx(-3 / math.sqrt(2 / 3)) and w["df"] == pytest.approx(4.0)
    assert w["p"] == pytest.approx(1 - math.sqrt(27 / 35) * 39 / 35, rel=1e-9)
    assert w["p"] == pytest.approx(0.021312, abs=1e-6)
    # 2 degrees of freedom: P(|T| ≥ t) = 1 - t / sqrt(2 + t²); t = 1 -> 1 - 1/sqrt(3) = 0.42265
    assert stats.t_two_sided_p(1.0, 2) == pytest.approx(1 - 1 / math.sqrt(3), rel=1e-12)
    assert stats.t_two_sided_p(0.0, 7) == pytest.approx(1.0)
    # unequal spreads and sizes: a = 0, 2 (var 2), b = 1, 1, 4 (var 3): se² = 1 + 1 = 2, t = -1 / sqrt(2),
    # df = 2² / (1²/1 + 1²/2) = 8/3
    w = stats.welch([0, 2], [1, 1, 4])
    assert w["t"] == pytest.approx(-1 / math.sqrt(2)) and w["df"] == pytest.approx(8 / 3)
    assert stats.welch([1, 1], [1, 1])["p"] == 1.0 and stats.welch([1, 1], [2, 2])["p"] == 0.0
    assert stats.welch([1], [1, 2]) is None


def test_welch_matches_scipy():
    sp = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    for _ in range(20):
        a, b = rng.normal(0, 1, rng.integers(2, 9)), rng.normal(0.5, 2, rng.integers(2, 9))
        ref = sp.ttest_ind(a, b, equal_var=False)
        w = stats.welch(a, b)
        assert w["t"] == pytest.approx(ref.statistic, rel=1e-9) and w["p"] == pytest.approx(ref.pvalue, rel=1e-7)
    for q, df in ((0.975, 30), (0.8, 32), (0.975, 1.7)):
        assert stats.t_quantile(q, df) == pytest.approx(sp.t.ppf(q, df), rel=1e-9)


def test_bootstrap_ci_known_answers():
    # [0, 0, 0, 1]: a resample's mean is k/4 with k ~ Binomial(4, 1/4); P(k = 0) = 0.316 > 0.025, so the 2.5%
    # quantile is 0; P(k <= 2) = 0.949 < 0.975 <= P(k <= 3) = 0.996, so the 97.5% quantile is 3/4
    assert stats.bootstrap_ci([0, 0, 0, 1]) == (0.0, 0.75)
    assert stats.bootstrap_ci([0.3] * 5) == (0.3, 0.3) and stats.bootstrap_ci([0.3]) is None
    # many seeds: the percentile interval is close to mean ± 1.96 sd/sqrt(n) (the bootstrap's sd uses 1/n)
    x = np.random.default_rng(0).normal(1.0, 2.0, 200)
    lo, hi = stats.bootstrap_ci(x)
    half = 1.96 * x.std() / math.sqrt(len(x))
    assert (lo + hi) / 2 == pytest.approx(x.mean(), abs=0.1 * half)
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.1)
    assert stats.bootstrap_ci(x) == (lo, hi)                   # a fixed RNG seed: the report is reproducible
    d = stats.bootstrap_diff_ci([1.0, 1.0, 1.0], [0.0, 0.0])
    assert d == (1.0, 1.0)


def test_seeds_needed_and_binomial_se_by_hand():
    # s_a² = s_b² = 1 (0, 1, 2 and 1, 2, 3), δ = -1: normal approximation n = (1.95996 + 0.84162)² · 2 / 1 =
    # 15.70 -> 16; with Student's t at df = 2n - 2: n = 16 (df 30): (2.0423 + 0.8538)² · 2 = 16.77 > 16;
    # n = 17 (df 32): (2.0369 + 0.8531)² · 2 = 16.70 <= 17 -> 17
    assert math.ceil(Z * Z * 2) == 16
    assert stats.seeds_needed([0, 1, 2], [1, 2, 3]) == 17
    assert stats.t_quantile(0.975, 4) == pytest.approx(2.776445, abs=1e-6)   # the t table
    # df 2: F(t) = 1/2 + t / (2 sqrt(2 + t²)), so t_0.8 = 0.6 sqrt(2) / sqrt(1 - 0.6²) = 1.5 / sqrt(2)
    assert stats.t_quantile(0.8, 2) == pytest.approx(1.5 / math.sqrt(2), rel=1e-9)
    assert stats.seeds_needed([1, 2, 3], [1, 2, 3]) is None
    assert stats.binomial_se(0.25, 400) == pytest.approx(math.sqrt(0.25 * 0.75 / 400))   # 0.021651


def test_a_five_sigma_shift_is_better_and_no_shift_is_not_distinguishable():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.35, 0.01, 5), rng.normal(0.30, 0.01, 5)   # 5 seeds each, shift 5 sigma
    c = stats.compare(a, b)
    assert c["verdict"] == "better" and c["ci"][0] > 0 and c["p"] < 0.001
    assert stats.compare(b, a)["verdict"] == "worse"
    assert stats.compare(a, b, higher_is_better=False)["verdict"] == "worse"   # e.g. steps to a threshold
    # one distribution, 100 seeded trials of 5 vs 5 seeds: the rule (CI excludes 0 and p < 0.05) calls
    # at most about 5% of them distinguishable
    verdicts = []
    for trial in range(100):
        r = np.random.default_rng(1000 + trial)
        verdicts.append(stats.compare(r.normal(0.3, 0.02, 5), r.normal(0.3, 0.02, 5))["verdict"])
    same = sum(v == "not distinguishable with 5 seeds" for v in verdicts)
    assert same >= 90, verdicts


def test_sweep_with_known_shift_end_to_end(tmp_path):
    """Run dirs, 5 seeds per algorithm: dapo's final accuracy is grpo's + 5 sigma; its reward is equal."""
    rnd = random.Random(0)
    grpo = [round(0.30 + rnd.gauss(0, 0.01), 3) for _ in range(5)]
    dapo = [round(0.35 + rnd.gauss(0, 0.01), 3) for _ in range(5)]
    groups = sweep(tmp_path, {"grpo": grpo, "dapo": dapo})
    s = seedstats.build_stats(groups, threshold=0.3)
    assert s["baseline"] == "grpo"
    # 5 seeds agree, but a shift of 0.05 is inside the eval set's own noise at n = 400:
    # 1.96 · sqrt(0.3 · 0.7 / 400 + 0.35 · 0.65 / 400) = 0.065
    assert len(s["warnings"]) == 1 and "is better over seeds, but Δ = +0.050 is within ±0.065" in s["warnings"][0]
    final = metric(s, "eval/arithmetic/accuracy@final")
    g = final["groups"]["grpo"]
    assert g["n"] == 5 and g["mean"] == pytest.approx(sum(grpo) / 5)
    assert g["ci"] == stats.bootstrap_ci(grpo) and g["ci"][0] < g["mean"] < g["ci"][1]
    assert g["eval_n"] == (400, 400)                                  # data.eval_size, no failures
    assert g["runs"][0]["se"] == pytest.approx(math.sqrt(grpo[0] * (1 - grpo[0]) / 400))
    vs = final["vs_baseline"]["dapo"]
    assert vs["verdict"] == "better" and vs["diff"] == pytest.approx((sum(dapo) - sum(grpo)) / 5)
    assert vs["p"] == pytest.approx(stats.welch(dapo, grpo)["p"])
    # AUC of a straight line from 0.2 to f over the steps: (0.2 + f) / 2
    assert metric(s, "eval/arithmetic/accuracy@auc")["groups"]["dapo"]["runs"][0]["value"] == pytest.approx(
        (0.2 + dapo[0]) / 2)
    # equal rewards but for 0.001 per seed: not distinguishable, with a suggestion of how many seeds
    rew = metric(s, "reward/mean@mean")["vs_baseline"]["dapo"]
    assert rew["verdict"] == "not distinguishable with 5 seeds" and rew["p"] == pytest.approx(1.0)
    # steps to 0.3 (lower is better): grpo runs below 0.3 at step 20 count as 20 (a lower bound)
    st = metric(s, "eval/arithmetic/accuracy@steps_to")
    assert st["higher_is_better"] is False
    assert [r["value"] for r in st["groups"]["grpo"]["runs"]] == [20.0] * 5
    assert st["groups"]["grpo"]["reached"] == sum(f >= 0.3 for f in grpo)
    # --baseline: the other way round
    s2 = seedstats.build_stats(groups, threshold=0.3, baseline="dapo")
    assert metric(s2, "eval/arithmetic/accuracy@final")["vs_baseline"]["grpo"]["verdict"] == "worse"
    with pytest.raises(SystemExit, match="not a group"):
        seedstats.build_stats(groups, threshold=0.3, baseline="ppo")


def test_few_seeds_warn_and_suggest(tmp_path):
    groups = sweep(tmp_path, {"grpo": [0.30, 0.32], "dapo": [0.31, 0.34]})
    s = seedstats.build_stats(groups, threshold=0.5)
    assert [w.split(":")[0] for w in s["warnings"]] == ["grpo", "dapo"]       # n < 3 seeds
    c = metric(s, "eval/arithmetic/accuracy@final")["vs_baseline"]["dapo"]
    # s² = 0.0002 and 0.00045, δ = 0.015: normal n = 7.849 · 0.00065 / 0.000225 = 22.7 -> 23; with t:
    # n = 23 (df 44): (2.0154 + 0.8502)² · 2.889 = 23.72 > 23; n = 24 (df 46): (2.0129 + 0.8499)² · 2.889 = 23.68
    assert math.ceil(Z * Z * (0.0002 + 0.00045) / 0.015 ** 2) == 23
    assert c["seeds_needed"] == 24
    assert any("about 24 seeds per group" in x for x in s["suggestions"])
    md = seedstats.markdown(s)
    assert "| final eval/arithmetic/accuracy | dapo | +0.015 |" in md and "not distinguishable with 2 seeds" in md


def test_eval_size_from_config_less_failures(tmp_path):
    write_run(tmp_path / "r", "grpo", 0, 0.5, eval_size=200)
    run = compare.load_run_dir(tmp_path / "r")
    assert seedstats.eval_size(run) == 200
    assert seedstats.eval_n(run, "eval/arithmetic/accuracy", {"eval/arithmetic/failures": 8.0}) == 192
    run.cfg.pop("data.eval_size")
    assert seedstats.eval_size(run) is None
    run.summary["eval_size"] = 300
    assert seedstats.eval_size(run) == 300


def test_tokens_axis_and_flat_panels_by_hand(tmp_path):
    groups = sweep(tmp_path, {"grpo": [0.3], "dapo": [0.3], "ppo": [0.3]},
                   dapo={"beta": 0.0, "mini": 2, "clip": 0.0}, ppo={"epochs": 2, "clip": 0.0})
    x = x_axes(groups)
    # 2 prompts x 4 completions x 4.0 tokens = 32 response tokens a step
    assert x["tokens"]["grpo"] == {s: 32.0 * s for s in range(21)}
    assert x["samples"]["grpo"][20] == 160.0
    run = groups["grpo"][0]
    run.rows = [r for r in run.rows if r["step"] % 5 == 0]          # logged every 5 steps: 5 steps each
    assert x_axes({"g": [run]})["tokens"]["g"] == {s: 32.0 * s for s in range(0, 21, 5)}
    why = reasons(groups, ["policy/clip_frac", "policy/kl_ref", "reward/mean"])
    # grpo: 1 epoch over the whole batch (mini_batch_size null) -> strictly on-policy; dapo: mini-batch 2 of
    # 8 samples is not, ppo: 2 epochs is not; plain "all 0" then
    assert why["policy/clip_frac"]["grpo"].startswith("all 0: the update is strictly on-policy")
    assert why["policy/clip_frac"]["dapo"] == why["policy/clip_frac"]["ppo"] == "all 0"
    assert why["policy/kl_ref"] == {"dapo": "not logged: algo.beta = 0, no reference model"}
    assert "reward/mean" not in why


def test_cli_json_and_markdown(tmp_path):
    sweep(tmp_path, {"grpo": [0.30, 0.31, 0.29], "dapo": [0.40, 0.41, 0.39]})
    out, js = tmp_path / "report", tmp_path / "stats" / "s.json"
    assert compare.main([str(tmp_path / "sweep"), "--by", "algo", "--out", str(out), "--json", str(js)]) == 0
    s = json.loads(js.read_text())
    assert s["baseline"] == "grpo" and s["bootstrap"] == {"resamples": 2000, "rng_seed": 0, "level": 0.95,
                                                          "kind": "percentile"}
    final = metric(s, "eval/arithmetic/accuracy@final")
    assert final["vs_baseline"]["dapo"]["verdict"] == "better" and final["groups"]["dapo"]["eval_n"] == [400, 400]
    md = (out / "report.md").read_text()
    assert "## Statistics over seeds" in md and "| metric | group | seeds | mean | 95% CI |" in md
    assert "| final eval/arithmetic/accuracy | dapo | +0.100 |" in md and "| better |" in md
    html = (out / "report.html").read_text()
    assert "<th>95% CI of Δ</th>" in html and "Against the baseline, grpo" in html
    # the same numbers again: a reproducible report
    assert compare.main([str(tmp_path / "sweep"), "--by", "algo", "--out", str(out), "--json", str(js)]) == 0
    assert json.loads(js.read_text()) == s
