"""The mini-batch schedule the policy update and the critic's share: μ epochs (``trainer.update_epochs``) over
mini-batches of ``trainer.mini_batch_size`` samples (null = all N), each with the totals its loss is normalised
by, so that the gradient does not depend on the micro-batch size."""

from __future__ import annotations

import torch


def sizes(cfg, n: int) -> tuple[int, int]:
    """(mini, micro): samples per optimizer step and per forward, for a batch of n samples."""
    t = cfg.trainer
    mini = min(t.mini_batch_size or n, n)
    return mini, min(t.micro_batch_size or mini, mini)


def minibatches(cfg, response_mask: torch.Tensor):
    """Yield (rows, norm) for every mini-batch of every epoch: ``rows`` the sample indices (shuffled when there
    is more than one mini-batch), ``norm`` the mini-batch totals the losses aggregate with: ``num_tokens``,
    ``num_seqs`` (rows with at least one valid token: a sample whose reward failed has none, and must not
    dilute the sequence-mean aggregations, as in verl) and ``max_len`` (L_max, the generation budget: Dr.GRPO)."""
    n = response_mask.shape[0]
    mini, _ = sizes(cfg, n)
    for _ in range(cfg.trainer.update_epochs):
        order = torch.randperm(n) if n > mini else torch.arange(n)
        for s in range(0, n, mini):
            rows = order[s:s + mini]
            mask = response_mask[rows]
            yield rows, {"num_tokens": mask.sum(), "num_seqs": max(int(mask.any(-1).sum()), 1),
                         "max_len": cfg.rollout.max_new_tokens}
