"""KL inside the reward: per-token penalty, score at the last valid token, and the KL controllers.

RLHF-PPO (Ziegler et al. 2019, arXiv:1909.08593 §2.2; Ouyang et al. 2022, arXiv:2203.02155 eq. 2) and
REINFORCE++ (Hu 2025, arXiv:2501.03262 eq. 8-9) put the KL to the reference policy *into the reward*
rather than into the loss. With T the last valid response token of a sample:

    r_t = −β · KL_t                   t < T
    r_T = score − β · KL_T            KL_t = KL_est(π_old‖π_ref) on the sampled token (k1: log π_old − log π_ref)

A token-level reward term (``reward=prm``: a reward at each reasoning step's end token) adds its rewards
(``Batch.token_rewards``) to r_t at the tokens they belong to. Padding positions stay 0. Returns-to-go
G_t = Σ_{s≥t} γ^{s−t} r_s turn this into token-level advantages (REINFORCE++) or, at t = 0, into a KL-penalised
sequence reward score − β Σ_t KL_t (RLOO). s and t count valid tokens only: a hole in the mask (a multi-turn
episode's observation tokens) is carried through, undiscounted, as if its columns were deleted.

β is fixed, or adapted after every step by the proportional controller of Ziegler et al. (§2.2):

    e = clip(KL / KL_target − 1, −0.2, 0.2),     β ← β · (1 + K_β · e),     K_β = n_steps / horizon

(the n_steps/horizon form is the one of the authors' code, lm-human-preferences, and of verl/TRL).
Everything here is a pure function except ``KLController``, whose one number round-trips through
``state_dict`` so that resume is exact.
"""

from __future__ import annotations

import torch

from rlx.ops import kl_penalty, masked_sum


def last_token_mask(response_mask: torch.Tensor) -> torch.Tensor:
    """Bool [N, T]: True only at the last valid token of each row (all False for an empty row)."""
    T = response_mask.shape[-1]
    pos = torch.arange(T, device=response_mask.device).expand_as(response_mask)
    last = torch.where(response_mask, pos, torch.full_like(pos, -1)).max(-1, keepdim=True).values
    return (pos == last) & response_mask


def token_kl(logp: torch.Tensor, ref_logp: torch.Tensor, response_mask: torch.Tensor,
             estimator: str = "k1") -> torch.Tensor:
    """Per-token KL_est(π‖π_ref) [N, T] of the sampled tokens, 0 at padding."""
    kl = kl_penalty(logp, ref_logp, estimator)
    return torch.where(response_mask, kl, torch.zeros_like(kl))


def kl_penalized_token_rewards(scores: torch.Tensor, kl: torch.Tensor, response_mask: torch.Tensor,
                               kl_coef: float, token_rewards: torch.Tensor | None = None) -> torch.Tensor:
    """Token rewards [N, T]: −kl_coef·KL_t at every valid token, plus the scalar score [N] at the last
    valid token (docs/algorithm_notes.md §2.1 / §8.6; TRL's ``reward[last_non_masked_index] += score``), plus
    the token-level terms' rewards [N, T] where given (0 at padding)."""
    r = torch.where(response_mask, -kl_coef * kl, torch.zeros_like(kl))
    r = r + last_token_mask(response_mask).to(r.dtype) * scores.to(r.dtype).unsqueeze(-1)
    if token_rewards is None:
        return r
    return r + torch.where(response_mask, token_rewards.to(r.dtype), torch.zeros_like(r))


def returns_to_go(token_rewards: torch.Tensor, response_mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """Returns-to-go [N, T] of token rewards [N, T] under a bool mask [N, T], computed back to front:
    G_t = Σ_{s≥t, s valid} γ^{k_s−k_t} r_s at a valid t, k_t = t's rank among the row's valid tokens; 0 at masked t.

    A masked position inside a row (a multi-turn episode's observation tokens between two policy turns)
    is skipped as if its column were deleted: the return is carried through the hole unchanged, with no
    γ and no reward from it. A right-padded (contiguous) mask gives exactly the floats of the plain recursion.
    """
    r = torch.where(response_mask, token_rewards, torch.zeros_like(token_rewards))
    out = torch.zeros_like(r)
    running = torch.zeros_like(r[:, 0])
    for t in range(r.shape[1] - 1, -1, -1):
        running = torch.where(response_mask[:, t], r[:, t] + gamma * running, running)
        out[:, t] = running
    return torch.where(response_mask, out, torch.zeros_like(out))


def sequence_kl(kl: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Σ_t KL_t per sample [N]: the sequence-level KL(π‖π_ref) estimate the controller targets."""
    return masked_sum(kl, response_mask, dim=-1)


def adaptive_kl_coef(kl_coef: float, current_kl: float, target: float, horizon: float, n_steps: int) -> float:
    """One step of the Ziegler et al. (arXiv:1909.08593 §2.2) proportional controller."""
    error = min(max(current_kl / target - 1.0, -0.2), 0.2)
    return kl_coef * (1.0 + error * n_steps / horizon)


class KLController:
    """β of the KL-in-reward term: fixed (``adaptive=False``) or adaptive (Ziegler et al. 2019)."""

    def __init__(self, kl_coef: float, adaptive: bool = False, target: float = 6.0, horizon: float = 10000.0):
        if adaptive and (target <= 0 or horizon <= 0):
            raise ValueError(f"adaptive KL control needs kl_target > 0 and kl_horizon > 0 (got {target}, {horizon})")
        self.value, self.adaptive, self.target, self.horizon = float(kl_coef), adaptive, target, horizon

    def update(self, current_kl: float, n_steps: int) -> float:
        """After a step: adapt β to the measured KL (in the units of ``target``); returns the new β."""
        if self.adaptive:
            self.value = adaptive_kl_coef(self.value, float(current_kl), self.target, self.horizon, n_steps)
        return self.value

    def state_dict(self) -> dict:
        return {"kl_coef": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["kl_coef"])
