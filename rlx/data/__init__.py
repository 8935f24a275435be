"""Prompt and preference datasets. Importing registers them."""

from rlx.data import arithmetic  # noqa: F401
