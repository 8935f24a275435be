"""Trainers: ``online`` (every online algorithm), ``sft``; the offline preference loop joins here."""

from rlx.trainers import online, sft  # noqa: F401
