"""Atomic checkpoints and exact resume.

A checkpoint is a directory ``checkpoints/step_<N>/`` holding ``model.safetensors`` (policy
weights), ``state.pt`` (optimizer, scheduler, algorithm state, every RNG stream, data cursor, step,
counters) and ``manifest.json`` with the SHA-256 of each file, written last. It is written into
``step_<N>.tmp/``, fsynced, then renamed: a directory without a valid manifest is incomplete and is
skipped (with a message) when loading.

``resume_point()`` is what ``trainer.resume=true`` continues from: the newest checkpoint that
verifies (older ones are tried in turn), None when no checkpoint was ever finished (the trainer then
warns loudly and starts at step 0), and a ``ResumeError`` (exit status 2) when finished checkpoints
exist but none verifies: never a silent start from scratch. ``RLX_FAULT=kill_in_save@N:<phase>`` (rlx/runtime/faults.py) kills the process mid-write.
A write that fails (a full disk: ``DiskFullError``, rlx/runtime/disk.py) removes its ``.tmp`` directory; the
finished checkpoints are not touched.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from rlx.runtime.disk import DiskFullError, disk_full_error, is_disk_full, tensor_bytes, tree_bytes
from rlx.runtime.faults import kill_if

REQUIRED = ("model.safetensors", "state.pt")


class ResumeError(RuntimeError):
    """``trainer.resume=true`` but the checkpoints in the run dir cannot be used."""


def rng_state() -> dict:
    """Every generator's state in types ``torch.load(weights_only=True)`` reads: tensors, ints, floats, tuples."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss))}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
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

    def save(self, step: int, model, state: dict, weights: dict | None = None) -> Path:
        from safetensors.torch import save_file

        final = self.root / f"step_{step:08d}"
        tmp = self.root / f"step_{step:08d}.tmp"
        weights = weights if weights is not None else model.state_dict()
        weights = _untie({k: v.detach().contiguous().cpu() for k, v in weights.items()})
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            save_file(weights, tmp / "model.safetensors")
            kill_if("kill_in_save", step, "weights")
            with open(tmp / "state.pt", "wb") as fh:   # a file object: a failed write's OSError stays in the chain
                torch.save(state, fh)
            kill_if("kill_in_save", step, "state")
            for f in REQUIRED:
                _fsync(tmp / f)
            manifest = {"step": step, "files": {f: _sha(tmp / f) for f in REQUIRED}}
            (tmp / "manifest.json").write_text(json.dumps(manifest))  # written last: its presence marks completeness
            _fsync(tmp / "manifest.json")
            _fsync(tmp)
        except Exception as e:   # no partial checkpoint is left behind; a full disk becomes one DiskFullError line
            shutil.rmtree(tmp, ignore_errors=True)
            if is_disk_full(e):
                raise self._disk_full(final.name, weights, state) from e
            raise
        kill_if("kill_in_save", step, "manifest")
        shutil.rmtree(final, ignore_errors=True)  # only an incomplete one of the same step can be there
        os.replace(tmp, final)
        _fsync(self.root)
        kill_if("kill_in_save", step, "rename")
        self._prune(step)
        return final

    def _disk_full(self, name: str, weights: dict, state: dict) -> DiskFullError:
        """The checkpoint's size: the newest complete one's files, else the bytes of the tensors to write."""
        done = [d for d in self.entries() if not d.name.endswith(".tmp") and (d / "manifest.json").exists()]
        if done:
            needed, source = tree_bytes(done[-1]), f"the size of {done[-1].name}"
        else:
            needed, source = tensor_bytes(weights) + tensor_bytes(state), "the bytes of its tensors"
        return disk_full_error(name, self.root, needed, source, done[-1] if done else None)

    def entries(self) -> list[Path]:
        """Every checkpoint directory, complete or not, oldest first."""
        return sorted(d for d in self.root.glob("step_*") if d.is_dir()) if self.root.is_dir() else []

    def _prune(self, step: int) -> None:
        """Keep the newest ``keep`` finished checkpoints (manifest present; hashes are checked on load, not
        here), and drop unfinished ones older than ``step``: the run has passed them."""
        done = [d for d in self.entries() if not d.name.endswith(".tmp") and (d / "manifest.json").exists()]
        stale = [d for d in self.entries() if d not in done and _step_of(d) < step]
        for old in done[: max(len(done) - self.keep, 0)] + stale:
            shutil.rmtree(old, ignore_errors=True)

    def complete(self) -> list[Path]:
        """Complete checkpoints, oldest first; incomplete ones are reported and skipped."""
        out = []
        for d in self.entries():
            ok, why = self.verify(d)
            if ok:
                out.append(d)
            else:
                print(f"[rlx] skipping incomplete checkpoint {d}: {why}", file=sys.stderr)
        return out

    @staticmethod
    def verify(d: Path) -> tuple[bool, str]:
        """(True, "") when ``d`` is a finished checkpoint whose files all match the manifest's SHA-256."""
        if d.name.endswith(".tmp"):
            return False, "its write never finished (.tmp directory)"
        man = d / "manifest.json"
        if not man.exists():
            return False, "no manifest.json (its write never finished)"
        try:
            meta = json.loads(man.read_text())
            files, step = meta["files"], meta["step"]
        except (ValueError, KeyError, TypeError) as e:
            return False, f"unreadable manifest.json ({type(e).__name__}: {e})"
        if step != _step_of(d):
            return False, f"manifest.json is for step {step}, not {_step_of(d)}"
        for f in REQUIRED:
            if f not in files:
                return False, f"manifest.json does not list {f}"
        for f, digest in files.items():
            if not (d / f).exists():
                return False, f"{f} is missing"
            if _sha(d / f) != digest:
                return False, f"{f} differs from the SHA-256 in manifest.json (truncated or corrupted)"
        return True, ""

    def latest(self) -> Path | None:
        """The newest complete checkpoint (newer incomplete ones are reported and skipped), or None."""
        for d in reversed(self.entries()):
            ok, why = self.verify(d)
            if ok:
                return d
            print(f"[rlx] skipping incomplete checkpoint {d}: {why}", file=sys.stderr)
        return None

    def resume_point(self) -> Path | None:
        """What ``trainer.resume=true`` continues from: the newest complete checkpoint. None when no
        checkpoint was ever finished (none at all, or only ``.tmp`` writes cut short: nothing is lost by
        starting over, and the caller says so loudly). ``ResumeError`` when finished checkpoints exist
        but none verifies (truncated, corrupted, files missing): starting over would lose a run."""
        latest = self.latest()
        finished = [d for d in self.entries() if not d.name.endswith(".tmp")]
        if latest is None and finished:
            raise ResumeError(f"trainer.resume=true: {self.root} holds {len(finished)} finished checkpoint(s) but "
                              f"none is intact ({', '.join(d.name for d in finished)}: see the reasons above); "
                              "refusing to start from scratch. Start over with trainer.resume=false, or in "
                              "another run dir.")
        return latest

    @staticmethod
    def load(d: Path, model) -> dict:
        from safetensors.torch import load_file

        weights = load_file(d / "model.safetensors")
        if any(type(p).__name__ == "DTensor" for p in model.parameters()):  # FSDP2 ranks
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

            set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True, strict=False))
            return _load_state(d)
        missing, unexpected = model.load_state_dict(weights, strict=False)
        missing = [k for k in missing if not _is_tied(model, k)]
        if missing or unexpected:
            raise RuntimeError(f"checkpoint {d} does not match the model: missing {missing}, unexpected {unexpected}")
        return _load_state(d)


def full_optimizer_state(model, optim) -> dict:
    """Optimizer state as a full (unsharded) dict keyed by parameter name (FSDP2 ranks)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optim, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_optimizer_state(model, optim, state: dict) -> None:
    """Plain ``optim.state_dict()`` format, or the name-keyed full format written by FSDP2 ranks."""
    if any(isinstance(k, str) for k in state.get("state", {})):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(model, optim, optim_state_dict=state, options=StateDictOptions(full_state_dict=True))
    else:
        optim.load_state_dict(state)


def _load_state(d: Path) -> dict:
    """``state.pt`` through ``weights_only=True``: tensors and plain containers only, so a crafted checkpoint
    cannot run code when it is resumed (its manifest's SHA-256 says only that the file is the one written)."""
    try:
        return torch.load(d / "state.pt", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ResumeError(f"{d / 'state.pt'}: refused, it holds more than tensors and plain containers "
                          f"(a checkpoint rlx did not write?): {str(e).splitlines()[0]}") from None


def _step_of(d: Path) -> int:
    digits = d.name.removeprefix("step_").removesuffix(".tmp")
    return int(digits) if digits.isdigit() else -1


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
