"""The summary table of ``rlx.compare``: one row per group, means ± std over its seeds (rlx/report/compare.py)."""

from __future__ import annotations

import math
import statistics

from rlx.report.load import Run
from rlx.report.seedstats import FINAL_WINDOW


def _mean_std(xs: list) -> tuple[float, float] | None:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    if not xs:
        return None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def _fmt(ms, digits: int = 3) -> str:
    return "–" if ms is None else f"{ms[0]:.{digits}f} ± {ms[1]:.{digits}f}"


def _last(run: Run, key: str, window: int = 1):
    _, vals = run.series(key)
    vals = [v for v in vals[-window:] if math.isfinite(v)]
    return statistics.fmean(vals) if vals else None


def _first(run: Run, key: str):
    vals = [v for v in run.series(key)[1] if math.isfinite(v)]
    return vals[0] if vals else None


def steps_to(run: Run, key: str, threshold: float):
    """First logged step at which ``key`` >= ``threshold`` (None if never)."""
    return next((s for s, v in zip(*run.series(key)) if v >= threshold), None)


def summary_rows(groups: dict[str, list[Run]], acc_key: str | None, threshold: float) -> list[dict]:
    rows = []
    for label, runs in groups.items():
        first = [r.series(acc_key)[1][0] if acc_key and r.series(acc_key)[1] else None for r in runs]
        reached = [steps_to(r, acc_key, threshold) for r in runs] if acc_key else []
        hit = [s for s in reached if s is not None]
        wall = [r.summary.get("wall_s") for r in runs if r.summary and r.summary.get("wall_s") is not None]
        rows.append({
            "group": label, "runs": len(runs),
            "acc_start": _mean_std(first),
            "acc_final": _mean_std([_last(r, acc_key) for r in runs]) if acc_key else None,
            "steps_to": (statistics.fmean(hit) if hit else None, len(hit)),
            "steps": max((r.rows[-1]["step"] for r in runs if r.rows), default=0),
            "wall_s": _mean_std(wall),
            "entropy": _mean_std([_last(r, "policy/entropy", FINAL_WINDOW) for r in runs]),
            "kl": _mean_std([_last(r, "policy/kl_ref", FINAL_WINDOW) for r in runs]),
            "length": (_mean_std([_first(r, "response_length/mean") for r in runs]),
                       _mean_std([_last(r, "response_length/mean", FINAL_WINDOW) for r in runs])),
        })
    return rows


def table_cells(row: dict, threshold: float) -> list[str]:
    mean_steps, k = row["steps_to"]
    reach = "–" if mean_steps is None else f"{mean_steps:.0f} ({k}/{row['runs']})"
    wall = "–" if row["wall_s"] is None else f"{row['wall_s'][0]:.0f}"
    first, last = row["length"]
    length = "–" if first is None or last is None else f"{first[0]:.1f} → {last[0]:.1f}"
    return [row["group"], str(row["runs"]), _fmt(row["acc_start"]), _fmt(row["acc_final"]), reach,
            str(row["steps"]), wall, _fmt(row["entropy"], 2), _fmt(row["kl"], 4), length]


def table_header(acc_key: str | None, threshold: float) -> list[str]:
    acc = acc_key or "eval accuracy"
    return ["group", "runs", f"{acc} at step 0", f"final {acc}", f"steps to {acc} ≥ {threshold:g}", "steps",
            "wall s", f"final entropy (last {FINAL_WINDOW})", f"final KL to ref (last {FINAL_WINDOW})",
            f"response length, first step → last {FINAL_WINDOW}"]
