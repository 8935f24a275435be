"""The rollout interface every generation engine implements."""

from __future__ import annotations

from dataclasses import dataclass

import torch


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


def records_logprobs(cfg, free: bool) -> bool:
    """Whether an engine records ``Rollout.engine_logp`` under the ``rollout`` config ``cfg``:
    ``engine_logprobs`` true/false decides; null (auto) = on where the engine gets them for free
    (``free``: vLLM) or where the importance-sampling correction needs them (``is_correction``)."""
    setting = cfg.get("engine_logprobs")
    if setting is None:
        return free or cfg.get("is_correction", "none") != "none"
    return bool(setting)


class RolloutEngine:
    def generate(self, prompts: list[str], n: int = 1, greedy: bool = False) -> Rollout:  # pragma: no cover
        raise NotImplementedError

    def generate_ids(self, ids: torch.Tensor, am: torch.Tensor, n: int = 1, greedy: bool = False) -> Rollout:
        """As ``generate`` from left-padded token ids [B, P] and their attention mask (multi-turn contexts)."""
        raise NotImplementedError(f"{type(self).__name__} does not generate from token ids; multi-turn envs need "
                                  "rollout.engine=hf")

    def sync_weights(self, model) -> None:
        """Engines that hold their own copy of the weights (vLLM) refresh them here."""
