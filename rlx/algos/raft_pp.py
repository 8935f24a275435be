"""RAFT++ (Xiong et al. 2025, "A Minimalist Approach to LLM Reasoning", arXiv:2504.11343 §2): RAFT
with the importance sampling and clipping of PPO, trained only on the best samples of each prompt.

    L = −(1/|D|) Σ_{(x,y)∈D} (1/|y|) Σ_t min(ρ_t, clip(ρ_t, 1−ε, 1+ε)) · 𝟙[r(x,y) = max_j r(x,y_j)]

i.e. the clipped surrogate with A = 1 on every sample with the group's highest reward (all ties
kept; only rewards ≥ ``min_reward``, the paper's positive samples) and nothing elsewhere. The ratio
ρ_t = π_θ/π_old matters once a rollout batch feeds several optimizer steps (mini-batches or
epochs): the paper reports that clipping is essential and that IS without clipping is worse than RAFT.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlx.algos.raft import RAFT
from rlx.algos.reinforce import pg_loss
from rlx.algos.surrogate import ClippedRatio, KLInLoss
from rlx.registry import ALGOS


@ALGOS.register("raft_pp")
@dataclass(frozen=True, kw_only=True)
class RAFTPP(RAFT, ClippedRatio, KLInLoss):
    keep_ties = True

    def loss(self, logp, mb):
        return pg_loss(logp, mb.old_logp, mb.advantages, mb.response_mask, mb.ref_logp, eps_low=self.eps_low,
                       eps_high=self.eps_high, beta=self.beta, kl_estimator=self.kl_estimator,
                       loss_agg_mode=self.loss_agg_mode, is_weights=mb.is_weights, **mb.norm)
