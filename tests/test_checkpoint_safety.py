"""A checkpoint cannot run code: ``state.pt`` is read with ``torch.load(weights_only=True)``, so a crafted pickle
(with its SHA-256 rewritten into the manifest, as an attacker who can write the run dir would) is refused on
resume, and the code in it never runs. The real state still resumes."""

from __future__ import annotations

import hashlib
import json
import os
import pickle

import pytest

import rlx
from rlx.runtime.checkpoint import ResumeError

SMALL = ["trainer.progress=false", "data.prompts_per_step=2", "data.eval_size=8", "hardware.num_threads=1",
         "trainer.save_every=1"]


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):   # unpickling calls os.mkdir(marker): code from the checkpoint
        return (os.mkdir, (self.marker,))


@pytest.mark.slow
def test_a_crafted_state_pt_is_refused_and_runs_nothing(tmp_path):
    run = tmp_path / "run"
    rlx.run(rlx.compose([*SMALL, "trainer.steps=2"]), run_dir=run)
    ckpt = sorted((run / "checkpoints").iterdir())[-1]
    marker = tmp_path / "pwned"
    (ckpt / "state.pt").write_bytes(pickle.dumps({"step": 2, "x": _Payload(str(marker))}))
    manifest = json.loads((ckpt / "manifest.json").read_text())
    manifest["files"]["state.pt"] = hashlib.sha256((ckpt / "state.pt").read_bytes()).hexdigest()
    (ckpt / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ResumeError, match="refused"):
        rlx.run(rlx.compose([*SMALL, "trainer.steps=3", "trainer.resume=true"]), run_dir=run)
    assert not marker.exists()


@pytest.mark.slow
def test_the_state_rlx_writes_loads_with_weights_only(tmp_path):
    import torch

    run = tmp_path / "run"
    rlx.run(rlx.compose([*SMALL, "trainer.steps=1", "algo=ppo"]), run_dir=run)   # critic and KL controller state
    ckpt = sorted((run / "checkpoints").iterdir())[-1]
    state = torch.load(ckpt / "state.pt", weights_only=True)
    assert state["step"] == 1 and "critic" in state["extra"]
