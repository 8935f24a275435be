"""The dashboard's x-axes other than the step, per group {step: x} (the mean over the group's runs):
``samples`` seen after the step (step × samples per step, from the config), ``tokens``: response
tokens of the samples trained on (running sum over logged steps of ``response_length/mean`` × samples
per step × the steps since the previous logged one; prompt tokens not counted) and ``wall`` seconds
(running sum of ``perf/step_s``)."""

from __future__ import annotations

import statistics

from rlx.report.load import Run


def per_step(run: Run) -> float | None:
    """Samples one step of ``run`` trains on: prompts × group size (online), else the batch size."""
    c = run.cfg
    if isinstance(c.get("data.prompts_per_step"), int):
        return float(c["data.prompts_per_step"] * (c.get("algo.group_size") or 1))
    return float(c["data.batch_size"]) if isinstance(c.get("data.batch_size"), int) else None


def _num(row: dict, key: str):
    v = row.get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def x_axes(groups: dict[str, list[Run]]) -> dict:
    out: dict = {"samples": {}, "tokens": {}, "wall": {}}
    for label, runs in groups.items():
        axes: dict = {"samples": {}, "tokens": {}, "wall": {}}
        for r in runs:
            per = per_step(r)
            has_len = any(_num(row, "response_length/mean") is not None for row in r.rows)
            wall = tokens = 0.0
            prev = 0
            for row in r.rows:
                s = row["step"]
                if per is not None:
                    axes["samples"].setdefault(s, []).append(s * per)
                length = _num(row, "response_length/mean")
                if per is not None and has_len:
                    if length is not None:
                        tokens += length * per * (s - prev)
                        prev = s
                    axes["tokens"].setdefault(s, []).append(tokens)
                wall += _num(row, "perf/step_s") or 0.0
                if wall > 0 or s == 0:
                    axes["wall"].setdefault(s, []).append(wall)
        for name, d in axes.items():
            if d and (name != "wall" or any(v > 0 for vs in d.values() for v in vs)):
                out[name][label] = {s: statistics.fmean(v) for s, v in sorted(d.items())}
    return out
