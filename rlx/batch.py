"""The batch types of the online loop, every field documented with its shape: ``Batch`` (N = B·G samples of one
step) and ``LossInputs`` (one micro-batch as a policy loss sees it).

The offline (preference) loop's batch is ``rlx.data.preference``'s pairs, tokenised by its trainer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Batch:
    """N samples of one step (G contiguous per prompt), P prompt and T response columns.

    ``input_ids`` [N, P+T] long: left-padded prompt, then the response, right-padded.
    ``attention_mask`` [N, P+T] long: 1 on real tokens.
    ``response_mask`` [N, T] bool: True on response tokens that train (EOS included); an all-False row is a
    sample whose reward failed, kept for the layout and left out of the update and the group statistics.
    ``rewards`` [N] float32: the shaped sequence reward (a failed one holds its group's mean, a placeholder).
    ``old_logp`` / ``ref_logp`` [N, T]: behaviour and reference log-probs of the response tokens (when needed).
    ``advantages`` [N, T] float32, set by the algorithm.
    ``greedy_rewards`` [N]: the reward of the prompt's greedy decode (ReMax's baseline), repeated G times.
    ``values`` / ``returns`` [N, T]: the critic's V_old(s_t) and its targets (PPO family).
    ``engine_logp`` [N, T]: the engine's log-prob of each sampled token, where it records them.
    Multi-turn episodes (``env`` other than ``single``: rlx/envs, rlx/rollout/episodes.py) lay every turn and every
    observation out in the response columns, in order; observation tokens are attended to but False in
    ``response_mask``, so they get no gradient, ratio, KL or entropy. Two more fields then say where the turns are:
    ``turn`` [N, T] long: the 1-based turn number of each policy token, 0 on observations and padding.
    ``turn_state`` [N, T] long: a hash of the environment state the policy acted from in that turn (equal
    hashes = the same state: GiGPO's anchor states), 0 where ``turn`` is 0.
    ``tree`` [N] long: with tree rollouts (Tree-GRPO), which tree of its prompt group a sample is a leaf of.
    ``token_rewards`` [N, T] float32: the weighted per-token rewards of token-level reward terms (``reward=prm``: a
    reward at each step's end token), in the columns of the tokens they reward, 0 elsewhere; None when the reward
    has no such term. ``rewards`` is the other terms' total; the algorithms that take token rewards
    (``takes_token_rewards``: PPO, REINFORCE++) add these to their per-token rewards.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    rewards: torch.Tensor
    old_logp: torch.Tensor | None = None
    ref_logp: torch.Tensor | None = None
    advantages: torch.Tensor | None = None
    greedy_rewards: torch.Tensor | None = None
    values: torch.Tensor | None = None
    returns: torch.Tensor | None = None
    engine_logp: torch.Tensor | None = None
    turn: torch.Tensor | None = None
    turn_state: torch.Tensor | None = None
    tree: torch.Tensor | None = None
    token_rewards: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def T(self) -> int:
        return self.response_mask.shape[1]


def token_reward_matrix(values: list | None, T: int, device=None) -> torch.Tensor | None:
    """``Batch.token_rewards`` [N, T] from the reward's per-sample lists (``token_rewards`` of
    ``CompositeReward.score``; each from response column 0, None = a failed sample: zeros); None for None."""
    if values is None:
        return None
    out = torch.zeros(len(values), T, dtype=torch.float32)
    for i, v in enumerate(values):
        if v:
            out[i, :min(len(v), T)] = torch.tensor(v[:T], dtype=torch.float32)
    return out.to(device)


def concat_batches(parts: list[Batch], pad_id: int) -> Batch:
    """One batch from several generation rounds: prompt columns left-padded and response columns
    right-padded to the widest round (attention 0, response mask False on the new padding)."""
    if len(parts) == 1:
        return parts[0]
    P = max(p.input_ids.shape[1] - p.T for p in parts)
    T = max(p.T for p in parts)
    fields = {}
    for k in vars(parts[0]):
        vals = [getattr(p, k) for p in parts]
        if not isinstance(vals[0], torch.Tensor):
            fields[k] = vals[0]
            continue
        out = []
        for p, v in zip(parts, vals):
            if v.dim() > 1:   # [n, P_r + T_r] (ids, attention) or [n, T_r] (response columns only)
                fill = pad_id if k == "input_ids" else 0
                left = P - (v.shape[1] - p.T) if v.shape[1] > p.T else 0
                v = torch.cat([v.new_full((v.shape[0], left), fill), v, v.new_full((v.shape[0], T - p.T), fill)], 1)
            out.append(v)
        fields[k] = torch.cat(out)
    return Batch(**fields)


@dataclass
class LossInputs:
    """One micro-batch of n rows of the online loop, as a policy loss sees it. Tensors [n, T] unless noted.

    ``old_logp`` behaviour log-probs (detached training forward when on-policy); ``advantages`` float32;
    ``response_mask`` bool; ``ref_logp`` (with ``ref_logp`` required); ``entropy`` with gradient (with
    ``entropy`` required); ``is_weights`` detached per-token weights (rollout.is_correction); ``rewards`` [n].
    ``num_tokens``, ``num_seqs``, ``max_len``: the mini-batch totals the aggregation normalises by.
    """

    old_logp: torch.Tensor
    advantages: torch.Tensor
    response_mask: torch.Tensor
    rewards: torch.Tensor
    num_tokens: torch.Tensor
    num_seqs: int
    max_len: int
    ref_logp: torch.Tensor | None = None
    entropy: torch.Tensor | None = None
    is_weights: torch.Tensor | None = None

    @property
    def norm(self) -> dict:
        return dict(num_tokens=self.num_tokens, num_seqs=self.num_seqs, max_len=self.max_len)
