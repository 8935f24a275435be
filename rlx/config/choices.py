"""Valid values of the enum-like config keys, in a module that imports nothing heavy.

Config validation (``rlx.config.validate``) runs before torch or transformers are imported, so that
``python -m rlx`` with a bad value exits with status 2 in well under 5 s. The modules that use these
values define them for themselves; tests/test_reliability.py checks that the two agree. (The algorithms'
own choices, e.g. ``loss_agg_mode``, are checked by the algorithms: rlx/algos/base.py.)
"""

# Learning-rate schedules after warm-up (rlx.trainers.base).
SCHEDULES = ("constant", "linear", "cosine")
# Engine/trainer mismatch corrections, rollout.is_correction (rlx.rollout.correction).
IS_CORRECTIONS = ("none", "tis")
# Parameter dtypes a model may load in.
DTYPES = ("float32", "bfloat16", "float16", "float64")
# torch.compile backends of the compiled path, hardware.compile_backend (rlx.models.compiled).
COMPILE_BACKENDS = ("inductor", "aot_eager", "eager", "cudagraphs")
