"""The rollout interface every generation engine implements."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Rollout:
    """N = len(prompts)·n sequences; the n samples of a prompt are contiguous.

    ``prompt_ids``/``prompt_mask`` are left-padded [N, P]; ``completion_ids`` [N, T] are right-padded;
    ``response_mask`` [N, T] is True up to and including the first EOS; ``truncated`` [N] is True
    where no EOS was produced within the length limit; ``texts`` are decoded up to the first EOS.
    ``engine_logp`` [N, T] (float32, 0 outside ``response_mask``), when the engine records it, is the
    log-probability of each sampled token under the engine's model, in the trainer's convention
    (``logprobs.token_logprobs``): log softmax of the raw logits, before temperature, top-k and top-p.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    response_mask: torch.Tensor
    truncated: torch.Tensor
    texts: list[str]
    gen_tokens: int = 0
    engine_logp: torch.Tensor | None = None
    # multi-turn episodes (rlx/rollout/episodes.py): the response columns hold turns and observations
    attention: torch.Tensor | None = None     # [N, T] attention of the response columns (None: response_mask)
    turn: torch.Tensor | None = None          # [N, T] long, rlx.batch.Batch.turn
    turn_state: torch.Tensor | None = None    # [N, T] long, rlx.batch.Batch.turn_state
    reward_scale: torch.Tensor | None = None  # [N] float32 factor on the total reward (Episode.reward_scale)
    extra_metrics: dict | None = None         # episode/*, tool/*, env/* of multi-turn episodes; <algo>/* of
                                              # samplers of its own (tree, EEPO), merged over generation rounds
    tree: torch.Tensor | None = None          # [N] long, rlx.batch.Batch.tree (tree rollouts)


@dataclass(frozen=True)
class Sampler:
    """What ``algo.sample_completions`` works with (rlx/algos/base.py): ``generate(records, n)`` → a ``Rollout`` of
    n completions per record; the policy ``model`` it samples from (EEPO changes its parameters between calls, then
    restores them); the forward's ``autocast`` (``rlx.models.logprobs.token_logprobs``); the run's ``tokenizer``
    (SPIN encodes demonstrations with it). The online loop (rlx/trainers/online.py) makes one per step."""

    generate: Callable
    model: torch.nn.Module
    autocast: object
    tokenizer: object

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id


#: the fields a multi-turn episode adds to a Rollout; ``merge_rollouts`` joins single-turn rollouts only
_EPISODE_FIELDS = ("attention", "turn", "turn_state", "reward_scale", "tree")


def _pad_right(x: torch.Tensor, width: int, value) -> torch.Tensor:
    return F.pad(x, (0, width - x.shape[1]), value=value) if x.shape[1] < width else x


def _interleave(a, b, n: int):
    """Rows of ``a`` [n·h₁, ...] and ``b`` [n·h₂, ...] as [n·(h₁ + h₂), ...]: each of the n records' h₁ rows of
    ``a``, then its h₂ rows of ``b`` (tensors or lists)."""
    if isinstance(a, list):
        h1, h2 = len(a) // n, len(b) // n
        return [x for i in range(n) for x in (*a[i * h1:(i + 1) * h1], *b[i * h2:(i + 1) * h2])]
    return torch.cat([a.reshape(n, -1, *a.shape[1:]), b.reshape(n, -1, *b.shape[1:])], 1).reshape(-1, *a.shape[1:])


def merge_rollouts(first: Rollout, second: Rollout, n_records: int, pad_id: int) -> Rollout:
    """One ``Rollout`` of two single-turn rollouts of the same ``n_records`` records: each record's completions
    contiguous, first's then second's. The completion columns are right-padded to the wider of the two
    (``pad_id`` for completion_ids, False for response_mask, 0 for engine_logp); the prompt columns of both
    must be the same (the same records, encoded alike); gen_tokens add up.

    first: 2 records × 1 row, completions [[5, 6]], [[7, PAD]]; second: 2 × 1, [[8]], [[9]] →
    rows [5, 6], [8, PAD], [7, PAD], [9, PAD]: record 0's two rows, then record 1's."""
    for out in (first, second):
        if any(getattr(out, k) is not None for k in _EPISODE_FIELDS):
            raise ValueError("merge_rollouts: single-turn rollouts only (this one has episode fields)")
        if len(out.texts) % n_records:
            raise ValueError(f"merge_rollouts: {len(out.texts)} rows are not a whole number per record of {n_records}")
    h1, h2 = len(first.texts) // n_records, len(second.texts) // n_records
    same_prompts = (first.prompt_ids.shape[1] == second.prompt_ids.shape[1]
                    and torch.equal(first.prompt_ids[::h1], second.prompt_ids[::h2])
                    and torch.equal(first.prompt_mask[::h1], second.prompt_mask[::h2]))
    if not same_prompts:
        raise ValueError("merge_rollouts: the two rollouts' prompt columns differ (not the same records?)")
    if (first.engine_logp is None) != (second.engine_logp is None):
        raise ValueError("merge_rollouts: engine_logp recorded in one rollout only")
    T = max(first.completion_ids.shape[1], second.completion_ids.shape[1])

    def columns(name: str, value):
        return _interleave(_pad_right(getattr(first, name), T, value), _pad_right(getattr(second, name), T, value),
                           n_records)

    return Rollout(
        prompt_ids=_interleave(first.prompt_ids, second.prompt_ids, n_records),
        prompt_mask=_interleave(first.prompt_mask, second.prompt_mask, n_records),
        completion_ids=columns("completion_ids", pad_id),
        response_mask=columns("response_mask", False),
        truncated=_interleave(first.truncated, second.truncated, n_records),
        texts=_interleave(first.texts, second.texts, n_records),
        gen_tokens=first.gen_tokens + second.gen_tokens,
        engine_logp=columns("engine_logp", 0.0) if first.engine_logp is not None else None,
    )


def concat_rollouts(parts: list[Rollout], pad_id: int) -> Rollout:
    """One single-turn ``Rollout`` of ``parts`` one after another (the ranks' shares of a round, in rank order):
    prompt columns left-padded to the widest (``pad_id``, mask 0), completion columns right-padded (``pad_id``,
    False, log-prob 0); texts, flags and ``gen_tokens`` joined; ``extra_metrics`` averaged (equal shares)."""
    if any(getattr(p, k) is not None for p in parts for k in _EPISODE_FIELDS):
        raise ValueError("concat_rollouts: single-turn rollouts only (a part has episode fields)")
    if len({p.engine_logp is None for p in parts}) > 1:
        raise ValueError("concat_rollouts: engine_logp recorded in some parts only")
    P = max(p.prompt_ids.shape[1] for p in parts)
    T = max(p.completion_ids.shape[1] for p in parts)

    def left(x, value):
        return F.pad(x, (P - x.shape[1], 0), value=value)

    def cat(name, value):
        return torch.cat([_pad_right(getattr(p, name), T, value) for p in parts])

    extra = [p.extra_metrics for p in parts if p.extra_metrics]
    return Rollout(
        prompt_ids=torch.cat([left(p.prompt_ids, pad_id) for p in parts]),
        prompt_mask=torch.cat([left(p.prompt_mask, 0) for p in parts]),
        completion_ids=cat("completion_ids", pad_id), response_mask=cat("response_mask", False),
        truncated=torch.cat([p.truncated for p in parts]), texts=[t for p in parts for t in p.texts],
        gen_tokens=sum(p.gen_tokens for p in parts),
        engine_logp=cat("engine_logp", 0.0) if parts[0].engine_logp is not None else None,
        extra_metrics={k: sum(m[k] for m in extra) / len(extra) for k in extra[0]} if extra else None,
    )


def records_logprobs(cfg, free: bool) -> bool:
    """Whether an engine records ``Rollout.engine_logp`` under the ``rollout`` config ``cfg``:
    ``engine_logprobs`` true/false decides; null (auto) = on where the engine gets them for free
    (``free``: vLLM) or where the importance-sampling correction needs them (``is_correction``)."""
    setting = cfg.get("engine_logprobs")
    if setting is None:
        return free or cfg.get("is_correction", "none") != "none"
    return bool(setting)


class RolloutEngine:
    def generate(self, prompts: list[str], n: int = 1, greedy: bool = False,
                 keys: list[int] | None = None) -> Rollout:  # pragma: no cover
        """n samples per prompt; ``keys`` [len(prompts)]: each prompt's random stream (rlx/rollout/streams.py),
        None = the engine's own generator."""
        raise NotImplementedError

    def generate_ids(self, ids: torch.Tensor, am: torch.Tensor, n: int = 1, greedy: bool = False,
                     keys: list[int] | None = None) -> Rollout:
        """As ``generate`` from left-padded token ids [B, P] and their attention mask (multi-turn contexts)."""
        raise NotImplementedError(f"{type(self).__name__} does not generate from token ids; multi-turn envs need "
                                  "rollout.engine=hf")

    def sync_weights(self, model) -> None:
        """Engines that hold their own copy of the weights (vLLM) refresh them here."""
