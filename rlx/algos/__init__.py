"""One file per algorithm: its advantage estimator and loss as pure tensor functions."""

from rlx.algos import grpo, sft  # noqa: F401
