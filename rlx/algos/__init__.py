"""One file per algorithm: its advantage estimator and loss as pure tensor functions."""

# Families: GRPO (cispo dapo dr_grpo gmpo grpo gspo gspo_token); PPO with a critic (ppo; rm trains reward
# models); critic-free REINFORCE (raft raft_pp reinforce reinforce_pp reinforce_pp_baseline reinforce_rej
# remax rloo); label-free (rlsc ttrl); offline preference (dpo ipo kto odpo orpo rrhf simpo); sft.
from rlx.algos import (  # noqa: F401
    grpo,
    raft,
    raft_pp,
    reinforce,
    reinforce_pp,
    reinforce_pp_baseline,
    reinforce_rej,
    remax,
    rlsc,
    rloo,
    sft,
    ttrl,
)
