"""The algorithm contract. An algorithm is a frozen dataclass whose fields are exactly the keys of its preset
(``conf/algo/<name>.yaml``, where every default lives): ``Algorithm.from_config(cfg.algo)`` builds it as
``cls(**fields)``, so a misspelt or missing key fails at build time with the key named, and each algorithm
checks its own values in ``__post_init__`` (``check``). Trainers never branch on an algorithm's name; they
read what it ``requires``:

    ref_logp         reference log-probs (a frozen reference model is loaded)
    old_logp         behaviour log-probs before the update, even when on-policy (KL in the reward)
    values           a critic: V_old and value targets (trainers/critic.py)
    greedy_baseline  one greedy decode per prompt, scored, as ``batch.greedy_rewards`` (ReMax)
    entropy          token entropies with gradient in the training forward (an entropy bonus)
    ptx              a pretraining LM term in every policy update (trainers/ptx.py)
    mismatched       offline: each prompt with another row's response (KTO's KL estimate)
    seq_kl           offline: each response's sequential KL Σ_t KL(π_ref ‖ π_θ) over the vocabulary (TDPO)

Each trainer kind has its base class here or beside it: ``PolicyAlgorithm`` (the online loop, below),
``PreferenceAlgorithm`` (algos/preference.py, the offline loop), ``SFT`` and ``RewardModelAlgo`` (their own
trainers). Config fields never change after the build; state that must (an adaptive KL coefficient) lives in
a helper object made in ``__post_init__`` and round-trips through ``state_dict`` so that resume is exact.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

import torch

from rlx.batch import LossInputs
from rlx.config.values import _choice, _need
from rlx.ops import AGG_MODES

REQUIREMENTS = ("ref_logp", "old_logp", "values", "greedy_baseline", "entropy", "ptx", "mismatched", "seq_kl")


def check(cond: bool, msg: str) -> None:
    """Raise ``ConfigError(msg)`` unless ``cond`` (msg starts with ``algo.<key>=<value>:``; exit 2 from the CLI)."""
    _need(cond, msg)


def check_choice(key: str, value, valid) -> None:
    """``algo.<key>`` must be one of ``valid``; the error names the closest choice (rlx.config's own check)."""
    _choice(f"algo.{key}", value, valid)


@dataclass(frozen=True, kw_only=True)
class Algorithm:
    name: str
    trainer: ClassVar[str] = "online"   # which trainer runs it (the registry of rlx/trainers)

    @classmethod
    def from_config(cls, cfg) -> Algorithm:
        """``cls(**cfg)`` for an ``algo`` config node (interpolations resolved), with the key named on error."""
        from omegaconf import DictConfig, OmegaConf

        values = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
        keys = [f.name for f in fields(cls) if f.init]
        for key in values:
            check(key in keys, f"algo.{key}: not a key of algo={values.get('name')} (its keys: {', '.join(keys)})")
        for key in keys:
            check(key in values, f"algo.{key}: missing; algo={values.get('name')} needs it (its preset "
                                 f"conf/algo/<name>.yaml holds every default)")
        return cls(**values)

    def __post_init__(self) -> None:
        """Value checks of this algorithm's own keys; subclasses extend it (and call ``super()``)."""

    @property
    def requires(self) -> frozenset[str]:
        """What the trainer must provide (module docstring); a subset of ``REQUIREMENTS``."""
        return frozenset()

    def check_config(self, cfg) -> None:
        """Checks against the other config groups (e.g. DAPO's overlong buffer against rollout.max_new_tokens)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@dataclass(frozen=True, kw_only=True)
class Aggregated(Algorithm):
    """An algorithm with ``loss_agg_mode``: how its per-token loss becomes one number (``rlx.ops.aggregate``)."""

    loss_agg_mode: str

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("loss_agg_mode", self.loss_agg_mode, AGG_MODES)


@dataclass(frozen=True, kw_only=True)
class PolicyAlgorithm(Algorithm):
    """What the online loop asks (rlx/trainers/online.py): samples per prompt, which groups and samples to keep,
    reward shaping, advantages and the loss."""

    group_size: int
    #: fewest samples per prompt the estimator works with (a group baseline needs two)
    min_group_size: ClassVar[int] = 2
    #: True = learns without labels: the loop never passes the data's fields (answers) to the training reward,
    #: only prompts, completions, completion_ids and ``pseudo_labels`` (TTRL, RLSC)
    label_free: ClassVar[bool] = False
    #: True when ``loss`` multiplies per-token terms by ``LossInputs.is_weights`` (rollout.is_correction);
    #: False where the ratio or weight is one per response
    takes_is_weights: ClassVar[bool] = True
    #: True when ``retry_records`` regenerates refused records (GHPO); the loop then logs ``<algo>/retried_*``
    retries: ClassVar[bool] = False
    #: True when the advantages add ``Batch.token_rewards`` (a token-level reward term: reward=prm) to the per-token
    #: rewards (PPO, REINFORCE++); other algorithms refuse such a term (rlx.config.values.check_algorithm)
    takes_token_rewards: ClassVar[bool] = False
    #: False when ``sample_completions`` reads the round as a whole (EEPO's entropy gate and forgetting step), so
    #: that under torchrun every rank generates the whole batch instead of its share (rlx/trainers/rollouts.py)
    shards_rollouts: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.group_size >= self.min_group_size,
              f"algo.group_size={self.group_size}: {self.name} needs at least {self.min_group_size} samples per prompt")

    def gen_rounds(self) -> int:
        """Generation rounds per step: >1 refills the batch with fresh prompts until ``keep`` has accepted B
        groups (dynamic sampling, DAPO). Default: one round."""
        return 1

    def pseudo_labels(self, answers: list, group_size: int) -> list | None:
        """Labels [N] standing in for the data's ``answer`` in a label-free algorithm's training reward, from the
        reward's reading of each completion (``answers`` [N], None = no answer). Default: None."""
        return None

    def sample_episodes(self, runner, records: list[dict], group_size: int):
        """The ``Rollout`` of ``group_size`` episodes per record with a multi-turn env (``runner``:
        rlx.rollout.episodes.EpisodeRunner). Default: independent episodes; tree rollouts (Tree-GRPO) fork them."""
        return runner.run(records, n=group_size)

    def sample_completions(self, sampler, records: list[dict], group_size: int):
        """The ``Rollout`` of ``group_size`` completions per record, single-turn (``sampler``:
        rlx.rollout.base.Sampler). Default: one generation call; EEPO samples in two halves and unlearns the
        first half's mode in between."""
        return sampler.generate(records, group_size)

    def retry_records(self, records: list[dict], keep: torch.Tensor) -> list[dict] | None:
        """Records to generate in the next round (when ``gen_rounds`` > 1 and fewer than B groups are kept) instead
        of fresh prompts, from this round's ``records`` and ``keep`` [len(records)]; [] = no further round. The loop
        logs ``<algo>/retried_groups`` and ``<algo>/retried_kept`` for an algorithm that sets ``retries``. Default:
        None (fresh prompts: dynamic sampling); GHPO retries a group that all failed, with a hint."""
        return None

    def refresh_reference(self, step: int) -> bool:
        """True when the reference model becomes a copy of the policy at the start of ``step`` (iterative DPO;
        rlx/trainers/reference.py). Default: False, a frozen reference."""
        return False

    def keep(self, rewards: torch.Tensor) -> torch.Tensor:
        """Bool [B]: which prompt groups (rewards [B, G]) go into the update. Default: all."""
        return torch.ones(rewards.shape[0], dtype=torch.bool)

    def keep_samples(self, rewards: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """(bool [B, G], metrics): which samples of the kept groups go into the update (RAFT: the best of each
        group). Applied after ``keep``; the kept rows lose their group layout. Default: all."""
        return torch.ones_like(rewards, dtype=torch.bool), {}

    def shape_rewards(self, rewards: torch.Tensor, response_mask: torch.Tensor, max_new_tokens: int):
        """(rewards [N], metrics): sequence rewards after algorithm-specific shaping (DAPO's overlong penalty),
        before advantages and before ``keep``. Default: unchanged."""
        return rewards, {}

    def advantages(self, batch) -> tuple[torch.Tensor, dict]:
        """(token advantages [N, T] float32, metrics) for an ``rlx.batch.Batch`` (rewards, response_mask and
        what ``requires`` asked for)."""
        raise NotImplementedError

    def loss(self, logp: torch.Tensor, mb: LossInputs) -> tuple[torch.Tensor, dict]:
        """(loss, metrics) for the training forward's token log-probs ``logp`` [n, T] of one micro-batch."""
        raise NotImplementedError
