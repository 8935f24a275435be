"""transformers' KV cache as the sampler and the shared-prompt log-probs use it: the forward's cache argument,
a new cache, and whether its layers are plain full-attention ones."""

from __future__ import annotations

import functools
import inspect


def cache_kwarg(model) -> str | None:
    """Name of the forward's cache argument (``cache`` from transformers 5.2x, ``past_key_values`` before)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return _cache_kwarg(type(base))


@functools.lru_cache(maxsize=64)
def _cache_kwarg(cls) -> str | None:
    params = inspect.signature(cls.forward).parameters
    return "cache" if "cache" in params else "past_key_values" if "past_key_values" in params else None


def new_cache(model):
    from transformers import DynamicCache

    config = getattr(model, "config", None)
    try:
        return DynamicCache(config=config)
    except TypeError:  # older transformers: no config argument
        return DynamicCache()


def plain_layers(cache) -> bool:
    """True when every layer is a plain full-attention DynamicLayer (rows can be copied and selected)."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) is DynamicLayer and layer.is_initialized for layer in layers)
