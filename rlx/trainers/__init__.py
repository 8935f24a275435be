"""Trainers: ``online`` (every online algorithm), ``sft``; the offline preference loop joins here."""

from rlx.trainers import offline, online, pipeline, rm, sft  # noqa: F401
