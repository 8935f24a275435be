"""RAFT — Reward rAnked FineTuning (Dong et al. 2023, arXiv:2304.06767, Algorithm 1): sample G
responses per prompt, keep the best one by reward, and fine-tune on it by maximum likelihood.

    keep_i = 𝟙[i = argmax_j r_j  and  r_i ≥ min_reward]       (one sample per prompt; ties → the first)
    L      = −agg_t log π_θ(y_t | x, y_<t)   over kept samples      (SFT; no ratio, no clip)

``min_reward`` adapts best-of-G to verifiable rewards the way Xiong et al. (arXiv:2504.11343) run
RAFT: only positively rewarded (correct) samples are trained on, so a prompt whose best sample is
still wrong contributes nothing. The advantage is 1 for every kept token (what SFT weights by).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from rlx.algos.base import Aggregated, PolicyAlgorithm
from rlx.algos.reinforce import per_token
from rlx.ops import aggregate
from rlx.registry import ALGOS


def best_of_group(rewards: torch.Tensor, min_reward: float, keep_ties: bool = False) -> torch.Tensor:
    """Bool [B, G] for rewards [B, G]: the highest-reward sample(s) of each group, if ≥ min_reward.

    ``keep_ties=False``: exactly one per group (the first argmax, RAFT); ``True``: every sample
    whose reward equals the group maximum (RAFT++'s indicator 𝟙[r_i = max_j r_j]).
    """
    best = rewards.max(-1, keepdim=True).values
    if keep_ties:
        mask = rewards == best
    else:
        mask = torch.zeros_like(rewards, dtype=torch.bool).scatter_(-1, rewards.argmax(-1, keepdim=True), True)
    return mask & (best >= min_reward)


def raft_loss(logp, response_mask, loss_agg_mode="token_mean", num_tokens=None, num_seqs=None, max_len=None,
              is_weights=None):
    """(loss, metrics): negative log-likelihood of the kept samples, L = −agg_t log π_θ(y_t|·) (−agg_t w_t·log π_θ
    with ``is_weights`` [n, T], rollout.is_correction)."""
    per_token = -logp if is_weights is None else -logp * is_weights
    loss = aggregate(per_token, response_mask, loss_agg_mode, num_tokens=num_tokens, num_seqs=num_seqs, max_len=max_len)
    return loss, {"loss/policy": loss.detach(), "loss/total": loss.detach()}


@ALGOS.register("raft")
@dataclass(frozen=True, kw_only=True)
class RAFT(Aggregated, PolicyAlgorithm):
    min_reward: float
    keep_ties: ClassVar[bool] = False

    def keep(self, rewards: torch.Tensor) -> torch.Tensor:
        """Groups with at least one sample to train on (best reward ≥ min_reward)."""
        return rewards.max(-1).values >= self.min_reward

    def keep_samples(self, rewards: torch.Tensor):
        mask = best_of_group(rewards, self.min_reward, self.keep_ties)
        return mask, {f"{self.name}/kept_frac": mask.float().mean().item()}

    def advantages(self, batch):
        return per_token(torch.ones_like(batch.rewards, dtype=torch.float32), batch.response_mask), {}

    def loss(self, logp, mb):
        return raft_loss(logp, mb.response_mask, self.loss_agg_mode, is_weights=mb.is_weights, **mb.norm)
