"""REINFORCE — vanilla policy gradient (Williams 1992, "Simple statistical gradient-following
algorithms for connectionist reinforcement learning", Machine Learning 8; baseline b = 0).

    ∇J = E[ r(x, y) · Σ_t ∇ log π_θ(y_t | x, y_<t) ]        A_{i,t} = r_i   (no baseline)

This file also holds what the critic-free REINFORCE family (rloo, reinforce_pp, reinforce_pp_baseline,
remax, reinforce_rej, raft_pp) shares:

* ``pg_loss``: the importance-weighted, clipped surrogate of PPO (arXiv:1707.06347 eq. 7) as used by
  REINFORCE++ and by Xiong et al. (arXiv:2504.11343 §2) for their Reinforce; on-policy (one epoch, one
  mini-batch) the ratio is 1, the clip is inactive and the gradient is exactly REINFORCE's, with
  loss value −agg(A). An optional KL-to-reference loss term (β > 0, GRPO-style) is added.
* ``PolicyGradient``: an Algorithm that optionally puts the KL into the reward (``kl_control``;
  keys ``kl_coef``, ``kl_penalty``, ``adaptive_kl``, ``kl_target``, ``kl_horizon``) before asking the
  subclass for its advantages. Without a ``kl_coef`` key the algorithm has no KL in the reward.
"""

from __future__ import annotations

import torch

from rlx.algos.base import Algorithm
from rlx.algos.common import clipped_surrogate, kl_loss
from rlx.algos.kl_control import KLController, sequence_kl, token_kl
from rlx.registry import ALGOS


def pg_loss(logp, old_logp, advantages, response_mask, ref_logp=None, *, eps_low=0.2, eps_high=0.2, beta=0.0,
            kl_estimator="k3", loss_agg_mode="token_mean", num_tokens=None, num_seqs=None, max_len=None,
            is_weights=None):
    """L = agg_t[ −min(ρ_t A_t, clip(ρ_t, 1−ε_low, 1+ε_high) A_t) ] (+ β·agg KL_est(π_θ‖π_ref) when β > 0).

    With ρ = 1 (on-policy) the value is −agg(A) and the gradient −agg(A ∇log π) (REINFORCE).
    ``policy/kl_ref`` is logged whenever ``ref_logp`` is given, also when β = 0. ``is_weights`` [n, T]
    (rollout.is_correction) multiply the surrogate's per-token terms.
    """
    norm = dict(loss_agg_mode=loss_agg_mode, num_tokens=num_tokens, num_seqs=num_seqs, max_len=max_len)
    loss, metrics = clipped_surrogate(logp, old_logp, advantages, response_mask, eps_low=eps_low,
                                      eps_high=eps_high, is_weights=is_weights, **norm)
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


class PolicyGradient(Algorithm):
    """The REINFORCE family: optional KL in the reward, then ``estimate``, then ``pg_loss``."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.kl_ctl = None
        if "kl_coef" in cfg:
            self.kl_ctl = KLController(cfg.kl_coef, cfg.adaptive_kl, cfg.kl_target, cfg.kl_horizon)

    @property
    def kl_in_reward(self) -> bool:
        return self.kl_ctl is not None and self.kl_ctl.value > 0

    @property
    def needs_ref(self) -> bool:
        return float(self.cfg.get("beta", 0.0)) > 0 or self.kl_in_reward

    @property
    def needs_old_logp(self) -> bool:
        return self.kl_in_reward

    def advantages(self, rewards, response_mask, batch=None, metrics=None, **_):
        kl, coef = None, 0.0
        if self.kl_in_reward:
            if batch is None or batch.old_logp is None or batch.ref_logp is None:
                raise RuntimeError(f"{self.name}: KL in the reward needs the batch's old and reference log-probs "
                                   "(the trainer computes them when algo.needs_old_logp / needs_ref)")
            kl = token_kl(batch.old_logp, batch.ref_logp, response_mask, self.cfg.kl_penalty)
            coef = self.kl_ctl.value
            current = sequence_kl(kl, response_mask).mean().item()
            self.kl_ctl.update(current, n_steps=len(rewards))
            self.log(metrics, kl_coef=coef, kl_reward=current)
        adv = self.estimate(rewards, response_mask, kl=kl, kl_coef=coef, batch=batch, metrics=metrics)
        return adv.to(torch.float32)

    def estimate(self, rewards, response_mask, *, kl, kl_coef, batch, metrics) -> torch.Tensor:
        """Token advantages [N, T]. Sequence-level methods use ``self.sequence_rewards`` (r − β Σ_t KL_t)."""
        raise NotImplementedError

    @staticmethod
    def sequence_rewards(rewards, response_mask, kl, kl_coef) -> torch.Tensor:
        """r_i − β Σ_t KL_t (the KL-penalised sequence reward; r_i when there is no KL in the reward)."""
        return rewards if kl is None else rewards - kl_coef * sequence_kl(kl, response_mask)

    def log(self, metrics, **values) -> None:
        """Extras under the algorithm's own prefix (metrics.py: ``<algo>/<name>``)."""
        if metrics is not None:
            metrics.update({f"{self.name}/{k}": float(v) for k, v in values.items()})

    def loss(self, logp, old_logp, advantages, response_mask, ref_logp=None, **norm):
        c = self.cfg
        return pg_loss(logp, old_logp, advantages, response_mask, ref_logp, eps_low=c.eps_low, eps_high=c.eps_high,
                       beta=c.beta, kl_estimator=c.kl_estimator, loss_agg_mode=c.loss_agg_mode, **norm)

    def state_dict(self) -> dict:
        return {"kl_ctl": self.kl_ctl.state_dict()} if self.kl_ctl is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.kl_ctl is not None and "kl_ctl" in state:
            self.kl_ctl.load_state_dict(state["kl_ctl"])


class Reinforce(PolicyGradient):
    def estimate(self, rewards, response_mask, *, kl, kl_coef, batch, metrics):
        return per_token(reinforce_advantages(self.sequence_rewards(rewards, response_mask, kl, kl_coef)),
                         response_mask)


@ALGOS.register("reinforce")
def build_reinforce(cfg) -> Reinforce:
    return Reinforce(cfg)
