"""Trainers: ``online`` (every online algorithm), ``offline`` (preference pairs), ``sft`` and ``rm``."""

from rlx.trainers import embedded, offline, online, rm, sft  # noqa: F401
