"""Configs: compose (``compose``), the checks of keys and names (``compose.py``), of values (``values.py``),
and the valid choices of enum-like keys (``choices.py``). Nothing here imports a model or data."""

from rlx.config.compose import (
    CONF_DIR,
    GROUPS,
    batch_table,
    check_cli,
    check_names,
    compose,
    group_choices,
    validate,
)
from rlx.config.values import ConfigError

__all__ = ["CONF_DIR", "GROUPS", "ConfigError", "batch_table", "check_cli", "check_names", "compose",
           "group_choices", "validate"]
