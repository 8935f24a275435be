"""Why a dashboard panel shows no signal for a group, read from the group's config and metrics:
{metric: {group: reason}}, shown under the panel (``rlx.report.script``).

- KL to the reference (``policy/kl_ref``, ``loss/kl``) not logged or all 0 with ``algo.beta = 0``:
  there is no reference model (or no KL term in the loss);
- clip fraction, ``policy/kl_old`` all 0 (importance ratio bounds all 1) when the update is strictly
  on-policy, one epoch (``trainer.update_epochs = 1``) over one mini-batch that is the whole batch
  (``trainer.mini_batch_size`` null or at least the samples per step): the ratio is exactly 1;
- any other metric all 0: "all 0".
A metric a group does not log and none of these explains is "not logged" (said by the page itself).
"""

from __future__ import annotations

import math

from rlx.report.axes import per_step
from rlx.report.load import Run

KL = ("policy/kl_ref", "loss/kl")
ON_POLICY_ZERO = ("policy/clip_frac", "policy/clip_frac_high", "policy/clip_frac_low", "policy/kl_old")
ON_POLICY_ONE = ("policy/ratio_max", "policy/ratio_min")
TOL = 1e-9


def _float(v) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def on_policy(run: Run) -> bool:
    """One update epoch over one mini-batch holding the whole batch (the config says so)."""
    c = run.cfg
    if _float(c.get("trainer.update_epochs")) != 1:
        return False
    mini = _float(c.get("trainer.mini_batch_size"))
    if mini is None:
        return c.get("trainer.mini_batch_size", "missing") in (None, "None")   # null: the whole batch
    n = per_step(run)
    return n is not None and mini >= n


def _values(runs: list[Run], key: str) -> list[float]:
    return [float(v) for r in runs for row in r.rows for v in [row.get(key)]
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]


def reason(runs: list[Run], key: str) -> str | None:
    vals = _values(runs, key)
    beta = _float(runs[0].cfg.get("algo.beta"))
    on = all(on_policy(r) for r in runs)
    zero = bool(vals) and all(abs(v) < TOL for v in vals)
    if key in KL and beta == 0:
        if not vals:
            return "not logged: algo.beta = 0, no reference model"
        if zero:
            return "all 0: algo.beta = 0, no KL term"
    if on and key in ON_POLICY_ZERO and zero:
        return ("all 0: the update is strictly on-policy (trainer.update_epochs = 1, mini-batch = batch), "
                "so the importance ratio is 1 and nothing is clipped")
    if on and key in ON_POLICY_ONE and vals and all(abs(v - 1) < TOL for v in vals):
        return "all 1: the update is strictly on-policy (trainer.update_epochs = 1, mini-batch = batch)"
    return "all 0" if zero else None


def reasons(groups: dict[str, list[Run]], keys) -> dict:
    out: dict = {}
    for key in keys:
        for label, runs in groups.items():
            why = reason(runs, key)
            if why:
                out.setdefault(key, {})[label] = why
    return out
