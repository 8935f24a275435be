"""``env=single``: one prompt, one completion, the reward. The online loop's single-turn path runs unchanged."""

from __future__ import annotations

from rlx.envs.base import Env
from rlx.registry import ENVS


class SingleTurn(Env):
    multi_turn = False


@ENVS.register("single")
def build_single(cfg) -> SingleTurn:
    return SingleTurn(cfg)
