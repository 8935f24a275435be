"""RAFT++ (Xiong et al. 2025, "A Minimalist Approach to LLM Reasoning", arXiv:2504.11343 §2): RAFT
with the importance sampling and clipping of PPO, trained only on the best samples of each prompt.

    L = −(1/|D|) Σ_{(x,y)∈D} (1/|y|) Σ_t min(ρ_t, clip(ρ_t, 1−ε, 1+ε)) · 𝟙[r(x,y) = max_j r(x,y_j)]

i.e. the clipped surrogate with A = 1 on every sample with the group's highest reward (all ties
kept; only rewards ≥ ``min_reward``, the paper's positive samples) and nothing elsewhere. The ratio
ρ_t = π_θ/π_old matters once a rollout batch feeds several optimizer steps (mini-batches or
epochs): the paper reports that clipping is essential and that IS without clipping is worse than RAFT.
"""

from __future__ import annotations

from rlx.algos.raft import RAFT
from rlx.algos.reinforce import pg_loss
from rlx.registry import ALGOS


class RAFTPP(RAFT):
    keep_ties = True

    def loss(self, logp, old_logp, advantages, response_mask, ref_logp=None, **norm):
        c = self.cfg
        return pg_loss(logp, old_logp, advantages, response_mask, ref_logp, eps_low=c.eps_low, eps_high=c.eps_high,
                       beta=c.beta, kl_estimator=c.kl_estimator, loss_agg_mode=c.loss_agg_mode, **norm)


@ALGOS.register("raft_pp")
def build_raft_pp(cfg) -> RAFTPP:
    return RAFTPP(cfg)
