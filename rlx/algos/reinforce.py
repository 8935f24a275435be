"""REINFORCE — vanilla policy gradient (Williams 1992, "Simple statistical gradient-following
algorithms for connectionist reinforcement learning", Machine Learning 8; baseline b = 0).

    ∇J = E[ r(x, y) · Σ_t ∇ log π_θ(y_t | x, y_<t) ]        A_{i,t} = r_i   (no baseline)

This file also holds what the critic-free REINFORCE family (rloo, reinforce_pp, reinforce_pp_baseline,
remax, reinforce_rej, raft_pp) shares:

* ``pg_loss``: the importance-weighted, clipped surrogate of PPO (arXiv:1707.06347 eq. 7) as used by
  REINFORCE++ and by Xiong et al. (arXiv:2504.11343 §2) for their Reinforce; on-policy (one epoch, one
  mini-batch) the ratio is 1, the clip is inactive and the gradient is exactly REINFORCE's, with
  loss value −agg(A). An optional KL-to-reference loss term (β > 0, GRPO-style) is added.
* ``PolicyGradient``: the algorithm base of the family (``pg_loss`` on ``estimate``'s advantages), and
  ``KLInReward``, which puts the KL into the reward first (``kl_control``; keys ``kl_coef``, ``kl_penalty``,
  ``adaptive_kl``, ``kl_target``, ``kl_horizon``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rlx.algos.base import Aggregated, check, check_choice
from rlx.algos.kl_control import KLController, sequence_kl, token_kl
from rlx.algos.surrogate import ClippedRatio, DualClip, KLInLoss, clipped_surrogate, kl_loss
from rlx.ops import KL_ESTIMATORS
from rlx.registry import ALGOS


def pg_loss(logp, old_logp, advantages, response_mask, ref_logp=None, *, eps_low=0.2, eps_high=0.2, beta=0.0,
            kl_estimator="k3", loss_agg_mode="token_mean", num_tokens=None, num_seqs=None, max_len=None,
            is_weights=None, clip_ratio_c=None):
    """L = agg_t[ −min(ρ_t A_t, clip(ρ_t, 1−ε_low, 1+ε_high) A_t) ] (+ β·agg KL_est(π_θ‖π_ref) when β > 0).

    With ρ = 1 (on-policy) the value is −agg(A) and the gradient −agg(A ∇log π) (REINFORCE).
    ``policy/kl_ref`` is logged whenever ``ref_logp`` is given, also when β = 0. ``is_weights`` [n, T]
    (rollout.is_correction) multiply the surrogate's per-token terms; ``clip_ratio_c`` is the dual-clip bound
    (None = off).
    """
    norm = dict(loss_agg_mode=loss_agg_mode, num_tokens=num_tokens, num_seqs=num_seqs, max_len=max_len)
    loss, metrics = clipped_surrogate(logp, old_logp, advantages, response_mask, eps_low=eps_low,
                                      eps_high=eps_high, is_weights=is_weights, clip_ratio_c=clip_ratio_c, **norm)
    if ref_logp is not None:
        kl_term, kl_metrics = kl_loss(logp, ref_logp, response_mask, beta=beta, estimator=kl_estimator, **norm)
        metrics.update(kl_metrics)
        if beta > 0:
            loss = loss + kl_term
    metrics["loss/total"] = loss.detach()
    return loss, metrics


def per_token(seq_values: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Broadcast one value per sample [N] to every token [N, T] (0 at padding)."""
    v = seq_values.to(torch.float32).unsqueeze(-1).expand(response_mask.shape)
    return torch.where(response_mask, v, torch.zeros_like(v))


def reinforce_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """Vanilla REINFORCE: A_i = r_i (Williams 1992, baseline b = 0)."""
    return rewards.to(torch.float32)


@dataclass(frozen=True, kw_only=True)
class PolicyGradient(Aggregated, ClippedRatio, DualClip, KLInLoss):
    """The REINFORCE family: ``estimate``'s advantages (on the KL-penalised reward with ``KLInReward``), then
    ``pg_loss`` (with the dual-clip ``clip_ratio_c``)."""


    def reward_kl(self, batch) -> tuple[torch.Tensor | None, float, dict]:
        """(KL_t [N, T] or None, β, metrics) of the KL in the reward. Default: none."""
        return None, 0.0, {}

    def advantages(self, batch):
        kl, coef, metrics = self.reward_kl(batch)
        adv, extra = self.estimate(batch, kl=kl, kl_coef=coef)
        return adv.to(torch.float32), {**metrics, **extra}

    def estimate(self, batch, *, kl, kl_coef) -> tuple[torch.Tensor, dict]:
        """(token advantages [N, T], metrics). Sequence-level methods use ``self.sequence_rewards`` (r − β Σ_t KL_t)."""
        raise NotImplementedError

    @staticmethod
    def sequence_rewards(batch, kl, kl_coef) -> torch.Tensor:
        """r_i − β Σ_t KL_t (the KL-penalised sequence reward; r_i when there is no KL in the reward)."""
        return batch.rewards if kl is None else batch.rewards - kl_coef * sequence_kl(kl, batch.response_mask)

    def extras(self, **values) -> dict:
        """Extras under the algorithm's own prefix (metrics.py: ``<algo>/<name>``)."""
        return {f"{self.name}/{k}": float(v) for k, v in values.items()}

    def loss(self, logp, mb):
        return pg_loss(logp, mb.old_logp, mb.advantages, mb.response_mask, mb.ref_logp, eps_low=self.eps_low,
                       eps_high=self.eps_high, beta=self.beta, kl_estimator=self.kl_estimator,
                       loss_agg_mode=self.loss_agg_mode, is_weights=mb.is_weights, clip_ratio_c=self.clip_ratio_c,
                       **mb.norm)


@dataclass(frozen=True, kw_only=True)
class KLInReward(PolicyGradient):
    """−β·KL_t(π_old‖π_ref) in the token rewards before the advantages; β fixed or adaptive (kl_control.py)."""

    kl_coef: float
    kl_penalty: str
    adaptive_kl: bool
    kl_target: float
    kl_horizon: float
    kl_ctl: KLController = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.kl_coef >= 0, f"algo.kl_coef={self.kl_coef}: must be >= 0")
        check_choice("kl_penalty", self.kl_penalty, KL_ESTIMATORS)
        check(not self.adaptive_kl or (self.kl_target > 0 and self.kl_horizon > 0),
              f"algo.adaptive_kl=true needs algo.kl_target > 0 and algo.kl_horizon > 0 "
              f"(got {self.kl_target}, {self.kl_horizon})")
        object.__setattr__(self, "kl_ctl", KLController(self.kl_coef, self.adaptive_kl, self.kl_target,
                                                        self.kl_horizon))

    @property
    def kl_in_reward(self) -> bool:
        return self.kl_ctl.value > 0

    @property
    def requires(self) -> frozenset[str]:
        return super().requires | ({"ref_logp", "old_logp"} if self.kl_in_reward else set())

    def reward_kl(self, batch):
        if not self.kl_in_reward:
            return None, 0.0, {}
        if batch.old_logp is None or batch.ref_logp is None:
            raise RuntimeError(f"{self.name}: KL in the reward needs the batch's old and reference log-probs "
                               "(the trainer computes them when the algorithm requires old_logp and ref_logp)")
        kl = token_kl(batch.old_logp, batch.ref_logp, batch.response_mask, self.kl_penalty)
        coef = self.kl_ctl.value
        current = sequence_kl(kl, batch.response_mask).mean().item()
        self.kl_ctl.update(current, n_steps=len(batch.rewards))
        return kl, coef, self.extras(kl_coef=coef, kl_reward=current)

    def state_dict(self) -> dict:
        return {"kl_ctl": self.kl_ctl.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if "kl_ctl" in state:
            self.kl_ctl.load_state_dict(state["kl_ctl"])


@ALGOS.register("reinforce")
@dataclass(frozen=True, kw_only=True)
class Reinforce(PolicyGradient):
    min_group_size = 1   # no group baseline: G = 1 is allowed

    def estimate(self, batch, *, kl, kl_coef):
        seq = reinforce_advantages(self.sequence_rewards(batch, kl, kl_coef))
        return per_token(seq, batch.response_mask), {}
