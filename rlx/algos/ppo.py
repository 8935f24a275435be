"""PPO for LLMs with a learned critic (RLHF-PPO: Ziegler et al. 2019 arXiv:1909.08593; InstructGPT,
Ouyang et al. 2022 arXiv:2203.02155; docs/algorithm_notes.md §2.1).

Per-token reward (KL to the reference inside the reward; the reward-model score at the last valid
response token T, the EOS — not after it; docs/algorithm_notes.md §7 corrects the notes' "pos > T"):

    r_t = −β·KL_t                        t < T
    r_T = R_RM(x, y) − β·KL_T            KL_t = log π_old(a_t|s_t) − log π_ref(a_t|s_t)   (k1)

plus, with a token-level reward term (``reward=prm``), its reward at each reasoning step's end token
(``Batch.token_rewards``; Math-Shepherd's step-by-step PPO, Wang et al. 2024, arXiv:2312.08935).

GAE (Schulman et al. 2016, arXiv:1506.02438 eq. 16), computed back to front with V(s_{T+1}) = 0:

    δ_t = r_t + γ·V(s_{t+1}) − V(s_t),      Â_t = δ_t + γλ·Â_{t+1},      R̂_t = Â_t + V_old(s_t)

Actor: the clipped surrogate (arXiv:1707.06347 eq. 7, ``common.clipped_surrogate``) on Â (whitened
over the batch). Critic (a separate value model): the clipped value loss

    L_V = vf_coef · agg_t ½·max((V − R̂)², (V_old + clip(V − V_old, −ε_v, ε_v) − R̂)²)

β is fixed or adaptive (target KL; Ziegler et al. 2019 §2.2), ``rlx.algos.kl_control``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rlx.algos.base import Aggregated, check, check_choice
from rlx.algos.kl_control import KLController, kl_penalized_token_rewards, sequence_kl, token_kl
from rlx.algos.surrogate import ClippedRatio, DualClip, clipped_surrogate
from rlx.metrics import explained_variance  # noqa: F401 (re-exported: the critic's metric)
from rlx.ops import KL_ESTIMATORS, KL_ESTIMATORS_ALL, aggregate, kl_penalty, masked_mean, masked_whiten
from rlx.registry import ALGOS


def gae(token_rewards, values, response_mask, *, gamma: float, lam):
    """(advantages, returns) [N, T] from token rewards [N, T], values V_old [N, T] and a bool mask [N, T]:
    GAE back to front, vectorised over the batch (one step per token); ``lam`` a float or a per-row
    tensor [N] (VAPO's length-adaptive λ).

    Invalid (masked) positions are skipped as if their columns were deleted: they carry the next valid
    state's value and advantage through, get advantage and return 0 themselves, and V after the last
    valid token is 0 (terminal). So a hole inside a row (a multi-turn episode's observation tokens
    between two policy turns) adds no reward, no γ or λ decay and no value of its own: δ_t at the valid
    token before a hole bootstraps from V of the first valid token after it.
    """
    n, T = token_rewards.shape
    lam = torch.as_tensor(lam, dtype=torch.float32, device=values.device).expand(n)
    adv = torch.zeros_like(values, dtype=torch.float32)
    next_v = torch.zeros(n, device=values.device)
    next_a = torch.zeros(n, device=values.device)
    for t in reversed(range(T)):
        m = response_mask[:, t]
        delta = token_rewards[:, t] + gamma * next_v - values[:, t]
        a = delta + gamma * lam * next_a
        adv[:, t] = torch.where(m, a, torch.zeros_like(a))
        next_a = torch.where(m, a, next_a)
        next_v = torch.where(m, values[:, t].float(), next_v)
    returns = (adv + values).masked_fill(~response_mask, 0.0)
    return adv, returns


def clipped_value_loss(values, old_values, returns, response_mask, *, cliprange_value: float | None,
                       vf_coef: float = 1.0, loss_agg_mode: str = "token_mean", num_tokens=None, num_seqs=None,
                       max_len=None):
    """(vf_coef·L_V, metrics); ``cliprange_value`` None or 0 = unclipped MSE. ``value/clip_frac``
    counts tokens where the clipped branch is the larger (the active) one."""
    err = (values - returns).square()
    if cliprange_value:
        v_clip = old_values + (values - old_values).clamp(-cliprange_value, cliprange_value)
        err_clip = (v_clip - returns).square()
        per_token = 0.5 * torch.maximum(err, err_clip)
        clipped = err_clip > err
    else:
        per_token, clipped = 0.5 * err, torch.zeros_like(err, dtype=torch.bool)
    loss = vf_coef * aggregate(per_token, response_mask, loss_agg_mode, num_tokens=num_tokens, num_seqs=num_seqs,
                               max_len=max_len)
    with torch.no_grad():
        metrics = {"loss/value": loss.detach(), "value/clip_frac": masked_mean(clipped.float(), response_mask),
                   "value/mean": masked_mean(values, response_mask)}
    return loss, metrics


def ppo_policy_loss(logp, old_logp, advantages, response_mask, ref_logp=None, *, eps_low: float, eps_high: float,
                    loss_agg_mode: str, kl_estimator: str = "k3", num_tokens=None, num_seqs=None, max_len=None,
                    is_weights=None, clip_ratio_c=None):
    """(loss, metrics): the clipped surrogate (with ``is_weights`` [n, T], rollout.is_correction; dual-clip
    ``clip_ratio_c``, None = off). The KL to the reference is in the reward, so here it is only measured
    (``policy/kl_ref``), never added to the loss."""
    loss, metrics = clipped_surrogate(logp, old_logp, advantages, response_mask, eps_low=eps_low, eps_high=eps_high,
                                      loss_agg_mode=loss_agg_mode, num_tokens=num_tokens, num_seqs=num_seqs,
                                      max_len=max_len, is_weights=is_weights, clip_ratio_c=clip_ratio_c)
    if ref_logp is not None:
        metrics["policy/kl_ref"] = masked_mean(kl_penalty(logp.detach(), ref_logp, kl_estimator), response_mask)
    metrics["loss/total"] = loss.detach()
    return loss, metrics


@ALGOS.register("ppo")
@dataclass(frozen=True, kw_only=True)
class PPO(Aggregated, ClippedRatio, DualClip):
    min_group_size = 1
    takes_token_rewards = True   # a token-level reward term's rewards join r_t (kl_penalized_token_rewards)
    beta: float                  # β of the KL in the reward (fixed, or the adaptive controller's start)
    kl_ctrl: str                 # fixed | adaptive
    kl_target: float
    kl_horizon: float
    reward_kl_estimator: str     # KL_t in the reward (k1 in the papers)
    kl_estimator: str            # policy/kl_ref, measured only
    gamma: float
    lam: float
    whiten_advantages: bool
    critic_init: str             # policy | reward_model (trainers/critic.py)
    critic_path: str | None
    critic_lr: float
    vf_coef: float
    cliprange_value: float | None
    critic_warmup: int
    kl_ctl: KLController = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.beta >= 0, f"algo.beta={self.beta}: must be >= 0")
        check_choice("kl_ctrl", self.kl_ctrl, ("fixed", "adaptive"))
        check(self.kl_ctrl == "fixed" or (self.kl_target > 0 and self.kl_horizon > 0),
              f"algo.kl_ctrl=adaptive needs algo.kl_target > 0 and algo.kl_horizon > 0 "
              f"(got {self.kl_target}, {self.kl_horizon})")
        check_choice("reward_kl_estimator", self.reward_kl_estimator, KL_ESTIMATORS)
        check_choice("kl_estimator", self.kl_estimator, KL_ESTIMATORS_ALL)
        for key in ("gamma", "lam"):
            check(0 <= getattr(self, key) <= 1, f"algo.{key}={getattr(self, key)}: must be in [0, 1]")
        check_choice("critic_init", self.critic_init, ("policy", "reward_model"))
        check(self.critic_lr > 0, f"algo.critic_lr={self.critic_lr}: must be > 0")
        check(self.vf_coef >= 0, f"algo.vf_coef={self.vf_coef}: must be >= 0")
        check(self.critic_warmup >= 0, f"algo.critic_warmup={self.critic_warmup}: must be >= 0")
        object.__setattr__(self, "kl_ctl", KLController(self.beta, adaptive=self.kl_ctrl == "adaptive",
                                                        target=self.kl_target, horizon=self.kl_horizon))

    @property
    def requires(self) -> frozenset[str]:
        # the KL in the reward is taken at sampling time (log π_old − log π_ref)
        return super().requires | {"old_logp", "values"} | ({"ref_logp"} if self.beta > 0 else set())

    def actor_lambda(self, response_mask):
        return float(self.lam)

    def critic_lambda(self, response_mask):
        return float(self.lam)

    def token_rewards(self, batch):
        """(r_t [N, T], KL_t [N, T]) with the current β: −β·KL_t per token + the score at the last one (+ the
        token-level terms' rewards)."""
        if batch.ref_logp is None:
            kl = torch.zeros_like(batch.old_logp)
        else:
            kl = token_kl(batch.old_logp, batch.ref_logp, batch.response_mask, self.reward_kl_estimator)
        r = kl_penalized_token_rewards(batch.rewards, kl, batch.response_mask, self.kl_ctl.value, batch.token_rewards)
        return r, kl

    def value_targets(self, batch):
        """R̂ [N, T] = GAE(λ_critic) + V_old. The critic hook calls this before ``advantages`` (which
        then moves β for the next batch), so targets and advantages see the same β."""
        r, _ = self.token_rewards(batch)
        mask = batch.response_mask
        return gae(r, batch.values, mask, gamma=self.gamma, lam=self.critic_lambda(mask))[1]

    def advantages(self, batch):
        mask = batch.response_mask
        r, kl = self.token_rewards(batch)
        adv, _ = gae(r, batch.values, mask, gamma=self.gamma, lam=self.actor_lambda(mask))
        if self.whiten_advantages:
            adv = masked_whiten(adv, mask).masked_fill(~mask, 0.0)
        seq_kl = sequence_kl(kl, mask).mean().item()
        metrics = {"ppo/kl_coef": self.kl_ctl.value, "ppo/kl_seq": seq_kl,
                   "ppo/non_score_reward": -self.kl_ctl.value * seq_kl}
        self.kl_ctl.update(seq_kl, n_steps=len(batch.rewards))  # β for the next batch (Ziegler et al. 2019 §2.2)
        return adv, metrics

    def loss(self, logp, mb):
        return ppo_policy_loss(logp, mb.old_logp, mb.advantages, mb.response_mask, mb.ref_logp, eps_low=self.eps_low,
                               eps_high=self.eps_high, loss_agg_mode=self.loss_agg_mode, kl_estimator=self.kl_estimator,
                               is_weights=mb.is_weights, clip_ratio_c=self.clip_ratio_c, **mb.norm)

    def value_loss(self, values, old_values, returns, response_mask, **norm):
        return clipped_value_loss(values, old_values, returns, response_mask, cliprange_value=self.cliprange_value,
                                  vf_coef=self.vf_coef, loss_agg_mode=self.loss_agg_mode, **norm)

    def state_dict(self) -> dict:
        return {"kl_ctl": self.kl_ctl.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if "kl_ctl" in state:
            self.kl_ctl.load_state_dict(state["kl_ctl"])
