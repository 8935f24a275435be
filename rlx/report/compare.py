"""``python -m rlx.compare <run or sweep dirs...> [--by algo] [--baseline G] [--json FILE]``: the comparison dashboard.

Also ``python -m rlx.compare --mlflow <tracking uri> --experiment <name>`` (the runs of one MLflow
experiment, e.g. a sweep's ``algo_ablation@<time>``). Writes into ``--out`` (default: the one dir
given, else ``outputs/compare``):
- ``report.html``: self-contained (inline SVG and JavaScript, no network), interactive curves of any
  logged metric (a picker; reward, eval accuracy, entropy, KL to the reference, response length and
  clip fraction at first) against step, samples seen, response tokens or wall-clock: per group the
  mean over its runs (seeds) with a band of ± one standard deviation, or each seed; evaluations as
  points with binomial-SE error bars; a panel says why a group has no signal; the summary and the
  statistics tables; then the sampled completions side by side;
- ``report.png``: the first six panels (matplotlib);
- ``report.md``: the summary table, the statistics over seeds (``rlx.report.seedstats``: mean and 95%
  bootstrap CI per group, difference to the baseline group with its CI, Welch's p and a verdict) and
  the runs that did not finish; ``--json FILE`` writes the statistics for scripts.

Groups: ``--by`` names config keys, comma-separated (``algo`` means ``algo.name``); ``auto`` (the
default) picks the fewest keys that tell the runs apart, seed excluded, so seeds share a group.
``--baseline``: the group the others are compared with (default: the first)."""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

from rlx.report import seedstats
from rlx.report.axes import x_axes  # noqa: F401 (re-exported)
from rlx.report.load import Run, find_run_dirs, flatten, load_mlflow, load_run_dir  # noqa: F401 (re-exported)
from rlx.report.seedstats import FINAL_WINDOW  # noqa: F401 (re-exported)
from rlx.report.table import steps_to, summary_rows, table_cells, table_header  # noqa: F401 (re-exported)

PANELS = [("reward/mean", "reward"), ("eval/*/accuracy", "eval accuracy"), ("policy/entropy", "entropy (nats/token)"),
          ("policy/kl_ref", "KL to reference"), ("response_length/mean", "response length (tokens)"),
          ("policy/clip_frac", "clip fraction")]
# Multi-turn runs (rlx/envs) add their episode panels after these.
EPISODE_PANELS = [("episode/turns_mean", "turns per episode"), ("tool/calls_mean", "tool calls per episode"),
                  ("env/failures", "failed episodes per step")]
# Stand-ins for panels no run logs (the offline family has no rollouts).
FALLBACK = [("pref/accuracy", "preference accuracy"), ("pref/margin", "preference margin"),
            ("loss/total", "loss"), ("score/mean", "score")]
# Keys never used to tell runs apart (seeds of one arm share a group).
NOT_GROUPING = ("seed", "tracker.", "hardware.num_threads", "trainer.progress", "trainer.log_every")


# ----------------------------------------------------------------------------- groups


def _value(cfg: dict, key: str):
    return cfg[key] if key in cfg else cfg.get(f"{key}.name")


def choose_keys(runs: list[Run], by: str) -> list[str]:
    if by != "auto":
        return [k.strip() for k in by.split(",") if k.strip()]
    keys = sorted({k for r in runs for k in r.cfg}, key=lambda k: (not k.endswith(".name"), k.count("."), k))
    varying = [k for k in keys if not k.startswith(NOT_GROUPING)
               and len({json.dumps(r.cfg.get(k), default=str) for r in runs}) > 1]
    chosen, n_groups = [], 1
    for k in varying:  # greedy: keep a key only if it splits the runs further
        n = len({tuple(json.dumps(r.cfg.get(c), default=str) for c in chosen + [k]) for r in runs})
        if n > n_groups:
            chosen, n_groups = chosen + [k], n
    return chosen or ["algo"]


def group_runs(runs: list[Run], keys: list[str]) -> dict[str, list[Run]]:
    groups: dict[str, list[Run]] = {}
    for r in runs:
        vals = [_value(r.cfg, k) for k in keys]
        label = str(vals[0]) if len(keys) == 1 else ", ".join(f"{k.split('.')[-1]}={v}" for k, v in zip(keys, vals))
        groups.setdefault(label, []).append(r)
    return groups


def resolve_panels(runs: list[Run]) -> list[tuple[str, str]]:
    logged = {k for r in runs for row in r.rows for k in row}
    evals = sorted(k for k in logged if k.startswith("eval/") and k.endswith("/accuracy"))
    panels = []
    for key, title in PANELS:
        key = (evals[0] if evals else None) if key == "eval/*/accuracy" else key
        if key in logged:
            panels.append((key, title))
    for key, title in FALLBACK:
        if len(panels) >= len(PANELS):
            break
        if key in logged and key not in dict(panels):
            panels.append((key, title))
    return panels + [(k, t) for k, t in EPISODE_PANELS if k in logged]


def logged_metrics(runs: list[Run]) -> list[str]:
    """Every key some run logged a number for, sorted."""
    return sorted({k for r in runs for row in r.rows for k, v in row.items()
                   if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)})


def smooth(values: list, window: int) -> list:
    """Trailing moving average over ``window`` points (1 = raw)."""
    if window <= 1:
        return list(values)
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v - (values[i - window] if i >= window else 0.0)
        out.append(acc / min(i + 1, window))
    return out


def aggregate(runs: list[Run], key: str, window: int = 1) -> dict:
    """Per step: mean, mean - std, mean + std and n over the runs that logged ``key`` (std with n - 1).
    ``window`` smooths each run first; evaluations (``eval/*``, sparse, each already a mean over a
    held-out set) are never smoothed."""
    window = 1 if key.startswith("eval/") else window
    per_step: dict[int, list] = {}
    for r in runs:
        steps, vals = r.series(key)
        for s, v in zip(steps, smooth(vals, window)):
            if math.isfinite(v):
                per_step.setdefault(s, []).append(v)
    steps = sorted(per_step)
    mean = [statistics.fmean(per_step[s]) for s in steps]
    std = [statistics.stdev(per_step[s]) if len(per_step[s]) > 1 else 0.0 for s in steps]
    return {"steps": steps, "mean": mean, "lo": [m - d for m, d in zip(mean, std)],
            "hi": [m + d for m, d in zip(mean, std)], "n": [len(per_step[s]) for s in steps]}


def _curves(groups: dict[str, list[Run]], key: str, window: int) -> dict:
    """``aggregate`` per group, leaving out the groups that never logged ``key``."""
    out = {label: aggregate(g, key, window) for label, g in groups.items()}
    return {label: c for label, c in out.items() if c["steps"]}


def markdown(header, cells, failed: list[Run], title: str, notes: str, stats_md: str = "") -> str:
    lines = [f"# {title}", "", notes, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c) + " |" for c in cells]
    lines += ["", "![curves](report.png)", ""] + ([stats_md] if stats_md else [])
    if failed:
        lines += ["## Runs that did not finish", "", "| run | status | reason |", "|---|---|---|"]
        lines += [f"| {r.name} | {r.status} | {r.reason.replace('|', '/')} |" for r in failed]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main


def json_safe(x):
    """Non-finite floats -> None, tuples -> lists: strict JSON."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


def build_report(runs: list[Run], out: Path, by: str = "auto", threshold: float = 0.5, window: int = 1,
                 title: str = "rlx comparison", baseline: str | None = None) -> dict:
    """Write report.html, report.png and report.md for ``runs`` into ``out``; returns the table rows and
    the statistics (``stats``: what ``--json`` writes)."""
    from rlx.report.html import write_html
    from rlx.report.nosignal import reasons
    from rlx.report.png import write_png
    from rlx.report.samples import samples_html

    done = [r for r in runs if r.status == "completed" and r.rows]
    failed = [r for r in runs if r not in done]
    if not done:
        raise SystemExit(f"rlx.compare: none of the {len(runs)} runs completed; nothing to compare")
    keys = choose_keys(done, by)
    groups = group_runs(done, keys)
    panels = resolve_panels(done)
    acc_key = next((k for k, _ in panels if k.startswith("eval/")), None)
    rows = summary_rows(groups, acc_key, threshold)
    stats = json_safe(seedstats.build_stats(groups, threshold, baseline))
    header, cells = table_header(acc_key, threshold), [table_cells(r, threshold) for r in rows]
    notes = (f"{len(done)} completed runs in {len(groups)} groups (by {', '.join(keys)}); "
             f"{len(failed)} did not finish. Curves: mean over a group's runs, band ± 1 std (n − 1).")
    out.mkdir(parents=True, exist_ok=True)
    curves = {key: _curves(groups, key, 1) for key in logged_metrics(done)}   # the HTML's picker offers them all
    runs_json = {key: {label: [dict(zip(("steps", "values"), r.series(key)), name=r.name) for r in groups[label]]
                       for label in curves[key]} for key in curves}
    seedstats.add_error_bars(groups, curves, runs_json)
    write_html(out / "report.html", title=title, notes=notes, panels=panels, labels=list(groups), curves=curves,
               runs=runs_json, header=header, cells=cells, failed=[(r.name, r.status, r.reason) for r in failed],
               window=window, titles=dict(PANELS[1:] + FALLBACK + EPISODE_PANELS + panels), xmap=x_axes(groups),
               samples=samples_html(groups), stats=stats, why=reasons(groups, curves))
    write_png(out / "report.png", panels=panels, curves={key: _curves(groups, key, window) for key, _ in panels},
              labels=list(groups), title=title)
    (out / "report.md").write_text(markdown(header, cells, failed, title, notes, seedstats.markdown(stats)))
    return {"keys": keys, "rows": rows, "failed": [r.name for r in failed], "stats": stats}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m rlx.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="*", help="run dirs or dirs holding runs (a sweep dir)")
    p.add_argument("--by", default="auto", help="config keys that define a group, comma-separated (default: auto)")
    p.add_argument("--out", default=None, help="output dir (default: the one path given, else outputs/compare)")
    p.add_argument("--threshold", type=float, default=0.5, help="eval accuracy for the steps-to-threshold column")
    p.add_argument("--smooth", type=int, default=1, help="moving-average window in logged steps (PNG; HTML start)")
    p.add_argument("--baseline", default=None, help="the group the others are compared with (default: the first)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the statistics over seeds as JSON")
    p.add_argument("--mlflow", default=None, help="MLflow tracking URI to read runs from (with --experiment)")
    p.add_argument("--experiment", default=None, help="MLflow experiment name (a sweep's is <study>@<time>)")
    a = p.parse_args(argv)
    if bool(a.mlflow) != bool(a.experiment) or not (a.paths or a.mlflow):
        p.error("give run/sweep dirs, or --mlflow URI --experiment NAME")
    runs = [load_run_dir(d) for d in find_run_dirs(a.paths)] if a.paths else []
    if a.mlflow:
        runs += load_mlflow(a.mlflow, a.experiment)
    out = Path(a.out) if a.out else (Path(a.paths[0]) if len(a.paths) == 1 and not a.mlflow
                                      else Path("outputs") / "compare")
    names = ["/".join(Path(x).resolve().parts[-2:]) for x in a.paths]
    title = f"rlx comparison: {a.experiment or ', '.join(names)}"
    result = build_report(runs, out, by=a.by, threshold=a.threshold, window=max(1, a.smooth), title=title,
                          baseline=a.baseline)
    print(f"[rlx] {len(result['rows'])} groups by {', '.join(result['keys'])}; "
          f"{len(result['failed'])} runs did not finish", file=sys.stderr)
    stats = result["stats"]
    for m in stats["metrics"][:1]:   # the headline: final eval accuracy (else the first metric)
        for label, c in m["vs_baseline"].items():
            print(f"[rlx] {m['label']}: {label} vs {stats['baseline']}: {c['verdict']}", file=sys.stderr)
    for w in stats["warnings"]:
        print(f"[rlx] warning: {w}", file=sys.stderr)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(stats, indent=1) + "\n")
    for name in ("report.html", "report.png", "report.md"):
        print(out / name)
    if a.json:
        print(a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
