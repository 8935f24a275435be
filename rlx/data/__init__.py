"""Prompt and preference datasets. Importing registers them."""

from rlx.data import arithmetic, arithmetic_demos, arithmetic_pref, gsm8k, hh_rlhf, jsonl, preference  # noqa: F401
