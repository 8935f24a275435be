"""rlx: configuration-driven RL and preference optimisation for language models.

    import rlx
    cfg = rlx.compose(["algo=grpo"])
    reward_fn = rlx.build("reward", cfg.reward)
    result = rlx.run(cfg)
"""

from rlx.catalogue import build
from rlx.config import ConfigError, compose
from rlx.runner import run

__all__ = ["compose", "build", "run", "ConfigError"]
__version__ = "0.1.0"
