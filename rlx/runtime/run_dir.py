"""A run owns its run dir, and a resumed run keeps its own config (docs/reliability.md "Run directory").

Ownership: ``claim(dir, resume)`` creates ``<dir>/.rlx.lock`` (JSON: pid, host, start time) with
``O_CREAT | O_EXCL``, and ``release()`` removes it when the run ends (``rlx.run``'s ``finally``: a normal end,
an error, the exit 143 / 130 of SIGTERM / Ctrl-C). A lock whose process is gone (same host: its pid is
not running, or is a new process with that pid) is stale: it is taken over with one note. ``RunDirError``
(exit 2) refuses a dir locked by a live process, and, without ``trainer.resume=true``, a dir that holds
another run's ``metrics.jsonl``, ``summary.json`` or checkpoints. Under torchrun only rank 0 claims and checks.

A resumed run's config: ``rlx/runtime/resume_config.py``.

``run_id()`` (the ``${rlx.run_id:}`` resolver of ``hydra.run.dir``) makes default run dir names unique.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path

from omegaconf import OmegaConf

LOCK = ".rlx.lock"


class RunDirError(RuntimeError):
    """The run dir belongs to another run, or a resume would change the run's saved config (exit status 2)."""


# ---------------------------------------------------------------- names


def is_main_rank() -> bool:
    """Rank 0 of a torchrun job, or a plain process (RANK / LOCAL_RANK unset)."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0) == 0


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if not n:
            return out


def run_id() -> str:
    """A short id unique among the processes running on this machine: this process's pid (base 36), or under
    torchrun its agent's (the parent of every local rank), so that the ranks of one job name the same dir."""
    torchrun = "LOCAL_RANK" in os.environ and "TORCHELASTIC_RUN_ID" in os.environ
    return _base36(os.getppid() if torchrun else os.getpid())


def default_name() -> str:
    """``<date>_<time>_<run id>``: two launches in the same second get different names."""
    return f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{run_id()}"


def free_dir(parent: Path) -> Path:
    """``parent/<default_name()>``, with ``-2``, ``-3``... when this process already made one this second."""
    d = Path(parent) / default_name()
    n = 1
    while d.exists():
        n += 1
        d = Path(parent) / f"{default_name()}-{n}"
    return d


def register_resolver() -> None:
    if not OmegaConf.has_resolver("rlx.run_id"):
        OmegaConf.register_new_resolver("rlx.run_id", run_id)


register_resolver()


# ---------------------------------------------------------------- ownership


def _proc_start(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks after boot (Linux), None where unknown; 'Z' -> -1."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return -1 if fields[0] in ("Z", "X") else int(fields[19])


def _alive(info: dict) -> bool:
    """The lock's process still runs (on another host: assumed, as it cannot be checked from here)."""
    if info.get("host") != socket.gethostname():
        return True
    pid = int(info.get("pid", -1))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # another user's process
        pass
    start = _proc_start(pid)
    if start == -1:   # a zombie: it has exited
        return False
    return start is None or info.get("proc_start") is None or start == info["proc_start"]


def read_lock(d: Path) -> dict | None:
    """The lock's JSON; None when there is no lock, {} while it is being written (or was left empty)."""
    try:
        info = json.loads((Path(d) / LOCK).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _describe(d: Path, info: dict) -> str:
    return (f"run dir {d} is locked by pid {info.get('pid', '?')} on host {info.get('host', '?')} since "
            f"{info.get('since', '?')} (another run is using it); wait for it to end, or choose another "
            f"hydra.run.dir (if no run uses it, delete {Path(d) / LOCK})")


def used_by(d: Path) -> list[str]:
    """What in ``d`` belongs to an earlier run: metrics.jsonl, summary.json, checkpoints/ (when not empty)."""
    d = Path(d)
    out = [f for f in ("metrics.jsonl", "summary.json") if (d / f).exists()]
    ck = d / "checkpoints"
    if ck.is_dir() and any(ck.iterdir()):
        out.append("checkpoints/")
    return out


def _check_used(d: Path, resume: bool) -> None:
    used = used_by(d)
    if used and not resume:
        raise RunDirError(f"run dir {d} holds another run's {', '.join(used)}; pass trainer.resume=true to continue "
                          "it, or choose another hydra.run.dir")


def check(d: Path, resume: bool) -> None:
    """The refusals of ``claim``, without taking the lock (``python -m rlx``, before Hydra writes into ``d``)."""
    d = Path(d)
    if not is_main_rank() or not d.is_dir():
        return
    info = read_lock(d)
    if info and _alive(info):
        raise RunDirError(_describe(d, info))
    _check_used(d, resume)


@contextlib.contextmanager
def _dir_flock(d: Path):
    """Serialise the claims of one dir on this host (best effort: a filesystem without flock goes on)."""
    fd = None
    try:
        import fcntl

        fd = os.open(d, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
    except (ImportError, OSError):
        pass
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)


class Claim:
    """The lock of one run on its dir (``held`` is False on ranks other than 0)."""

    def __init__(self, d: Path, held: bool):
        self.dir, self.held = Path(d), held

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        info = read_lock(self.dir)
        if info is not None and info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
            with contextlib.suppress(FileNotFoundError):
                (self.dir / LOCK).unlink()


def claim(d: Path, resume: bool, log=print) -> Claim:
    """Take ``d`` for this run (created if needed), or raise ``RunDirError``; ``log`` gets the stale-lock note."""
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    if not is_main_rank():
        return Claim(d, held=False)
    mine = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "started": time.time(), "proc_start": _proc_start(os.getpid())}
    with _dir_flock(d):
        for attempt in range(50):
            try:
                fd = os.open(d / LOCK, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                break
            except FileExistsError:
                info = read_lock(d)
                if info is None:   # removed between the two calls
                    continue
                if not info and attempt < 20:   # another process is writing it (no flock here): wait for it
                    time.sleep(0.05)
                    continue
                if info and _alive(info):
                    raise RunDirError(_describe(d, info)) from None
                log(f"[rlx] run dir {d}: taking over the lock of pid {info.get('pid', '?')} on host "
                    f"{info.get('host', '?')} (since {info.get('since', '?')}), which no longer runs")
                with contextlib.suppress(FileNotFoundError):
                    (d / LOCK).unlink()
        else:
            raise RunDirError(f"run dir {d}: could not create {d / LOCK}")
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(mine))
    lock = Claim(d, held=True)
    try:
        _check_used(d, resume)
    except RunDirError:
        lock.release()
        raise
    return lock
