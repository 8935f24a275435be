"""DAPO — Decoupled Clip and Dynamic sAmpling Policy Optimization (Yu et al. 2025, arXiv:2503.14476).

Objective (eq. 8), with the group-normalised advantage of GRPO, Â_i = (R_i − mean R) / std R:

    J = E[ 1/Σ_i|o_i| · Σ_i Σ_t min(r_{i,t} Â_i, clip(r_{i,t}, 1−ε_low, 1+ε_high) Â_i) ]
    s.t. 0 < |{o_i : o_i correct}| < G

Its four parts, each switchable off by one key:
  1. Clip-Higher (§3.1): ε_low = 0.2, ε_high = 0.28 — off: ``eps_high = eps_low``.
  2. Dynamic sampling (§3.2): groups whose rewards are all equal (zero advantage, no gradient) are
     dropped and the batch is refilled with fresh prompts, up to ``max_gen_rounds`` generation rounds
     per step — off: ``dynamic_sampling=false``. The paper's condition is on accuracy; here it is on
     the total shaped reward, the quantity whose spread makes the advantage non-zero (docs/algorithm_notes.md §8.4).
  3. Token-level policy-gradient loss (§3.3): every token of the batch weighs 1/Σ|o_i|
     (``token_mean``) — off: ``loss_agg_mode=seq_mean_token_mean`` (GRPO's per-sample mean).
  4. Soft overlong punishment (§3.4, eq. 13) of the response length |y| (EOS included), added to the
     task reward (``rlx.rewards.length.soft_overlong_punishment`` with L_max = rollout.max_new_tokens,
     L_cache = ``overlong_buffer_len``) — off: ``overlong_shaping=false``.
No KL term (§2.3): β = 0 and no reference model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlx.algos.base import check
from rlx.algos.group import ScaledGroup
from rlx.algos.grpo import ClippedGroupLoss, grpo_loss
from rlx.registry import ALGOS
from rlx.rewards.length import soft_overlong_punishment


def dynamic_sampling_keep(rewards: torch.Tensor) -> torch.Tensor:
    """Bool [B]: groups (rewards [B, G]) whose rewards are not all equal (DAPO §3.2, docs/algorithm_notes.md §8.4)."""
    return rewards.amax(-1) > rewards.amin(-1)


def dapo_loss(logp, old_logp, advantages, response_mask, ref_logp=None, *, eps_low=0.2, eps_high=0.28,
              loss_agg_mode="token_mean", **kw):
    """(loss, metrics): the decoupled-clip surrogate, token-mean over the whole (mini-)batch (eq. 8)."""
    return grpo_loss(logp, old_logp, advantages, response_mask, ref_logp, eps_low=eps_low, eps_high=eps_high,
                     loss_agg_mode=loss_agg_mode, **kw)


@ALGOS.register("dapo")
@dataclass(frozen=True, kw_only=True)
class DAPO(ClippedGroupLoss, ScaledGroup):
    dynamic_sampling: bool
    max_gen_rounds: int
    overlong_shaping: bool
    overlong_buffer_len: int
    overlong_penalty_factor: float

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.max_gen_rounds >= 1, f"algo.max_gen_rounds={self.max_gen_rounds}: must be >= 1")
        check(self.overlong_buffer_len >= 1, f"algo.overlong_buffer_len={self.overlong_buffer_len}: must be >= 1")

    def check_config(self, cfg) -> None:
        L = cfg.rollout.max_new_tokens
        check(self.overlong_buffer_len < L,
              f"algo.overlong_buffer_len={self.overlong_buffer_len}: must be in [1, rollout.max_new_tokens={L}) "
              f"(L_max - L_cache is the length that goes unpunished)")

    def gen_rounds(self) -> int:
        return int(self.max_gen_rounds) if self.dynamic_sampling else 1

    def keep(self, rewards):
        if not self.dynamic_sampling:
            return super().keep(rewards)
        return dynamic_sampling_keep(rewards)

    def shape_rewards(self, rewards, response_mask, max_new_tokens):
        if not self.overlong_shaping:
            return rewards, {}
        pen = soft_overlong_punishment(response_mask.sum(-1).cpu(), max_new_tokens, self.overlong_buffer_len,
                                       self.overlong_penalty_factor)
        return rewards + pen, {"dapo/overlong_penalty": pen.mean().item(),
                               "dapo/overlong_frac": (pen < 0).float().mean().item()}
