"""Atomic checkpoints and exact resume.

A checkpoint is a directory ``checkpoints/step_<N>/`` holding ``model.safetensors`` (policy
weights), ``state.pt`` (optimizer, scheduler, algorithm state, every RNG stream, data cursor, step,
counters) and ``manifest.json`` with the SHA-256 of each file, written last. It is written into
``step_<N>.tmp/``, fsynced, then renamed: a directory without a valid manifest is incomplete and is
skipped (with a message) when loading.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import torch


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Checkpointer:
    def __init__(self, root: Path, keep: int = 2):
        self.root, self.keep = Path(root), keep

    def save(self, step: int, model, state: dict) -> Path:
        from safetensors.torch import save_file

        final = self.root / f"step_{step:08d}"
        tmp = self.root / f"step_{step:08d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(_untie(weights), tmp / "model.safetensors")
        torch.save(state, tmp / "state.pt")
        files = ["model.safetensors", "state.pt"]
        for f in files:
            _fsync(tmp / f)
        manifest = {"step": step, "files": {f: _sha(tmp / f) for f in files}}
        (tmp / "manifest.json").write_text(json.dumps(manifest))
        _fsync(tmp / "manifest.json")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        _fsync(self.root)
        self._prune()
        return final

    def _prune(self) -> None:
        done = self.complete()
        for old in done[: max(len(done) - self.keep, 0)]:
            shutil.rmtree(old, ignore_errors=True)

    def complete(self) -> list[Path]:
        """Complete checkpoints, oldest first; incomplete ones are reported and skipped."""
        out = []
        for d in sorted(self.root.glob("step_*")):
            if not d.is_dir():
                continue
            ok, why = self.verify(d)
            if ok:
                out.append(d)
            else:
                print(f"[rlx] skipping incomplete checkpoint {d}: {why}", file=sys.stderr)
        return out

    @staticmethod
    def verify(d: Path) -> tuple[bool, str]:
        if d.name.endswith(".tmp"):
            return False, "write never finished (.tmp)"
        man = d / "manifest.json"
        if not man.exists():
            return False, "no manifest.json"
        try:
            files = json.loads(man.read_text())["files"]
        except (ValueError, KeyError) as e:
            return False, f"unreadable manifest ({e})"
        for f, digest in files.items():
            if not (d / f).exists() or _sha(d / f) != digest:
                return False, f"{f} missing or its hash differs from the manifest"
        return True, ""

    def latest(self) -> Path | None:
        done = self.complete()
        return done[-1] if done else None

    @staticmethod
    def load(d: Path, model) -> dict:
        from safetensors.torch import load_file

        weights = load_file(d / "model.safetensors")
        missing, unexpected = model.load_state_dict(weights, strict=False)
        missing = [k for k in missing if not _is_tied(model, k)]
        if missing or unexpected:
            raise RuntimeError(f"checkpoint {d} does not match the model: missing {missing}, unexpected {unexpected}")
        return torch.load(d / "state.pt", weights_only=False)


def _untie(weights: dict) -> dict:
    """safetensors refuses shared storage; tied weights are saved once (the loader re-ties them)."""
    seen, out = {}, {}
    for k, v in weights.items():
        key = (v.data_ptr(), v.shape)
        if key in seen:
            continue
        seen[key] = k
        out[k] = v
    return out


def _is_tied(model, key: str) -> bool:
    return key == "lm_head.weight" and getattr(model.config, "tie_word_embeddings", False)
