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

from rlx.registry import REWARDS
from rlx.runtime.user_code import load_module


def import_function(path: str):
    """The callable at ``module:function``, ``module.function`` or ``file.py:function``; loud errors."""
    if not path or not isinstance(path, str):
        raise ValueError("reward.fn is not set: give the import path of your function, e.g. "
                         "reward.fn=my_pkg.rewards:score")
    try:
        module, module_path, attr = load_module(path)
    except ValueError as e:
        raise ValueError(f"reward.fn={path}: {e}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"reward.fn={path}: '{module_path}' has no callable '{attr}'")
    return fn


@REWARDS.register("python")
def build_python(cfg):
    return import_function(cfg.function)
