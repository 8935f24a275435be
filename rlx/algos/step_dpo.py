"""Step-DPO — step-wise preference optimisation (Lai et al. 2024, "Step-DPO: Step-wise Preference Optimization for
Long-chain Reasoning of LLMs", arXiv:2406.18629, §3.1 eq. 2).

    h = log π_θ(s_win | x; s_1~k−1)/π_ref(s_win | x; s_1~k−1) − log π_θ(s_lose | x; s_1~k−1)/π_ref(s_lose | x; s_1~k−1)
    L = −E_(x, s_1~k−1, s_win, s_lose)~D [log σ(β h)]

DPO's loss (the paper's eq. 1; ``rlx.algos.dpo.dpo_loss``) with one reasoning step as the response: the problem x
and the correct steps s_1..s_{k−1} are the prompt and carry no loss, s_win / s_lose are the correct and a wrong
k-th step, and each log-ratio is a sum over the step's own tokens (no EOS: a step does not end the answer; the
authors' StepDPOTrainer drops the EOS TRL appends). All of that lives in the data (``data=sums_steps``,
``data=step_pairs``), so the only difference from DPO is the data: StepDPO subclasses DPO, with its loss,
implicit reward β log π_θ/π_ref and checks, and ``check_config`` refuses response-level pairs (they would make
it plain algo=dpo). ``label_smoothing`` is DPO's cDPO term; the paper has none (0).
"""

from __future__ import annotations

from dataclasses import dataclass

from rlx.algos.base import check
from rlx.algos.dpo import DPO
from rlx.registry import ALGOS

#: data sets (``data.name``) whose records are step pairs: the prompt ends with the shared correct prefix
STEP_PAIRS = ("sums_steps", "step_pairs")


@ALGOS.register("step_dpo")
@dataclass(frozen=True, kw_only=True)
class StepDPO(DPO):
    def check_config(self, cfg) -> None:
        super().check_config(cfg)
        name = cfg.data.name
        check(
            name in STEP_PAIRS,
            f"data.name={name}: algo=step_dpo trains on step-level pairs (a prompt with the "
            f"correct steps so far, a correct and a wrong next step): data=sums_steps, or "
            f"data=step_pairs with a file; data={name} has response-level pairs (algo=dpo)",
        )
