"""The statistics of ``python -m rlx.compare``: "which group is better, by how much, and how sure?".

Over seeds (one number per run): the mean with a 95% percentile-bootstrap confidence interval
(``N_BOOT`` resamples from a generator seeded with ``SEED``, so a report is reproducible); against a
baseline group: the difference of means with a bootstrap CI (each group resampled on its own), Welch's
t-test (t, the Welch–Satterthwaite degrees of freedom and the two-sided p-value from Student's t,
computed here with ``math`` through the regularised incomplete beta function), and a verdict:

    distinguishable  <=>  the 95% CI of the difference excludes 0  AND  Welch p < 0.05

then "better" or "worse" by the sign of the difference and which way is good for the metric, else
"not distinguishable with n seeds". ``seeds_needed``: the seeds per group at which a two-sided
two-sample test at level 0.05 would detect the observed difference with 80% power, by the normal
approximation n = (z_0.975 + z_0.8)² · (s_a² + s_b²) / δ² (= 2 (z_0.975 + z_0.8)² σ² / δ² for equal
spreads; z_0.975 = 1.96, z_0.8 = 0.84, so n ≈ 15.7 σ² / δ²), rounded up, then raised until the same
formula with Student's t quantiles at df = 2n - 2 holds (for few seeds the normal one undercounts).
"""

from __future__ import annotations

import math
import statistics
from statistics import NormalDist

import numpy as np

N_BOOT = 2000
SEED = 0
LEVEL = 0.95
ALPHA = 0.05
POWER = 0.8
MIN_SEEDS = 3   # fewer seeds than this: a warning in the report
RULE = ("distinguishable when the 95% bootstrap CI of the difference excludes 0 and Welch's p < 0.05; "
        "then better/worse by the sign (lower is better for steps-to-threshold)")


def _clean(xs) -> list[float]:
    return [float(x) for x in xs if x is not None and math.isfinite(x)]


def bootstrap_ci(xs, level: float = LEVEL, n_boot: int = N_BOOT, seed: int = SEED) -> tuple[float, float] | None:
    """Percentile bootstrap CI of the mean of ``xs`` (None with fewer than 2 values)."""
    x = np.asarray(_clean(xs))
    if len(x) < 2:
        return None
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), (n_boot, len(x)))].mean(1)
    q = (1 - level) / 2
    return float(np.quantile(means, q)), float(np.quantile(means, 1 - q))


def bootstrap_diff_ci(a, b, level: float = LEVEL, n_boot: int = N_BOOT,
                      seed: int = SEED) -> tuple[float, float] | None:
    """Percentile bootstrap CI of mean(a) - mean(b), resampling each group on its own."""
    a, b = np.asarray(_clean(a)), np.asarray(_clean(b))
    if len(a) < 2 or len(b) < 2:
        return None
    rng = np.random.default_rng(seed)
    d = (a[rng.integers(0, len(a), (n_boot, len(a)))].mean(1) - b[rng.integers(0, len(b), (n_boot, len(b)))].mean(1))
    q = (1 - level) / 2
    return float(np.quantile(d, q)), float(np.quantile(d, 1 - q))


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz; Numerical Recipes §6.4)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom: I_{df/(df+t²)}(df/2, 1/2)."""
    if math.isinf(t):
        return 0.0
    return min(1.0, betainc(df / 2.0, 0.5, df / (df + t * t)))


def welch(a, b) -> dict | None:
    """Welch's two-sample t-test of mean(a) - mean(b): {t, df, p} (None with fewer than 2 values in a group)."""
    a, b = _clean(a), _clean(b)
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    diff = statistics.fmean(a) - statistics.fmean(b)
    if va + vb == 0.0:   # no spread at all: equal means are indistinguishable, different ones certain
        return {"t": 0.0 if diff == 0 else math.copysign(math.inf, diff), "df": float(len(a) + len(b) - 2),
                "p": 1.0 if diff == 0 else 0.0}
    t = diff / math.sqrt(va + vb)
    df = (va + vb) ** 2 / ((va * va / (len(a) - 1) if va else 0.0) + (vb * vb / (len(b) - 1) if vb else 0.0))
    return {"t": t, "df": df, "p": t_two_sided_p(t, df)}


def binomial_se(p: float | None, n: float | None) -> float | None:
    """Standard error sqrt(p (1 - p) / n) of an accuracy ``p`` measured on ``n`` problems."""
    if p is None or not n or not math.isfinite(p):
        return None
    return math.sqrt(max(0.0, p * (1.0 - p)) / n)


def t_quantile(q: float, df: float) -> float:
    """The ``q`` quantile (q > 0.5) of Student's t with ``df`` degrees of freedom (bisection on the p-value)."""
    lo, hi = 0.0, 1e3
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_two_sided_p(mid, df) > 2 * (1 - q) else (lo, mid)
    return (lo + hi) / 2


def seeds_needed(a, b, delta: float | None = None, power: float = POWER, alpha: float = ALPHA) -> int | None:
    """Seeds per group for a two-sided test at ``alpha`` to detect ``delta`` (default: the observed
    difference of means) with ``power``: n = (z_{1-alpha/2} + z_power)² (s_a² + s_b²) / delta² (normal
    approximation), then the smallest n >= that for which the same with Student's t quantiles at
    df = 2n - 2 holds (the normal one undercounts for few seeds). None when it cannot be said (fewer
    than 2 values, or no difference)."""
    a, b = _clean(a), _clean(b)
    if len(a) < 2 or len(b) < 2:
        return None
    delta = statistics.fmean(a) - statistics.fmean(b) if delta is None else delta
    if delta == 0:
        return None
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    ratio = (statistics.variance(a) + statistics.variance(b)) / (delta * delta)
    n = max(2, math.ceil(z * z * ratio))
    while n < 10_000 and (t_quantile(1 - alpha / 2, 2 * n - 2) + t_quantile(power, 2 * n - 2)) ** 2 * ratio > n:
        n += 1
    return n


def summarize(xs) -> dict:
    """One group's numbers for one metric: n, mean, sd (n - 1) and the bootstrap CI of the mean."""
    x = _clean(xs)
    return {"n": len(x), "mean": statistics.fmean(x) if x else None,
            "sd": statistics.stdev(x) if len(x) > 1 else None, "ci": bootstrap_ci(x)}


def compare(a, b, higher_is_better: bool = True) -> dict:
    """Group ``a`` against the baseline ``b``: difference of means, its CI, Welch's test and the verdict."""
    a, b = _clean(a), _clean(b)
    out = {"diff": statistics.fmean(a) - statistics.fmean(b) if a and b else None,
           "ci": bootstrap_diff_ci(a, b), "t": None, "df": None, "p": None,
           "seeds_needed": seeds_needed(a, b), "n": [len(a), len(b)]}
    w = welch(a, b)
    if w:
        out.update(w)
    ci, p = out["ci"], out["p"]
    out["distinguishable"] = bool(ci and p is not None and (ci[0] > 0 or ci[1] < 0) and p < ALPHA)
    if out["distinguishable"]:
        out["verdict"] = "better" if (out["diff"] > 0) == higher_is_better else "worse"
    else:
        seeds = f"{len(a)} seeds" if len(a) == len(b) else f"{len(a)} and {len(b)} seeds"
        out["verdict"] = f"not distinguishable with {seeds}"
    return out
