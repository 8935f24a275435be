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
    prm_steps,
    step_pairs,
    sums,
    sums_prm,
    sums_steps,
)
