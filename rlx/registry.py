"""Name registries: each config group's ``name:`` (or ``fn:`` for reward terms) resolves here.

``Registry(kind).register(name)`` decorates a factory; ``build(cfg)`` calls the factory registered
under ``cfg.name`` with the config node. Unknown names fail loudly with the closest valid choice.
This is the only module that maps names to components (docs/design.md). It imports no component:
``rlx.catalogue`` imports the component packages, whose decorators fill these registries.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable


class RegistryError(KeyError):
    """An unknown component name; the message names the closest valid choice."""

    def __str__(self) -> str:  # KeyError quotes its message; we do not want that
        return str(self.args[0])


def closest(name: str, choices) -> str | None:
    match = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.5)
    return match[0] if match else None


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable:
        def deco(factory):
            if name in self._factories:
                raise ValueError(f"{self.kind} '{name}' registered twice")
            self._factories[name] = factory
            return factory

        return deco

    def names(self) -> list[str]:
        return sorted(self._factories)

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._factories:
            hint = closest(name, self._factories)
            did = f"; did you mean '{hint}'?" if hint else ""
            raise RegistryError(
                f"unknown {self.kind} '{name}'{did} (valid: {', '.join(self.names())})"
            )
        return self._factories[name]

    def build(self, cfg, *args, key: str = "name", **kwargs) -> Any:
        return self.get(cfg[key])(cfg, *args, **kwargs)


ALGOS = Registry("algo")
MODELS = Registry("model source")
REWARDS = Registry("reward function")
DATA = Registry("data")
TRACKERS = Registry("tracker")
TRAINERS = Registry("trainer")
ENGINES = Registry("rollout engine")
ENVS = Registry("env")

_KINDS = {
    "algo": ALGOS,
    "model": MODELS,
    "reward": REWARDS,
    "data": DATA,
    "tracker": TRACKERS,
    "trainer": TRAINERS,
    "engine": ENGINES,
    "env": ENVS,
}


def registry(kind: str) -> Registry:
    if kind not in _KINDS:
        hint = closest(kind, _KINDS)
        raise RegistryError(f"unknown registry kind '{kind}'" + (f"; did you mean '{hint}'?" if hint else ""))
    return _KINDS[kind]
