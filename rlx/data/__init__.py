"""Prompt and preference datasets. Importing registers them."""

from rlx.data import arithmetic, arithmetic_pref, hh_rlhf, preference  # noqa: F401
