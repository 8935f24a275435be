"""Trainers: ``online`` (every online algorithm), ``offline`` (preference pairs), ``sft``, ``rm`` and ``prm``."""

from rlx.trainers import embedded, offline, online, prm, rm, sft  # noqa: F401
