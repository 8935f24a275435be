"""One file per algorithm: its advantage estimator and loss as pure tensor functions, and the frozen dataclass the
registry builds from its preset (rlx/algos/base.py)."""

# Families: GRPO (aepo arpo cispo dapo dr_grpo gigpo gmpo grpo gspo gspo_token tree_grpo ufo); PPO with a critic (ppo
# ppo_ptx vapo; rm trains reward models); critic-free REINFORCE (raft raft_pp reinforce reinforce_pp
# reinforce_pp_baseline reinforce_rej remax rloo); label-free (rlsc ttrl); offline preference (dpo ipo kto
# odpo orpo rrhf simpo); sft.
from rlx.algos import (  # noqa: F401
    aepo,
    arpo,
    cispo,
    dapo,
    dpo,
    dr_grpo,
    gigpo,
    gmpo,
    grpo,
    gspo,
    gspo_token,
    ipo,
    kto,
    odpo,
    orpo,
    ppo,
    ppo_ptx,
    raft,
    raft_pp,
    reinforce,
    reinforce_pp,
    reinforce_pp_baseline,
    reinforce_rej,
    remax,
    rloo,
    rlsc,
    rm,
    rrhf,
    sft,
    simpo,
    tree_grpo,
    ttrl,
    ufo,
    vapo,
)
