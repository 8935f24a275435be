"""PPO-ptx — the InstructGPT objective (Ouyang et al. 2022, arXiv:2203.02155 eq. 2; docs/algorithm_notes.md §2.1):

    objective(φ) = E_{(x,y)~π_φ}[r_θ(x, y) − β·log(π_φ(y|x)/π_SFT(y|x))] + γ·E_{x~D_pretrain}[log π_φ(x)]

The first part is PPO with the KL in the reward (``rlx.algos.ppo``, unchanged). The second, the
pretraining LM term with weight γ = ``ptx_coef``, is added by the online loop to every policy
update because this algorithm asks for it (``Algorithm.ptx_coef`` > 0; ``rlx/trainers/ptx.py``).
InstructGPT used β = 0.02 and γ = 27.8 with its pretraining corpus (docs/algorithm_notes.md §2.1); here the
"pretraining" text is the data set's own (prompt, completion) records and γ is far smaller.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlx.algos.base import check
from rlx.algos.ppo import PPO
from rlx.registry import ALGOS


@ALGOS.register("ppo_ptx")
@dataclass(frozen=True, kw_only=True)
class PPOPtx(PPO):
    """PPO with a pretraining LM term: weight ``ptx_coef`` γ > 0 on ``ptx_batch_size`` records per update."""

    ptx_coef: float
    ptx_batch_size: int

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.ptx_coef > 0, f"algo.ptx_coef={self.ptx_coef}: ppo_ptx needs a pretraining weight > 0 "
                                 "(else use algo=ppo)")
        check(self.ptx_batch_size >= 1, f"algo.ptx_batch_size={self.ptx_batch_size}: must be >= 1")

    @property
    def requires(self) -> frozenset[str]:
        return super().requires | {"ptx"}
