"""A full disk during a checkpoint write (docs/reliability.md "Full disk"): one ``DiskFullError`` line
naming the checkpoint directory, the free space there and the checkpoint's size; the partial write
removed; the finished checkpoints untouched.

No mocks: the writes really fail. ``/dev/full`` (every write: ENOSPC) gives the errors each writer raises
on a full disk; a small tmpfs, mounted in a private mount namespace of a child process (``unshare``: no
trace on the machine, gone with the child), is a really full filesystem for ``Checkpointer.save`` and for
a training run. Those tests are skipped where no mount namespace can be made.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAST, REPO

TESTS = Path(__file__).resolve().parent


def to_dev_full(path: Path) -> Path:
    """``path`` as a link to /dev/full: opening it works, every write fails with ENOSPC."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    path.symlink_to("/dev/full")
    return path


def test_the_writers_errors_on_a_full_device_are_recognised(tmp_path):
    import torch

    from rlx.runtime.disk import DiskFullError, is_disk_full

    state = {"w": torch.zeros(1000), "step": 3}
    with pytest.raises(OSError) as plain:   # Python's own file writes
        with open(to_dev_full(tmp_path / "a.json"), "w") as fh:
            fh.write("x" * 100_000)
    assert plain.value.errno == errno.ENOSPC and is_disk_full(plain.value)
    with pytest.raises(RuntimeError) as zipped:   # torch.save given a path: the zip writer hides the errno
        torch.save(state, to_dev_full(tmp_path / "b.pt"))
    assert "unexpected pos" in str(zipped.value) and is_disk_full(zipped.value)
    with pytest.raises(Exception) as through_file:   # given a file object (Checkpointer.save): the OSError is kept
        with open(to_dev_full(tmp_path / "c.pt"), "wb") as fh:
            torch.save(state, fh)
    assert is_disk_full(through_file.value)
    # other failures are not a full disk, whatever they say
    with pytest.raises(RuntimeError) as no_dir:
        torch.save(state, tmp_path / "missing" / "d.pt")
    assert not is_disk_full(no_dir.value)
    assert not is_disk_full(OSError(errno.EIO, "Input/output error"))
    assert not is_disk_full(RuntimeError("shape mismatch"))
    err = DiskFullError("disk full while writing checkpoint step_00000003 in /x", Path("/x"), 10, 20)
    assert isinstance(err, OSError) and err.errno == errno.ENOSPC and str(err).startswith("disk full")


# ---------------------------------------------------------------------------- a really full filesystem
def in_private_tmpfs(disk: Path, size: str, call: str, timeout: int = 300) -> dict:
    """Run ``test_disk_full.<call>`` in a child process with a tmpfs of ``size`` mounted on ``disk`` in
    its own mount namespace; the JSON it prints last. Skips where no mount namespace can be made."""
    if not shutil.which("unshare") or sys.platform != "linux":
        pytest.skip("needs Linux unshare(1) for a private tmpfs")
    disk.mkdir(parents=True, exist_ok=True)
    code = f"import sys; sys.path[:0] = [{str(TESTS)!r}]; import test_disk_full as t; t.{call}"
    script = f'mount -t tmpfs -o size={size} rlxfull "$1" || exit 97; exec "$2" -c "$3"'
    why = []
    for flags in (["-r", "-m"], ["-m"]):   # an unprivileged user namespace, else root's own
        proc = subprocess.run(["unshare", *flags, "sh", "-c", script, "sh", str(disk), sys.executable, code],
                              cwd=REPO, capture_output=True, text=True, timeout=timeout, env=os.environ.copy())
        if proc.returncode != 97 and not proc.stderr.startswith("unshare:"):
            assert proc.returncode == 0, proc.stderr[-4000:]
            return json.loads(proc.stdout.strip().splitlines()[-1])
        why.append(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}")
    pytest.skip(f"cannot mount a private tmpfs here: {'; '.join(why)}")


def _digest(d: Path) -> dict:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(d.iterdir())}


def _leave_free(disk: Path, room: int) -> None:
    """Fill the filesystem of ``disk`` until ``room`` bytes are free."""
    free = shutil.disk_usage(disk).free
    with open(disk / "filler", "wb") as fh:
        fh.write(b"\0" * max(free - room, 0))


def _after(disk: Path, root: Path, before: dict, err) -> dict:
    from rlx.runtime.checkpoint import Checkpointer

    return {"type": type(err).__name__, "mro": [c.__name__ for c in type(err).__mro__], "msg": str(err),
            "errno": getattr(err, "errno", None), "free": shutil.disk_usage(disk).free,
            "cause": type(getattr(err, "__cause__", None)).__name__,
            "entries": sorted(p.name for p in root.iterdir()),
            "intact": {name: Checkpointer.verify(root / name)[0] and _digest(root / name) == digest
                       for name, digest in before.items()},
            "size_2": sum(f.stat().st_size for f in (root / "step_00000002").iterdir())
            if (root / "step_00000002").is_dir() else None}


def child_checkpointer(disk: str, where: str) -> None:
    """In the namespace: checkpoints 1 and 2, the disk filled, and checkpoint 3 does not fit: in its weights
    (safetensors' write fails) or its state (torch.save's); or, ``first``, checkpoint 1 does not fit."""
    import torch

    from rlx.runtime.checkpoint import Checkpointer

    disk = Path(disk)
    torch.manual_seed(0)
    model = torch.nn.Linear(256, 256)   # weights 263 KB, AdamW moments twice that
    optim = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 256)).sum().backward()
    optim.step()
    state = {"step": 0, "optim": optim.state_dict()}
    ck = Checkpointer(disk / "checkpoints", keep=2)
    ck.root.mkdir()
    weights = 4 * sum(p.numel() for p in model.parameters())
    saved = [] if where == "first" else [ck.save(step, model, {**state, "step": step}).name for step in (1, 2)]
    before = {name: _digest(ck.root / name) for name in saved}
    _leave_free(disk, weights + 64 * 1024 if where == "state" else weights // 2)
    try:
        ck.save(len(saved) + 1, model, {**state, "step": len(saved) + 1})
        err = None
    except Exception as e:
        err = e
    print(json.dumps({**_after(disk, ck.root, before, err), "root": str(ck.root),
                      "tensors": weights * 3}))


@pytest.mark.slow
@pytest.mark.parametrize("where", ["weights", "state", "first"])
def test_checkpoint_on_a_full_disk_is_one_line_and_leaves_the_others_intact(tmp_path, where):
    from rlx.runtime.disk import human

    out = in_private_tmpfs(tmp_path / "disk", "4m", f"child_checkpointer({str(tmp_path / 'disk')!r}, {where!r})")
    msg, step = out["msg"], 1 if where == "first" else 3
    assert out["type"] == "DiskFullError" and "OSError" in out["mro"] and out["errno"] == errno.ENOSPC, out
    assert "\n" not in msg and msg.startswith(f"disk full while writing checkpoint step_{step:08d} in ")
    # the writer that failed: safetensors (weights), torch.save's zip writer (state), each with its own error
    assert out["cause"] == {"weights": "SafetensorError", "first": "SafetensorError", "state": "RuntimeError"}[where]
    assert f" in {out['root']}: " in msg                                  # the checkpoint directory
    assert f"{human(out['free'])} free there" in msg                      # the free space there, after the clean-up
    if where == "first":   # the checkpoint's size: the bytes of its tensors (weights, two AdamW moments) ...
        assert f"about {human(out['tensors'])} (the bytes of its tensors)" in msg
        assert "no complete checkpoint exists" in msg and out["entries"] == []   # no step_00000001.tmp left
        return
    assert f"about {human(out['size_2'])} (the size of step_00000002)" in msg   # ... or the last checkpoint's
    assert "step_00000002, is untouched" in msg
    assert out["entries"] == ["step_00000001", "step_00000002"]          # no step_00000003.tmp left
    assert out["intact"] == {"step_00000001": True, "step_00000002": True}
    print(f"\n{where}: rlx: error: {msg}")


def child_training_run(disk: str) -> None:
    """In the namespace: a GRPO run that checkpoints every step on a tmpfs with room for about 2.5 checkpoints."""
    import rlx

    run_dir = Path(disk) / "run"
    cfg = rlx.compose([*FAST, "trainer.steps=6", "trainer.save_every=1", "trainer.keep_checkpoints=2",
                       "data.eval_size=8", "data.prompts_per_step=2", "hardware.num_threads=1"])
    try:
        rlx.run(cfg, run_dir)
        err = None
    except Exception as e:
        err = e
    root = run_dir / "checkpoints"
    done = sorted(p.name for p in root.iterdir())
    before = {name: _digest(root / name) for name in done}   # what is there now is what the failed save left
    rows = [json.loads(ln)["step"] for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    print(json.dumps({**_after(Path(disk), root, before, err), "root": str(root), "rows": rows,
                      "summary": (run_dir / "summary.json").exists()}))


@pytest.mark.slow
def test_a_training_run_on_a_full_disk_stops_with_the_disk_full_error(tmp_path):
    # the tiny model's checkpoint is ~12 MB (weights 4 MB, AdamW moments 8 MB): 30 MB hold two and the run's files
    out = in_private_tmpfs(tmp_path / "disk", "30m", f"child_training_run({str(tmp_path / 'disk')!r})")
    assert out["type"] == "DiskFullError", out
    assert out["msg"].startswith(f"disk full while writing checkpoint step_00000003 in {out['root']}: ")
    assert out["entries"] == ["step_00000001", "step_00000002"] and all(out["intact"].values())
    assert out["rows"] == [0, 1, 2, 3] and not out["summary"]   # step 3 logged, its save failed, the run stopped
    print(f"\nrlx: error: {out['msg']}")
