"""Environments (``env=``): what turns a prompt into an episode of one or more turns (rlx/envs/base.py)."""

from rlx.envs import calculator, guess, retry, single  # noqa: F401
from rlx.envs.base import Env, EnvError, Episode  # noqa: F401
