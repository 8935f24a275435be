"""Per-group statistics over seeds for ``python -m rlx.compare`` (the numbers come from
``rlx.report.stats``): for each metric one number per run, then per group the mean with its 95%
bootstrap CI, and per group against the baseline the difference, its CI, Welch's p and a verdict.

Metrics (one number per run): ``final <eval acc>`` (the last evaluation; with the eval-set size n,
``data.eval_size`` less the evaluation's ``eval/<ds>/failures``, and the binomial standard error
sqrt(p (1 - p) / n)), ``AUC <eval acc>`` (the area under the run's evaluation curve, trapezoids over
steps, divided by the steps it spans: the mean accuracy over training), ``steps to <eval acc> ≥ t``
(the first evaluated step at or above ``--threshold``; a run that never gets there counts as its
last evaluated step, a lower bound, and ``reached`` says how many did; lower is better), ``final
reward/mean`` (mean of the last ``FINAL_WINDOW`` logged steps) and ``mean reward/mean`` (all steps).
"""

from __future__ import annotations

import math
import statistics

from rlx.report import stats as st
from rlx.report.load import Run

FINAL_WINDOW = 10  # "final" per-step metrics: mean of each run's last 10 logged steps


def _int(v) -> int | None:
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return None


def eval_size(run: Run) -> int | None:
    """Problems in the held-out set: the config's ``data.eval_size`` (else ``eval_size`` in summary.json)."""
    n = _int(run.cfg.get("data.eval_size"))
    if not n and run.summary:
        n = _int(run.summary.get("eval_size"))
    return n or None


def eval_n(run: Run, key: str, row: dict) -> int | None:
    """Problems an evaluation's accuracy is over: the eval set less those the reward could not score."""
    n = eval_size(run)
    fail = row.get(key.rsplit("/", 1)[0] + "/failures")
    return n - int(fail) if n and isinstance(fail, (int, float)) and 0 <= fail < n else n


def _final_eval(run: Run, key: str) -> tuple[float | None, int | None]:
    rows = [r for r in run.rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return (float(rows[-1][key]), eval_n(run, key, rows[-1])) if rows else (None, None)


def auc(run: Run, key: str) -> float | None:
    steps, vals = run.series(key)
    if len(steps) < 2 or steps[-1] == steps[0]:
        return None
    area = sum((s1 - s0) * (v0 + v1) / 2 for s0, s1, v0, v1 in zip(steps, steps[1:], vals, vals[1:]))
    return area / (steps[-1] - steps[0])


def steps_to(run: Run, key: str, threshold: float) -> tuple[float | None, bool]:
    """(first evaluated step with ``key`` >= ``threshold``, True) or (last evaluated step, False)."""
    steps, vals = run.series(key)
    hit = next((s for s, v in zip(steps, vals) if v >= threshold), None)
    return (float(hit), True) if hit is not None else ((float(steps[-1]), False) if steps else (None, False))


def _window(run: Run, key: str, window: int | None) -> float | None:
    vals = [v for v in run.series(key)[1] if math.isfinite(v)]
    vals = vals[-window:] if window else vals
    return statistics.fmean(vals) if vals else None


def metric_specs(runs: list[Run], threshold: float) -> list[dict]:
    logged = {k for r in runs for row in r.rows for k in row}
    specs = []
    for key in sorted(k for k in logged if k.startswith("eval/") and k.endswith("/accuracy")):
        specs += [{"id": f"{key}@final", "key": key, "label": f"final {key}", "higher_is_better": True},
                  {"id": f"{key}@auc", "key": key, "label": f"AUC {key} (mean over steps)", "higher_is_better": True},
                  {"id": f"{key}@steps_to", "key": key, "label": f"steps to {key} ≥ {threshold:g}",
                   "higher_is_better": False, "digits": 1}]
    if "reward/mean" in logged:
        specs += [{"id": "reward/mean@final", "key": "reward/mean", "label": f"final reward/mean (last {FINAL_WINDOW})",
                   "higher_is_better": True},
                  {"id": "reward/mean@mean", "key": "reward/mean", "label": "mean reward/mean (all steps)",
                   "higher_is_better": True}]
    return specs


def per_run(run: Run, spec: dict, threshold: float) -> dict:
    kind, key = spec["id"].rsplit("@", 1)[1], spec["key"]
    if kind == "final" and key.startswith("eval/"):
        v, n = _final_eval(run, key)
        return {"run": run.name, "value": v, "eval_n": n, "se": st.binomial_se(v, n)}
    if kind == "auc":
        return {"run": run.name, "value": auc(run, key)}
    if kind == "steps_to":
        v, reached = steps_to(run, key, threshold)
        return {"run": run.name, "value": v, "reached": reached}
    return {"run": run.name, "value": _window(run, key, FINAL_WINDOW if kind == "final" else None)}


def build_stats(groups: dict[str, list[Run]], threshold: float, baseline: str | None = None) -> dict:
    """Everything ``--json`` writes: per metric, per group and against the baseline (default: the first group)."""
    labels = list(groups)
    baseline = labels[0] if baseline is None else baseline
    if baseline not in groups:
        raise SystemExit(f"rlx.compare: --baseline {baseline!r} is not a group; the groups are {', '.join(labels)}")
    metrics = []
    for spec in metric_specs([r for g in groups.values() for r in g], threshold):
        by_group = {}
        for label, runs in groups.items():
            rs = [per_run(r, spec, threshold) for r in runs]
            g = st.summarize([r["value"] for r in rs])
            g["runs"] = rs
            if "se" in rs[0]:
                ses, ns = [r["se"] for r in rs if r["se"] is not None], [r["eval_n"] for r in rs if r["eval_n"]]
                g["binomial_se"] = statistics.fmean(ses) if ses else None
                g["eval_n"] = (min(ns), max(ns)) if ns else None
            if "reached" in rs[0]:
                g["reached"] = sum(r["reached"] for r in rs)
            by_group[label] = g
        base = [r["value"] for r in by_group[baseline]["runs"]]
        vs = {label: st.compare([r["value"] for r in g["runs"]], base, spec["higher_is_better"])
              for label, g in by_group.items() if label != baseline and g["n"] and by_group[baseline]["n"]}
        metrics.append({**{k: v for k, v in spec.items() if k != "digits"}, "groups": by_group, "vs_baseline": vs})
    warnings = _eval_noise(metrics, baseline) + [f"{label}: only {len(runs)} seed{'s' * (len(runs) != 1)}; a CI and a p-value need at least "
                f"{st.MIN_SEEDS} (a bootstrap over 2 seeds gives too narrow an interval)"
                for label, runs in groups.items() if len(runs) < st.MIN_SEEDS]
    return {"baseline": baseline, "threshold": threshold, "groups": {k: [r.name for r in v] for k, v in groups.items()},
            "bootstrap": {"resamples": st.N_BOOT, "rng_seed": st.SEED, "level": st.LEVEL, "kind": "percentile"},
            "rule": st.RULE, "power": {"level": st.ALPHA, "power": st.POWER}, "metrics": metrics,
            "warnings": warnings, "suggestions": _suggestions(metrics, baseline)}


def _eval_noise(metrics: list[dict], baseline: str) -> list[str]:
    """A verdict on a final eval accuracy whose Δ is inside the eval set's own sampling error (±1.96 SE)."""
    out = []
    for m in metrics:
        for label, c in m["vs_baseline"].items():
            se = [m["groups"][g].get("binomial_se") for g in (label, baseline)]
            if c["distinguishable"] and None not in se and abs(c["diff"]) < 1.96 * math.hypot(*se):
                out.append(f"{m['label']}: {label} vs {baseline} is {c['verdict']} over seeds, but Δ = {c['diff']:+.3f} "
                           f"is within ±{1.96 * math.hypot(*se):.3f} (1.96 binomial SE of the two evaluations): "
                           "another eval set of this size may not reproduce it")
    return out


def _suggestions(metrics: list[dict], baseline: str) -> list[str]:
    out = []
    for m in metrics:
        for label, c in m["vs_baseline"].items():
            if c["distinguishable"] or not c["seeds_needed"]:
                continue
            near = (" (no more than it has: Δ is near the detection limit, and a few more seeds would settle it)"
                    if c["seeds_needed"] <= max(c["n"]) else "")
            out.append(f"{m['label']}: {label} vs {baseline}: {c['verdict']}; the observed spread would need about "
                       f"{c['seeds_needed']} seeds per group to resolve Δ = {c['diff']:+.3g} (80% power at p < 0.05)"
                       + near)
    return out


# ----------------------------------------------------------------------------- tables


def _num(v, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _ci(ci, digits: int = 3) -> str:
    return "–" if ci is None else f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _p(p) -> str:
    return "–" if p is None else ("< 0.001" if p < 0.001 else f"{p:.3f}")


def _digits(m: dict) -> int:
    return 1 if m["id"].endswith("@steps_to") else 3


GROUP_HEADER = ["metric", "group", "seeds", "mean", "95% CI", "sd", "eval n", "binomial SE (per run)"]


def group_cells(s: dict) -> list[list[str]]:
    rows = []
    for m in s["metrics"]:
        d = _digits(m)
        for label, g in m["groups"].items():
            seeds = str(g["n"]) + (f" ({g['reached']} reached)" if "reached" in g else "")
            n = g.get("eval_n")
            rows.append([m["label"], label, seeds, _num(g["mean"], d), _ci(g["ci"], d), _num(g["sd"], d),
                         "–" if not n else (str(n[0]) if n[0] == n[1] else f"{n[0]}–{n[1]}"),
                         _num(g.get("binomial_se"), d) if "binomial_se" in g else "–"])
    return rows


def pair_header(s: dict) -> list[str]:
    return ["metric", "group", f"Δ vs {s['baseline']}", "95% CI of Δ", "Welch t (df)", "p", "verdict",
            "seeds/group for 80% power"]


def pair_cells(s: dict) -> list[list[str]]:
    rows = []
    for m in s["metrics"]:
        d = _digits(m)
        for label, c in m["vs_baseline"].items():
            t = "–" if c["t"] is None else f"{c['t']:.2f} ({c['df']:.1f})"
            rows.append([m["label"], label, "–" if c["diff"] is None else f"{c['diff']:+.{d}f}", _ci(c["ci"], d), t,
                         _p(c["p"]), c["verdict"], "–" if c["seeds_needed"] is None else str(c["seeds_needed"])])
    return rows


NOTES = ("Mean over seeds with a 95% percentile-bootstrap CI ({resamples} resamples, RNG seed {rng_seed}); "
         "eval n: problems per evaluation, binomial SE sqrt(p(1 − p)/n) of one run's accuracy. Against {baseline}: "
         "Δ = mean − mean({baseline}), its bootstrap CI, Welch's t-test; {rule}. Seeds/group for 80% power: "
         "n = (z₀.₉₇₅ + z₀.₈)² (s² + s_baseline²) / Δ², the seeds per group at which a two-sided test at 0.05 "
         "would detect the observed Δ 80% of the time (z: normal quantiles, then Student's t at df = 2n − 2). Steps to threshold: a run that never "
         "reaches it counts as its last evaluated step (a lower bound).")


def notes(s: dict) -> str:
    return NOTES.format(baseline=s["baseline"], rule=s["rule"], **s["bootstrap"])


def markdown(s: dict) -> str:
    if not s["metrics"]:
        return ""
    lines = ["## Statistics over seeds", "", notes(s), ""]
    for header, cells in ((GROUP_HEADER, group_cells(s)), (pair_header(s), pair_cells(s))):
        if cells:
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(c) + " |" for c in cells] + [""]
    lines += [f"- warning: {w}" for w in s["warnings"]] + [f"- {x}" for x in s["suggestions"]]
    return "\n".join(lines) + "\n"


def add_error_bars(groups: dict[str, list[Run]], curves: dict, runs_json: dict) -> None:
    """Binomial SE on the eval-accuracy curves (in place): per run and step sqrt(p (1 - p) / n) of its
    evaluation; per group and step that of an evaluation at the group's mean accuracy (mean n)."""
    for key in [k for k in curves if k.startswith("eval/") and k.endswith("/accuracy")]:
        for label, c in curves[key].items():
            ns: dict = {}
            for r, rj in zip(groups[label], runs_json[key][label]):
                rows = {row["step"]: row for row in r.rows}
                n_run = [eval_n(r, key, rows[s]) for s in rj["steps"]]
                rj["se"] = [st.binomial_se(v, n) for v, n in zip(rj["values"], n_run)]
                for s, n in zip(rj["steps"], n_run):
                    if n:
                        ns.setdefault(s, []).append(n)
            c["se"] = [st.binomial_se(m, statistics.fmean(ns[s]) if s in ns else None)
                       for s, m in zip(c["steps"], c["mean"])]
