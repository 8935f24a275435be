"""The catalogue: imports every component package, so that their ``@register`` decorators fill the
registries of ``rlx.registry``, and builds components by kind. The one module allowed to import every
layer below the entry points (explicit imports, no discovery: docs/design.md)."""

from __future__ import annotations

from typing import Any

from rlx.registry import MODELS, registry


def load() -> None:
    """Import the component packages (idempotent; Python caches the modules)."""
    import rlx.algos  # noqa: F401
    import rlx.data  # noqa: F401
    import rlx.envs  # noqa: F401
    import rlx.models  # noqa: F401
    import rlx.pipeline  # noqa: F401   (experiment=rlhf_pipeline: a run of runs, above the runner)
    import rlx.rewards  # noqa: F401
    import rlx.rollout  # noqa: F401
    import rlx.track  # noqa: F401
    import rlx.trainers  # noqa: F401


def build(kind: str, cfg, *args, **kwargs) -> Any:
    """``rlx.build(kind, cfg)``: the object a config node describes.

    ``model`` nodes are keyed by ``source`` (embedded | hub), because many presets share one loader;
    ``reward`` nodes are composites of ``terms``, each keyed by its ``fn``; ``algo`` nodes build the
    registered dataclass as ``cls(**fields)`` (``Algorithm.from_config``).
    """
    load()
    if kind == "algo":
        return registry("algo").get(cfg.name).from_config(cfg, *args, **kwargs)
    if kind == "model":
        return MODELS.build(cfg, *args, key="source", **kwargs)
    if kind == "reward":
        from rlx.rewards.composite import CompositeReward

        return CompositeReward(cfg)
    return registry(kind).build(cfg, *args, **kwargs)
