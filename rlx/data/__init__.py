"""Prompt and preference datasets. Importing registers them."""

from rlx.data import (  # noqa: F401
    arithmetic,
    arithmetic_demos,
    arithmetic_pref,
    calculator,
    gsm8k,
    guess,
    hh_rlhf,
    jsonl,
    preference,
    sums,
)
