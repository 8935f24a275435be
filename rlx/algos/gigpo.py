"""GiGPO — Group-in-Group Policy Optimization (Feng et al. 2025, "Group-in-Group Policy Optimization for LLM
Agent Training", arXiv:2505.10978 §4). GRPO's update for multi-turn episodes, with a second, step-level group
advantage that gives each turn its own credit.

Episode level (eq. 3), GRPO over the G episodes of a prompt, R_i the episode's (terminal) reward:

    A^E_i = (R_i − mean(R_1..R_G)) / F_norm(R_1..R_G)

Step level. The discounted return from turn k of episode i (eq. 5), with only a terminal reward at its last
turn K_i:

    R_{i,k} = Σ_{j≥k} γ^{j−k} r_{i,j} = γ^{K_i − k} R_i

Anchor states (eq. 6): within one prompt group, every (episode i, turn k) whose environment state is the
same (``batch.turn_state``: equal hash = same state, whichever turn it is reached at, the same episode
included) forms one step group G^S(s). The step advantage (eq. 7) is relative within it:

    A^S_{i,k} = (R_{i,k} − mean_{G^S(s)} R) / F_norm_{G^S(s)}(R)          (a group of one: 0)

Every token of turn k of episode i gets (eq. 8)

    A_{i,k} = A^E_i + ω·A^S_{i,k}

F_norm is the unbiased std + ``std_eps`` (``scale_rewards=true``; 0 where the values are all equal) or
1 (``scale_rewards=false``, the paper's unbiased alternative). Loss: GRPO's clipped token-level surrogate
with the KL term and the shared options (rlx/algos/grpo.py), every GRPO key with its meaning.

Samples whose reward failed (an all-False response mask) stay out of the episode and the step statistics
and get 0; observation and padding columns get 0. Without turn information (``env=single``: ``batch.turn``
is None) each sample is one turn and GiGPO is GRPO, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlx.algos.base import check
from rlx.algos.group import group_advantages
from rlx.algos.grpo import GRPO
from rlx.registry import ALGOS


def turn_table(response_mask: torch.Tensor, turn: torch.Tensor, turn_state: torch.Tensor):
    """(present [N, K] bool, state [N, K] long, last [N] long) from the token layout: column k−1 is turn k; a
    turn is present where it has a policy token in ``response_mask`` (failed samples have none); ``last`` is
    K_i, the episode's last turn (0 = none)."""
    n = response_mask.shape[0]
    pol = response_mask & (turn > 0)
    k_max = int(turn[pol].max()) if bool(pol.any()) else 0
    col = torch.where(pol, turn, torch.zeros_like(turn))   # column 0 collects the other tokens, dropped below
    zeros = torch.zeros(n, k_max + 1, dtype=torch.long, device=turn.device)
    present = zeros.scatter_reduce(1, col, pol.long(), "amax")[:, 1:].bool()
    src = torch.where(pol, turn_state, torch.zeros_like(turn_state))
    state = zeros.scatter_reduce(1, col, src, "amax")[:, 1:]
    last = torch.where(pol, turn, torch.zeros_like(turn)).amax(-1)
    return present, state, last


def step_advantages(rewards: torch.Tensor, response_mask: torch.Tensor, turn: torch.Tensor,
                    turn_state: torch.Tensor, group_size: int, *, gamma: float, scale: bool,
                    eps: float = 1e-4) -> tuple[torch.Tensor, dict]:
    """(A^S per token [N, T] float32, 0 off the policy tokens; step statistics): eqs. 5–7 of the module
    docstring for rewards [N] (G contiguous per prompt) and the turn layout [N, T] of ``rlx.batch.Batch``."""
    n, _ = response_mask.shape
    out = torch.zeros(response_mask.shape, dtype=torch.float32, device=response_mask.device)
    present, state, last = turn_table(response_mask, turn, turn_state)
    if not bool(present.any()):
        return out, {"groups": 0, "sizes": torch.zeros(0), "adv": torch.zeros(0)}
    k = torch.arange(1, present.shape[1] + 1, device=turn.device)
    power = (last.unsqueeze(-1) - k).clamp(min=0).to(torch.float32)
    returns = torch.pow(torch.tensor(float(gamma), device=turn.device), power) * rewards.float().unsqueeze(-1)
    prompt = (torch.arange(n, device=turn.device) // group_size).unsqueeze(-1).expand_as(state)
    keys = torch.stack([prompt[present], state[present]], -1)   # a step group: (prompt group, state hash)
    _, inv, counts = torch.unique(keys, dim=0, return_inverse=True, return_counts=True)
    r = returns[present]
    mean = torch.zeros(counts.shape[0], device=r.device).index_add_(0, inv, r) / counts
    adv = r - mean[inv]
    if scale:
        var = torch.zeros_like(mean).index_add_(0, inv, adv.square()) / (counts - 1).clamp(min=1)
        std = var.sqrt()[inv]
        adv = torch.where(std > 0, adv / (std + eps), torch.zeros_like(adv))   # equal returns: no signal
    adv = torch.where(counts[inv] > 1, adv, torch.zeros_like(adv))            # a group of one: 0
    table = torch.zeros(n, present.shape[1] + 1, device=r.device)
    table[:, 1:][present] = adv
    pol = response_mask & (turn > 0)
    out = table.gather(1, torch.where(pol, turn, torch.zeros_like(turn))) * pol
    return out, {"groups": counts.shape[0], "sizes": counts, "adv": adv, "member": counts[inv] > 1}


@ALGOS.register("gigpo")
@dataclass(frozen=True, kw_only=True)
class GiGPO(GRPO):
    """GRPO plus the step-level anchor-state advantage: ``step_weight`` ω, ``gamma`` γ; ``scale_rewards``
    chooses F_norm (std or 1) for both levels."""

    step_weight: float
    gamma: float

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.step_weight >= 0, f"algo.step_weight={self.step_weight}: must be >= 0 (ω, 0 = GRPO)")
        check(0 <= self.gamma <= 1, f"algo.gamma={self.gamma}: must be in [0, 1] (a discount factor)")

    def advantages(self, batch):
        if batch.turn is None:   # single-turn: one step per sample, GRPO
            return super().advantages(batch)
        if batch.turn_state is None:
            raise ValueError("GiGPO needs batch.turn_state with batch.turn (rlx/rollout/episodes.py)")
        mask = batch.response_mask
        episode = group_advantages(batch.rewards, mask, self.group_size, scale=self.scale, eps=self.eps,
                                   always_masked=True).to(torch.float32)
        step, stats = step_advantages(batch.rewards, mask, batch.turn, batch.turn_state, self.group_size,
                                      gamma=self.gamma, scale=self.scale, eps=self.eps)
        adv = torch.where(mask, episode.unsqueeze(-1) + self.step_weight * step, torch.zeros_like(step))
        return adv, self.step_metrics(stats)

    @staticmethod
    def step_metrics(stats: dict) -> dict:
        """``gigpo/step_groups``: step groups with two or more members (anchor states that recurred);
        ``gigpo/step_group_size``: mean members per step group (singletons included); ``gigpo/anchored_frac``:
        share of the turns that are in a step group of two or more; ``gigpo/step_adv_std``: std of A^S over
        the turns."""
        sizes, adv = stats["sizes"], stats["adv"]
        if sizes.numel() == 0:
            return {"gigpo/step_groups": 0.0, "gigpo/step_group_size": 0.0, "gigpo/anchored_frac": 0.0,
                    "gigpo/step_adv_std": 0.0}
        return {"gigpo/step_groups": float((sizes > 1).sum()),
                "gigpo/step_group_size": float(sizes.float().mean()),
                "gigpo/anchored_frac": float(stats["member"].float().mean()),
                "gigpo/step_adv_std": float(adv.std()) if adv.numel() > 1 else 0.0}
