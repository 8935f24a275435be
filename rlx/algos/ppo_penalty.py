"""PPO-penalty — PPO with an adaptive KL penalty instead of the clip (Schulman et al. 2017, "Proximal Policy
Optimization Algorithms", arXiv:1707.06347 §4 "Adaptive KL Penalty Coefficient", eq. 8; the penalised form of
TRPO, arXiv:1502.05477). Everything else is ``rlx.algos.ppo``: GAE advantages from a learned critic, the clipped
value loss, the score and a (fixed) β·KL to the reference in the per-token reward.

Per token, no clipping (eq. 8, as a loss; r_t = π_θ(a_t|s_t)/π_old(a_t|s_t)):

    L = agg_t[ −r_t·Â_t + β·KL_t ],      KL_t = (r_t − 1) − log r_t

KL_t is the k3 estimate (Schulman 2020, "Approximating KL divergence") of KL(π_old‖π_θ) on the sampled token,
drawn from π_old: unbiased and ≥ 0, and its gradient (r_t − 1)·∇log π_θ is an unbiased gradient of
KL(π_old‖π_θ) (the paper's penalty is the full-distribution KL per state; a language model's is a sum over the
vocabulary, so the sampled-token estimate stands in for it). After each policy update, with d the measured
KL(π_old‖π_θ) (§4):

    d < d_targ / 1.5  →  β ← β / 2          d > d_targ · 1.5  →  β ← β · 2          (else β unchanged)

and the new β is used for the next update. β starts at ``init_kl_coef``; d_targ is ``kl_target``.

Where d comes from. The online loop calls ``loss`` once per micro-batch (every epoch, every mini-batch) and
has no per-step hook after the update; so ``loss`` adds each micro-batch's Σ_t KL_t and its valid-token count to
the ``AdaptiveKLPenalty`` state, and the next step's ``advantages`` (called once per step, before that step's
update) closes the measurement: d = Σ KL_t / Σ tokens over every micro-batch of the previous update — the
token-weighted mean the step logged as ``policy/kl_old`` — and moves β. d is therefore the mean KL along the
update (each micro-batch measured before its own optimizer step; the first mini-batch of the first epoch is at
θ = θ_old, KL 0), as a rule below the KL after the update; the controller drives this number to d_targ. The
pending sums are part of ``state_dict`` (with β), so a resume between two steps continues exactly. Under
torch.distributed the sums are all-reduced before d is formed, so every rank moves β alike (a checkpoint holds
rank 0's pending sums). Steps without a policy update (critic warm-up, nothing kept) observe nothing and leave β.

Keys: ``kl_target`` here is d_targ of the penalty (per-token KL(π_old‖π_θ)), not the reward-KL controller's
target of ``algo=ppo``; the KL to the reference in the reward keeps the fixed coefficient ``beta`` (no adaptive
controller: ``kl_ctrl`` and ``kl_horizon`` are not keys here), and there is no clip (no ``eps_low``/``eps_high``).
Metrics: ``ppo_penalty/kl_coef`` (β of this step's update) and ``ppo_penalty/kl_measured`` (d of the previous
update, the one that set this β).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from rlx.algos.base import check
from rlx.algos.ppo import PPO
from rlx.ops import aggregate, kl_penalty, masked_mean
from rlx.registry import ALGOS


def adapt_kl_coef(kl_coef: float, measured_kl: float, target: float) -> float:
    """One step of the adaptive rule of arXiv:1707.06347 §4: halve β below d_targ/1.5, double it above d_targ·1.5."""
    if measured_kl < target / 1.5:
        return kl_coef / 2.0
    if measured_kl > target * 1.5:
        return kl_coef * 2.0
    return kl_coef


class AdaptiveKLPenalty:
    """β of the KL(π_old‖π_θ) penalty, and the running measurement of the update that will move it."""

    def __init__(self, init_kl_coef: float, target: float):
        self.value, self.target = float(init_kl_coef), float(target)
        self.kl_sum, self.n_tokens = 0.0, 0.0

    def observe(self, kl_sum: float, n_tokens: float) -> None:
        """Add one micro-batch's Σ_t KL_t over ``n_tokens`` valid tokens (a non-finite value is left out: a bad
        forward the trainer's guard skips must not poison β)."""
        if n_tokens > 0 and math.isfinite(kl_sum):
            self.kl_sum += float(kl_sum)
            self.n_tokens += float(n_tokens)

    def update(self) -> float | None:
        """Close the measurement: d = Σ KL / Σ tokens (over all ranks), β adapted to it, sums reset; returns d, or
        None when nothing was observed (β unchanged)."""
        kl_sum, n = self.kl_sum, self.n_tokens
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            t = torch.tensor([kl_sum, n], dtype=torch.float64)
            torch.distributed.all_reduce(t)
            kl_sum, n = t.tolist()
        self.kl_sum, self.n_tokens = 0.0, 0.0
        if n <= 0:
            return None
        d = kl_sum / n
        self.value = adapt_kl_coef(self.value, d, self.target)
        return d

    def state_dict(self) -> dict:
        return {"kl_coef": self.value, "kl_sum": self.kl_sum, "n_tokens": self.n_tokens}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["kl_coef"])
        self.kl_sum, self.n_tokens = float(state["kl_sum"]), float(state["n_tokens"])


def kl_penalty_loss(logp, old_logp, advantages, response_mask, ref_logp=None, *, kl_coef: float, loss_agg_mode: str,
                    kl_estimator: str = "k3", num_tokens=None, num_seqs=None, max_len=None, is_weights=None):
    """(loss, metrics): agg(−r·Â) + β·agg(KL_t(π_old‖π_θ)) for token log-probs [n, T] (eq. 8); ``is_weights``
    [n, T] (rollout.is_correction) multiply the surrogate's per-token term. ``policy/kl_old`` is the masked mean
    of the penalty's KL_t; the KL to the reference (in the reward) is only measured (``policy/kl_ref``)."""
    norm = dict(num_tokens=num_tokens, num_seqs=num_seqs, max_len=max_len)
    ratio = (logp - old_logp).exp()
    surrogate = -ratio * advantages
    if is_weights is not None:
        surrogate = surrogate * is_weights
    kl = kl_penalty(old_logp, logp, "k3")   # KL(π_old‖π_θ) on samples of π_old: (r − 1) − log r
    policy = aggregate(surrogate, response_mask, loss_agg_mode, **norm)
    loss = policy + kl_coef * aggregate(kl, response_mask, loss_agg_mode, **norm)
    with torch.no_grad():
        valid_ratio = ratio.masked_fill(~response_mask, 1.0)
        metrics = {"policy/ratio_max": valid_ratio.max(), "policy/ratio_min": valid_ratio.min(),
                   "policy/kl_old": masked_mean(kl, response_mask), "loss/policy": policy.detach(),
                   "loss/total": loss.detach()}
        if ref_logp is not None:
            metrics["policy/kl_ref"] = masked_mean(kl_penalty(logp, ref_logp, kl_estimator), response_mask)
    return loss, metrics


@ALGOS.register("ppo_penalty")
@dataclass(frozen=True, kw_only=True)
class PPOPenalty(PPO):
    # no clip: PPO's clip keys are not keys of this preset (fixed off)
    eps_low: float = field(init=False, default=0.0, repr=False)
    eps_high: float = field(init=False, default=0.0, repr=False)
    clip_ratio_c: float | None = field(init=False, default=None, repr=False)
    # the reward's KL to the reference keeps the fixed β = ``beta``; ``kl_target`` is the penalty's d_targ
    kl_ctrl: str = field(init=False, default="fixed", repr=False)
    kl_horizon: float = field(init=False, default=0.0, repr=False)
    init_kl_coef: float          # β of the penalty at step 1 (then adapted)
    penalty: AdaptiveKLPenalty = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.init_kl_coef > 0, f"algo.init_kl_coef={self.init_kl_coef}: must be > 0 (β of the KL penalty; "
                                     "halving and doubling never leave 0)")
        check(self.kl_target > 0, f"algo.kl_target={self.kl_target}: must be > 0 (d_targ, the per-token "
                                  "KL(π_old‖π_θ) the penalty aims at)")
        object.__setattr__(self, "penalty", AdaptiveKLPenalty(self.init_kl_coef, self.kl_target))

    def check_config(self, cfg) -> None:
        super().check_config(cfg)
        t = cfg.trainer
        n = cfg.data.prompts_per_step * self.group_size
        check(t.update_epochs > 1 or (t.mini_batch_size or n) < n,
              f"trainer.update_epochs={t.update_epochs}: with one mini-batch the update is on-policy, "
              "KL(π_old‖π_θ) is 0 at every forward, so algo=ppo_penalty's penalty never acts and β only halves; "
              "use trainer.update_epochs >= 2 or a trainer.mini_batch_size below the batch")

    def advantages(self, batch):
        measured = self.penalty.update()   # the previous update's d moves β before this step's update
        adv, metrics = super().advantages(batch)
        metrics["ppo_penalty/kl_coef"] = self.penalty.value
        if measured is not None:
            metrics["ppo_penalty/kl_measured"] = measured
        return adv, metrics

    def loss(self, logp, mb):
        loss, metrics = kl_penalty_loss(logp, mb.old_logp, mb.advantages, mb.response_mask, mb.ref_logp,
                                        kl_coef=self.penalty.value, loss_agg_mode=self.loss_agg_mode,
                                        kl_estimator=self.kl_estimator, is_weights=mb.is_weights, **mb.norm)
        n = float(mb.response_mask.sum())   # policy/kl_old is the masked mean of KL_t: n·mean = Σ_t KL_t
        self.penalty.observe(float(metrics["policy/kl_old"]) * n, n)
        return loss, metrics

    def state_dict(self) -> dict:
        return {**super().state_dict(), "kl_penalty": self.penalty.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if "kl_penalty" in state:
            self.penalty.load_state_dict(state["kl_penalty"])
