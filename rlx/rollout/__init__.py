"""Generation engines behind one interface (``RolloutEngine.generate``)."""

from rlx.rollout import hf, ray_actors, vllm  # noqa: F401
from rlx.rollout.base import Rollout, RolloutEngine  # noqa: F401
