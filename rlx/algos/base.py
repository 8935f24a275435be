"""What a trainer may ask an algorithm. Trainers never branch on an algorithm's name.

An online algorithm answers: which trainer runs it (``trainer``), whether it needs a reference model
(``needs_ref``) or a critic (``needs_critic``), how many samples per prompt (``group_size``), which
groups to keep (``keep``), the advantages, and the loss. Extra state (e.g. an adaptive KL
coefficient) round-trips through ``state_dict`` so that resume is exact.
"""

from __future__ import annotations

import torch


class Algorithm:
    trainer = "online"
    needs_critic = False
    # True = learns without labels: the online loop never passes the data's fields (answers) to the
    # training reward, only prompts, completions, completion_ids and ``pseudo_labels`` (TTRL, RLSC).
    label_free = False

    def __init__(self, cfg):
        self.cfg = cfg
        self.name = cfg.name

    @property
    def needs_ref(self) -> bool:
        return float(self.cfg.get("beta", 0.0)) > 0

    @property
    def group_size(self) -> int:
        return int(self.cfg.get("group_size", 1))

    @property
    def needs_entropy(self) -> bool:
        """True when the loss takes the token entropies of the training forward (an entropy bonus)."""
        return float(self.cfg.get("entropy_coef", 0.0)) > 0

    @property
    def max_gen_rounds(self) -> int:
        """Generation rounds per step: >1 refills the batch with fresh prompts until ``keep`` has
        accepted B groups (dynamic sampling, DAPO). Default: one round, no refill."""
        return 1

    def pseudo_labels(self, answers: list, group_size: int) -> list | None:
        """Labels [N] that stand in for the data's ``answer`` in a label-free algorithm's training reward,
        from the reward's reading of each completion's answer (``answers`` [N], None = no answer).
        Default: None (no pseudo-labels)."""
        return None

    def keep(self, rewards: torch.Tensor) -> torch.Tensor:
        """Bool [B]: which prompt groups (rewards [B, G]) go into the update. Default: all."""
        return torch.ones(rewards.shape[0], dtype=torch.bool)

    def keep_samples(self, rewards: torch.Tensor) -> torch.Tensor:
        """Bool [B, G]: which samples of the kept groups go into the update (RAFT: the best of each
        group). Applied after ``keep``; the kept rows lose their group layout. Default: all."""
        return torch.ones_like(rewards, dtype=torch.bool)

    @property
    def needs_greedy_baseline(self) -> bool:
        """True when the loop must decode one greedy response per prompt, score it, and pass its
        reward to ``advantages`` as ``batch.greedy_rewards`` [N] (ReMax, arXiv:2310.10505)."""
        return False

    @property
    def needs_old_logp(self) -> bool:
        """True when ``advantages`` reads ``batch.old_logp`` (KL in the reward), so the loop computes
        the behaviour log-probs before the update even when it is on-policy."""
        return False

    @property
    def ptx_coef(self) -> float:
        """Weight γ of a pretraining LM term added to every policy update (PPO-ptx, arXiv:2203.02155
        eq. 2; the loop draws ``algo.ptx_batch_size`` records of the data set). Default: 0, none."""
        return float(self.cfg.get("ptx_coef", 0.0))

    #: True when ``loss`` takes ``is_weights`` [n, T] (detached per-token weights multiplying its policy-gradient
    #: terms: rollout.is_correction, rollout/correction.py); False where the ratio or weight is one per response.
    takes_is_weights: bool = True

    #: Names of per-sample ``Batch`` fields (e.g. ``"rewards"``) that ``loss`` takes as keyword arguments.
    loss_fields: tuple = ()

    def shape_rewards(self, rewards: torch.Tensor, response_mask: torch.Tensor, max_new_tokens: int):
        """(rewards [N], metrics): sequence rewards after algorithm-specific shaping (e.g. DAPO's
        overlong penalty), before advantages and before ``keep``. Default: unchanged."""
        return rewards, {}

    def advantages(self, rewards: torch.Tensor, response_mask: torch.Tensor, **batch) -> torch.Tensor:
        """Token-level advantages [N, T] from sequence rewards [N]."""
        raise NotImplementedError

    def loss(self, logp, old_logp, advantages, response_mask, ref_logp=None, **norm):
        """(loss, metrics) for one micro-batch; ``norm`` carries mini-batch totals for aggregation."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
