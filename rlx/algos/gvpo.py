"""GVPO — Group Variance Policy Optimization (Zhang et al. 2025, arXiv:2504.19599, NeurIPS 2025; official
code github.com/jszkc/GVPO, a verl recipe).

The KL-constrained reward maximisation max_π E[R(x, y)] − β·KL(π‖π_θ') has the closed-form optimum
π*(y|x) = π_θ'(y|x)·exp(R(x, y)/β) / Z(x). Like DPO, GVPO fits the implicit reward β·log π_θ(y|x)/π_θ'(y|x)
to the actual reward, but over a group of G responses to one prompt and with weights that sum to zero in the
group, so that the intractable β·log Z(x) cancels. With sequence log-ratios s_i = log π_θ(y_i|x) −
log π_θ'(y_i|x) (sums over the response tokens), per prompt:

    L(x) = 1/(G−1) · Σ_i ½·[ (R_i − R̄) − β·(s_i − s̄) ]²          R̄, s̄: means over the group

(the official recipe's ``compute_policy_loss_gvpo``: an MSE between the centred implicit and actual rewards,
divided by G − 1), averaged over the prompts of the mini-batch. Its gradient is a zero-sum weighted sum of the
responses' log-likelihood gradients, with no ratio, clip or std:

    ∇L(x) = −β/(G−1) · Σ_i w_i·∇log π_θ(y_i|x),     w_i = (R_i − R̄) − β·(s_i − s̄),   Σ_i w_i = 0

``anchor`` picks π_θ': ``ref``, the frozen reference model (the paper's objective: a unique optimum, the
KL-regularised one), or ``old``, the policy that sampled the step (the released recipe's
``log_prob − old_log_prob``: a trust region around the previous policy, s ≡ 0 at the start of each update).

How the online loop computes it: a micro-batch need not hold whole groups, so the group mean s̄ is taken
where the group is whole. ``advantages`` returns the weights at the behaviour policy π_old (one per response,
on every token; ``adv/*`` logs them), w_i = (R_i − R̄) − β·(s_i^old − s̄^old), and ``loss`` moves them with
the policy's change since the rollout, Δ_i = Σ_t (log π_θ − log π_old)(y_i,t):

    e_i = w_i − β·Δ_i,     L = Σ_i ½·e_i² · G / ((G−1)·n_seq)          (n_seq: responses in the mini-batch)

On-policy (one epoch, one mini-batch: the default) Δ = 0 in value and this is exactly L above, value and
gradient (L's dependence through s̄ adds a term proportional to Σ_i e_i = Σ_i w_i = 0). Over several
mini-batches or epochs it leaves out the group mean of Δ (a shift of β·mean_j Δ_j, the same for the whole
group), which the official recipe recomputes per micro-batch by keeping every group in one. A sample whose
reward failed (all-False response mask) stays out of the group means and gets w = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlx.algos.base import PolicyAlgorithm, check, check_choice
from rlx.algos.reinforce import per_token
from rlx.ops import group_normalize, kl_penalty, masked_mean, masked_sum
from rlx.registry import ALGOS

ANCHORS = ("ref", "old")


def gvpo_weights(rewards: torch.Tensor, response_mask: torch.Tensor, group_size: int, *, beta: float,
                 old_logp: torch.Tensor | None = None,
                 anchor_logp: torch.Tensor | None = None) -> torch.Tensor:
    """Zero-sum weights [N] at the behaviour policy: w_i = (R_i − R̄) − β·(s_i − s̄), s_i = Σ_t (old − anchor)
    over the response tokens (s ≡ 0 without log-probs: ``anchor=old``). Rows with no valid token (failed
    rewards) stay out of both group means and get 0.

    Rewards [1, 0, 2], β = 0.5, s = [1, 0, 2]: R − R̄ = [0, −1, 1], s − s̄ = [0, −1, 1], w = [0, −0.5, 0.5].
    """
    valid = response_mask.any(-1)
    w = group_normalize(rewards.to(torch.float32), group_size, scale=False, valid_mask=valid)
    if old_logp is not None:
        s = masked_sum(old_logp - anchor_logp, response_mask, -1).to(torch.float32)
        w = w - beta * group_normalize(s, group_size, scale=False, valid_mask=valid)
    return w


def gvpo_loss(logp, old_logp, weights, response_mask, *, beta: float, group_size: int, num_seqs=None,
              ref_logp=None):
    """(loss, metrics) for token log-probs [n, T] of one micro-batch; ``weights`` [n, T] holds each response's
    w_i on its tokens (``advantages``), ``num_seqs`` the responses of the whole mini-batch.

    e_i = w_i − β·Σ_t (logp − old_logp),  L = Σ_i ½·e_i² · G / ((G−1)·num_seqs).
    """
    valid = response_mask.any(-1)
    w = masked_sum(weights, response_mask, -1) / response_mask.sum(-1).clamp(min=1)   # one value per response
    delta = masked_sum(logp - old_logp, response_mask, -1)
    e = torch.where(valid, w - beta * delta, torch.zeros_like(delta))
    n = num_seqs if num_seqs is not None else max(int(valid.sum()), 1)
    loss = 0.5 * e.square().sum() * group_size / ((group_size - 1) * n)
    metrics = {"loss/policy": loss.detach(), "loss/total": loss.detach()}
    if ref_logp is not None:
        metrics["policy/kl_ref"] = masked_mean(kl_penalty(logp.detach(), ref_logp, "k3"), response_mask)
    return loss, metrics


@ALGOS.register("gvpo")
@dataclass(frozen=True, kw_only=True)
class GVPO(PolicyAlgorithm):
    beta: float
    anchor: str
    takes_is_weights = False   # one weight per response, no per-token ratio to reweight

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.beta > 0, f"algo.beta={self.beta}: must be > 0 (β = 0 makes the loss a constant)")
        check_choice("anchor", self.anchor, ANCHORS)

    @property
    def requires(self) -> frozenset[str]:
        # anchor=ref: s_i^old needs the behaviour and the reference log-probs of every response of the group
        return frozenset({"ref_logp", "old_logp"}) if self.anchor == "ref" else frozenset()

    def advantages(self, batch):
        mask = batch.response_mask
        if self.anchor == "ref":
            if batch.old_logp is None or batch.ref_logp is None:
                raise ValueError("GVPO with anchor=ref needs batch.old_logp and batch.ref_logp (requires)")
            w = gvpo_weights(batch.rewards, mask, self.group_size, beta=float(self.beta),
                             old_logp=batch.old_logp, anchor_logp=batch.ref_logp)
            s = masked_sum(batch.old_logp - batch.ref_logp, mask, -1)
            valid = mask.any(-1)
            metrics = {f"{self.name}/seq_log_ratio": s[valid].mean().item() if valid.any() else 0.0}
        else:
            w, metrics = gvpo_weights(batch.rewards, mask, self.group_size, beta=float(self.beta)), {}
        return per_token(w, mask), metrics

    def loss(self, logp, mb):
        return gvpo_loss(logp, mb.old_logp, mb.advantages, mb.response_mask, beta=float(self.beta),
                         group_size=self.group_size, num_seqs=mb.num_seqs, ref_logp=mb.ref_logp)
