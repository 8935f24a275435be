"""A user's Python object by import path (``package.module:name``, ``package.module.name`` or
``path/to/file.py:name``): the reward function of ``reward=python`` and its pre-flight check read it here."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path


def load_module(path: str):
    """(module, module path, attribute name) of ``path``; ValueError naming what is wrong (the form of the path,
    or the import failure of the user's module, whatever it raised)."""
    module_path, _, attr = path.rpartition(":") if ":" in path else path.rpartition(".")
    if not module_path or not attr:
        raise ValueError("expected 'package.module:function' or 'file.py:function'")
    try:
        if module_path.endswith(".py"):
            file = Path(module_path)
            if not file.is_file():
                raise FileNotFoundError(f"no such file {file}")
            spec = importlib.util.spec_from_file_location(f"rlx_user_reward_{file.stem}", file)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_path)
    except Exception as e:  # noqa: BLE001 - any failure of user code is reported in one line
        raise ValueError(f"cannot import '{module_path}' ({type(e).__name__}: {e})") from None
    return module, module_path, attr
