"""PPO for LLMs with a learned critic (RLHF-PPO: Ziegler et al. 2019 arXiv:1909.08593; InstructGPT,
Ouyang et al. 2022 arXiv:2203.02155; docs/algorithm_notes.md §2.1).

Per-token reward (KL to the reference inside the reward; the reward-model score at the last valid
response token T, the EOS — not after it; docs/algorithm_notes.md §7 corrects the notes' "pos > T"):

    r_t = −β·KL_t                        t < T
    r_T = R_RM(x, y) − β·KL_T            KL_t = log π_old(a_t|s_t) − log π_ref(a_t|s_t)   (k1)

GAE (Schulman et al. 2016, arXiv:1506.02438 eq. 16), computed back to front with V(s_{T+1}) = 0:

    δ_t = r_t + γ·V(s_{t+1}) − V(s_t),      Â_t = δ_t + γλ·Â_{t+1},      R̂_t = Â_t + V_old(s_t)

Actor: the clipped surrogate (arXiv:1707.06347 eq. 7, ``common.clipped_surrogate``) on Â (whitened
over the batch). Critic (a separate value model): the clipped value loss

    L_V = vf_coef · agg_t ½·max((V − R̂)², (V_old + clip(V − V_old, −ε_v, ε_v) − R̂)²)

β is fixed or adaptive (target KL; Ziegler et al. 2019 §2.2), ``rlx.algos.kl_control``.
"""

from __future__ import annotations

import torch

from rlx.algos.base import Algorithm
from rlx.algos.common import clipped_surrogate
from rlx.algos.kl_control import KLController, kl_penalized_token_rewards, sequence_kl, token_kl
from rlx.ops import aggregate, kl_penalty, masked_mean, masked_var, masked_whiten
from rlx.registry import ALGOS


def gae(token_rewards, values, response_mask, *, gamma: float, lam):
    """(advantages, returns) [N, T]: GAE back to front, vectorised over the batch (one step per token);
    ``lam`` a float or a per-row tensor [N] (VAPO's length-adaptive λ).

    Invalid (masked) positions are skipped: they carry the next valid state's value and advantage
    through, get advantage 0 themselves, and V after the last valid token is 0 (terminal).
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


def explained_variance(values, returns, response_mask) -> float:
    """1 − Var(R̂ − V)/Var(R̂) over valid tokens (1 = perfect critic, 0 = no better than a constant)."""
    var_r = masked_var(returns, response_mask)
    if var_r <= 0:
        return 0.0
    return float(1 - masked_var(returns - values, response_mask) / var_r)


def ppo_policy_loss(logp, old_logp, advantages, response_mask, ref_logp=None, *, eps_low: float, eps_high: float,
                    loss_agg_mode: str, kl_estimator: str = "k3", num_tokens=None, num_seqs=None, max_len=None,
                    is_weights=None):
    """(loss, metrics): the clipped surrogate (with ``is_weights`` [n, T], rollout.is_correction). The KL to
    the reference is in the reward, so here it is only measured (``policy/kl_ref``), never added to the loss."""
    loss, metrics = clipped_surrogate(logp, old_logp, advantages, response_mask, eps_low=eps_low, eps_high=eps_high,
                                      loss_agg_mode=loss_agg_mode, num_tokens=num_tokens, num_seqs=num_seqs,
                                      max_len=max_len, is_weights=is_weights)
    if ref_logp is not None:
        metrics["policy/kl_ref"] = masked_mean(kl_penalty(logp.detach(), ref_logp, kl_estimator), response_mask)
    metrics["loss/total"] = loss.detach()
    return loss, metrics


class PPO(Algorithm):
    needs_critic = True
    needs_old_logp = True  # the KL in the reward is taken at sampling time (log π_old − log π_ref)

    def __init__(self, cfg):
        super().__init__(cfg)
        self.kl_ctl = KLController(cfg.beta, adaptive=cfg.kl_ctrl == "adaptive", target=cfg.kl_target,
                                   horizon=cfg.kl_horizon)

    @property
    def needs_ref(self) -> bool:
        return float(self.cfg.beta) > 0

    # λ of the actor's advantages and of the critic's targets: one λ in PPO; VAPO decouples them
    def actor_lambda(self, response_mask):
        return float(self.cfg.lam)

    def critic_lambda(self, response_mask):
        return float(self.cfg.lam)

    def token_rewards(self, rewards, response_mask, batch):
        """(r_t [N, T], KL_t [N, T]) with the current β: −β·KL_t per token + the score at the last one."""
        if batch.ref_logp is None:
            kl = torch.zeros_like(batch.old_logp)
        else:
            kl = token_kl(batch.old_logp, batch.ref_logp, response_mask, self.cfg.reward_kl_estimator)
        return kl_penalized_token_rewards(rewards, kl, response_mask, self.kl_ctl.value), kl

    def value_targets(self, rewards, response_mask, batch):
        """R̂ [N, T] = GAE(λ_critic) + V_old. The critic hook calls this before ``advantages`` (which
        then moves β for the next batch), so targets and advantages see the same β."""
        r, _ = self.token_rewards(rewards, response_mask, batch)
        return gae(r, batch.values, response_mask, gamma=self.cfg.gamma, lam=self.critic_lambda(response_mask))[1]

    def advantages(self, rewards, response_mask, batch=None, metrics=None, **_):
        r, kl = self.token_rewards(rewards, response_mask, batch)
        adv, _ = gae(r, batch.values, response_mask, gamma=self.cfg.gamma, lam=self.actor_lambda(response_mask))
        if self.cfg.whiten_advantages:
            adv = masked_whiten(adv, response_mask).masked_fill(~response_mask, 0.0)
        seq_kl = sequence_kl(kl, response_mask).mean().item()
        if metrics is not None:
            metrics.update({"ppo/kl_coef": self.kl_ctl.value, "ppo/kl_seq": seq_kl,
                            "ppo/non_score_reward": -self.kl_ctl.value * seq_kl})
        self.kl_ctl.update(seq_kl, n_steps=len(rewards))  # β for the next batch (Ziegler et al. 2019 §2.2)
        return adv

    def loss(self, logp, old_logp, advantages, response_mask, ref_logp=None, **norm):
        c = self.cfg
        return ppo_policy_loss(logp, old_logp, advantages, response_mask, ref_logp, eps_low=c.eps_low,
                               eps_high=c.eps_high, loss_agg_mode=c.loss_agg_mode, kl_estimator=c.kl_estimator,
                               **norm)

    def value_loss(self, values, old_values, returns, response_mask, **norm):
        c = self.cfg
        return clipped_value_loss(values, old_values, returns, response_mask, cliprange_value=c.cliprange_value,
                                  vf_coef=c.vf_coef, loss_agg_mode=c.loss_agg_mode, **norm)

    def state_dict(self) -> dict:
        return {"kl_ctl": self.kl_ctl.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if "kl_ctl" in state:
            self.kl_ctl.load_state_dict(state["kl_ctl"])


@ALGOS.register("ppo")
def build_ppo(cfg) -> PPO:
    return PPO(cfg)
