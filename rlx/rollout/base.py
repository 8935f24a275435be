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
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    response_mask: torch.Tensor
    truncated: torch.Tensor
    texts: list[str]
    gen_tokens: int = 0


class RolloutEngine:
    def generate(self, prompts: list[str], n: int = 1, greedy: bool = False) -> Rollout:  # pragma: no cover
        raise NotImplementedError

    def sync_weights(self, model) -> None:
        """Engines that hold their own copy of the weights (vLLM) refresh them here."""
