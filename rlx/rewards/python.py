"""A user's reward function by import path: ``reward=python reward.fn=my_pkg.rewards:score``.

The function is called exactly as a built-in term: ``fn(prompts, completions, **fields) -> list[float]``
with the data's fields (``answer``, ...) and ``completion_ids``, so it should accept ``**fields``.
The path is ``package.module:function`` (or ``package.module.function``), importable from the
current environment, or ``path/to/file.py:function`` for a file outside any package (loaded with
importlib, as verl's ``custom_reward_function.path`` and OpenRLHF's ``--reward.remote_url x.py``).
It runs isolated like every term: exceptions, wrong lengths, non-numbers and overruns of
``reward.timeout_s`` fail only the samples concerned (composite.py).
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from rlx.registry import REWARDS


def import_function(path: str):
    """The callable at ``module:function``, ``module.function`` or ``file.py:function``; loud errors."""
    if not path or not isinstance(path, str):
        raise ValueError("reward.fn is not set: give the import path of your function, e.g. "
                         "reward.fn=my_pkg.rewards:score")
    module_path, sep, attr = path.rpartition(":") if ":" in path else path.rpartition(".")
    if not module_path or not attr:
        raise ValueError(f"reward.fn={path}: expected 'package.module:function' or 'file.py:function'")
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
    except Exception as e:
        raise ValueError(f"reward.fn={path}: cannot import '{module_path}' ({type(e).__name__}: {e})") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"reward.fn={path}: '{module_path}' has no callable '{attr}'")
    return fn


@REWARDS.register("python")
def build_python(cfg):
    return import_function(cfg.function)
