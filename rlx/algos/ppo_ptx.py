"""PPO-ptx — the InstructGPT objective (Ouyang et al. 2022, arXiv:2203.02155 eq. 2; docs/algorithm_notes.md §2.1):

    objective(φ) = E_{(x,y)~π_φ}[r_θ(x, y) − β·log(π_φ(y|x)/π_SFT(y|x))] + γ·E_{x~D_pretrain}[log π_φ(x)]

The first part is PPO with the KL in the reward (``rlx.algos.ppo``, unchanged). The second, the
pretraining LM term with weight γ = ``ptx_coef``, is added by the online loop to every policy
update because this algorithm asks for it (``Algorithm.ptx_coef`` > 0; ``rlx/trainers/ptx.py``).
InstructGPT used β = 0.02 and γ = 27.8 with its pretraining corpus (docs/algorithm_notes.md §2.1); here the
"pretraining" text is the data set's own (prompt, completion) records and γ is far smaller.
"""

from __future__ import annotations

from rlx.algos.ppo import PPO
from rlx.registry import ALGOS


class PPOPtx(PPO):
    """PPO whose config carries ``ptx_coef`` > 0 and ``ptx_batch_size`` (the loop adds the LM term)."""


@ALGOS.register("ppo_ptx")
def build_ppo_ptx(cfg) -> PPOPtx:
    if not cfg.ptx_coef > 0:
        raise ValueError(f"algo.ptx_coef={cfg.ptx_coef}: ppo_ptx needs a pretraining weight > 0 (else use algo=ppo)")
    return PPOPtx(cfg)
