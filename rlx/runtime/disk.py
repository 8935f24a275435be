"""A full disk during a checkpoint write, told in one line (docs/reliability.md "Full disk").

The writers report a full disk each in its own way: Python's file writes as ``OSError(ENOSPC)``,
safetensors as ``SafetensorError('... No space left on device (os error 28)')``, and ``torch.save``'s zip
writer as ``RuntimeError('[enforce fail at inline_container.cc:...] . unexpected pos N vs M')`` (given a
path; given a Python file object, the ``OSError`` of the failed write is in the exception's chain).
``is_disk_full`` recognises all of them; ``Checkpointer.save`` (rlx/runtime/checkpoint.py) then removes
its partial write and raises ``DiskFullError``, whose message names the checkpoint directory, the free
space there and the checkpoint's approximate size.
"""

from __future__ import annotations

import errno
import re
import shutil
from pathlib import Path

FULL = (errno.ENOSPC, errno.EDQUOT)
# safetensors' message of ENOSPC / EDQUOT; torch's zip writer after a short write (it hides the errno)
_FULL_TEXT = re.compile(r"No space left on device|os error 28\b|Disk quota exceeded|os error 122\b"
                        r"|inline_container\.cc.*unexpected pos|PytorchStreamWriter failed writing")


class DiskFullError(OSError):
    """No space left where a checkpoint is written (``errno`` ENOSPC); ``str()`` is the one-line message."""

    def __init__(self, message: str, directory: Path, free: int, needed: int):
        super().__init__(errno.ENOSPC, message)
        self.message, self.directory, self.free, self.needed = message, Path(directory), free, needed

    def __str__(self) -> str:
        return self.message


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception in its chain) is a write that failed for lack of space. An
    ``OSError`` with another errno in the chain (EIO, EACCES, ...) is not, whatever the message says."""
    seen, e = set(), exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno is not None:
            return e.errno in FULL
        e = e.__cause__ or e.__context__
    seen, e = set(), exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if _FULL_TEXT.search(str(e)):
            return True
        e = e.__cause__ or e.__context__
    return False


def free_bytes(path: Path) -> int | None:
    """Free bytes on the filesystem of ``path`` (its nearest existing parent), None when unknown."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def tree_bytes(path: Path) -> int:
    """Total size of the regular files under ``path``."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file() and not f.is_symlink())


def tensor_bytes(obj) -> int:
    """Bytes of the tensors in a nested state (dicts, lists, tuples): about what ``torch.save`` writes."""
    if hasattr(obj, "element_size") and hasattr(obj, "nelement"):
        return obj.element_size() * obj.nelement()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def human(n: int | None) -> str:
    if n is None:
        return "an unknown amount"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def disk_full_error(name: str, root: Path, needed: int, source: str, newest: Path | None) -> DiskFullError:
    """The one-line error of a checkpoint ``name`` that did not fit in ``root`` (its partial write removed)."""
    free = free_bytes(root)
    kept = f"the newest complete checkpoint, {newest.name}, is untouched" if newest else "no complete checkpoint exists"
    msg = (f"disk full while writing checkpoint {name} in {root}: {human(free)} free there, a checkpoint needs "
           f"about {human(needed)} ({source}); the partial write was removed and {kept}. Free some space there (or "
           "lower trainer.keep_checkpoints), then continue with trainer.resume=true")
    return DiskFullError(msg, root, free if free is not None else -1, needed)
