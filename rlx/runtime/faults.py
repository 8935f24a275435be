"""Fault injection at real code points, for the reliability tests (docs/reliability.md §3).

Off unless the environment variable ``RLX_FAULT`` is set, e.g. ``RLX_FAULT=kill_in_save@4:state``.
Several faults are separated by commas. Each is ``<name>@<step>`` with an optional ``:<phase>``:

  kill_in_save@N:<phase>  SIGKILL this process while it writes the checkpoint of step N, right after
                          <phase>: weights (model.safetensors written), state (state.pt written),
                          manifest (manifest.json written, directory not yet renamed), rename (the
                          directory renamed, older checkpoints not yet pruned)
  kill_rank@N:<rank>      SIGKILL rank <rank> of a torchrun run at the start of step N (the others must fail,
                          not hang: hardware.timeout_s)
  nan_logp@N              the policy's training log-probs of step N are NaN (as from a forward that
                          overflowed), so its loss, metrics and gradient are NaN
"""

from __future__ import annotations

import os
import signal


def active(name: str, step: int, phase: str | None = None) -> bool:
    """Whether ``RLX_FAULT`` asks for fault ``name`` at this step (and phase)."""
    for item in os.environ.get("RLX_FAULT", "").split(","):
        fault, _, where = item.strip().partition("@")
        at, _, at_phase = where.partition(":")
        if fault == name and at.isdigit() and int(at) == step and (phase is None or at_phase == phase):
            return True
    return False


def kill_if(name: str, step: int, phase: str | None = None) -> None:
    """SIGKILL this process (no cleanup, no atexit, as the OOM killer would) if the fault is asked for."""
    if active(name, step, phase):
        os.kill(os.getpid(), signal.SIGKILL)
