"""Valid values of the enum-like config keys, in a module that imports nothing heavy.

Config validation (``rlx.config.validate``) runs before torch or transformers are imported, so that
``python -m rlx`` with a bad value exits with status 2 in well under 5 s. The modules that use these
values (``rlx.ops``, ``rlx.algos.common``) define them for themselves; tests/test_reliability.py
checks that the two agree.
"""

# Loss aggregation modes (rlx.ops.aggregate).
AGG_MODES = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_mean_token_sum_norm")
# KL estimators (rlx.ops.kl_penalty); a "+" suffix is the straight-through variant.
KL_ESTIMATORS = ("k1", "k2", "k3", "low_var_kl")
KL_ESTIMATORS_ALL = KL_ESTIMATORS + tuple(k + "+" for k in KL_ESTIMATORS)
# Clip modes of the clipped surrogate (rlx.algos.common).
CLIP_MODES = ("standard", "stop_gradient")
# Learning-rate schedules after warm-up (rlx.trainers.base).
SCHEDULES = ("constant", "linear", "cosine")
# Engine/trainer mismatch corrections, rollout.is_correction (rlx.rollout.correction).
IS_CORRECTIONS = ("none", "tis")
# Parameter dtypes a model may load in.
DTYPES = ("float32", "bfloat16", "float16")
