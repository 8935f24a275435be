"""GHPO — Guided Hybrid Policy Optimization (Liu et al. 2025, "GHPO: Adaptive Guidance for Stable and Efficient LLM
Reinforcement Learning", arXiv:2507.10628; official code github.com/hkgc-1/GHPO).

GRPO, plus difficulty detection and adaptive prompt refinement. A prompt q whose G completions all fail gets no
gradient under GRPO (every advantage is 0); GHPO generates it again with a hint, a prefix of its ground-truth
solution, that grows in stages until a completion succeeds:

    solved(q)  = ∃ i ≤ G : r_i > τ                                        (τ = ``success_threshold``)
    stage 0:     q                                                       (the data's prompt, a fresh batch)
    stage j:     q ⊕ h_j,  h_j = solution[: start of step k_j + 1],      j = 1..S, S = len(``hint_ratios``)
                 k_j = min(max(1, ⌊ω_j·n⌋), n − 1)                       (n solution steps, ω_j = hint_ratios[j−1])
    a group not solved at stage j − 1 is replaced by G new completions of its stage-j prompt; a group solved at
    stage j (j = 0: an easy prompt, untouched) is trained on; a group still unsolved at stage S is dropped
    A_i, L:      GRPO's (rlx/algos/grpo.py) over the final groups; the hint is part of the prompt (no gradient)

Preset: ω = (0.25, 0.5, 0.75), the paper's stages; with k_j in steps, the last step and the answer are always
left to the model, and a solution of n = 2 steps gets k = 1 at every stage (its group is sampled again with the
same hint). A record that cannot be hinted (fewer than 2 steps) is dropped after stage 0 as an unsolved group.

How the loop does it (rlx/trainers/online.py ``rollout``): generation round r + 1 generates the stage-r copies
that ``retry_records`` returns for the groups ``keep`` refused in round r (``gen_rounds`` = 1 + S), and the
kept groups of all rounds are joined into one batch. A copy carries ``raw_prompt`` (the data's prompt, from which
every stage's hint is built), ``hint_stage`` j and ``hint_steps`` k_j; the rewards score the copy's fields and
completion, so the answer check is unchanged. Metrics, from the loop: ``ghpo/retried_groups`` (groups generated
with a hint, all stages), ``ghpo/retried_kept`` (of these, the solved ones, trained on), ``ghpo/gen_rounds`` and
``ghpo/batch_fill`` (kept groups / B: below 1 when groups were dropped). GHPO keeps no state.

Differences from the authors' code: the hint is a prefix of whole solution steps continuing the prompt (the
model writes the rest of the solution), where the code appends an instruction and round(ω·len) characters of the
solution to the user message; success is the total reward > τ, where the code tests the accuracy term alone
(> 0, whatever the format term); a group still unsolved at the last stage is dropped, where the code trains on
it (zero accuracy advantage; it still counts in the token-mean normaliser). The hint needs records with step
labels: ``steps`` (the step strings, in order) and ``completion`` (the worked solution that writes them), as
data=sums has; ``check_config`` refuses the built-in data sets without them, data=jsonl is checked when a hint is
first needed. Where no refused record of a round can be hinted (all have one step), ``retry_records`` returns no
records and the step's rounds end there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from rlx.algos.base import check
from rlx.algos.grpo import GRPO
from rlx.registry import ALGOS

#: data sets (``data.name``) whose records carry ``steps`` and ``completion``; data=jsonl rows may (checked when a
#: hint is first needed); every other built-in data set has no step labels and is refused by ``check_config``
STEP_LABELLED = ("sums",)
USER_ROWS = ("jsonl",)


def hint_step_count(n_steps: int, ratio: float) -> int:
    """k = min(max(1, ⌊ω·n⌋), n − 1): steps of an n-step solution given away at hint ratio ω (n = 4: ω = 0.25,
    0.5, 0.75 → 1, 2, 3; n = 2 → 1 at every ω). Needs n ≥ 2."""
    return min(max(1, math.floor(ratio * n_steps + 1e-9)), n_steps - 1)


def step_starts(record: dict) -> list[int]:
    """Where each of ``record["steps"]`` starts in ``record["completion"]``, searched in order (each after the
    end of the one before); ValueError naming the record's prompt if a step is not there."""
    solution, starts, pos = record["completion"], [], 0
    for i, step in enumerate(record["steps"]):
        at = solution.find(str(step), pos)
        if at < 0:
            raise ValueError(f"algo=ghpo: step {i + 1} {step!r} of the record with prompt "
                             f"{record.get('raw_prompt', record['prompt'])!r} is not in its completion "
                             f"{solution!r} after position {pos}: a hint is a prefix of the completion up to a "
                             f"step, so the steps must appear in it in order")
        starts.append(at)
        pos = at + len(str(step))
    return starts


def hint(record: dict, ratio: float) -> tuple[str, int] | None:
    """(hint text, k) at hint ratio ω for a record with ``steps`` and ``completion``: the completion up to the start
    of step k + 1 (``hint_step_count``); None when the record cannot be hinted (no such fields, or fewer than 2
    steps). ``7+3+9+4=`` with completion ``7+3=10;10+9=19;19+4=23>23``: ω = 0.25 → (``7+3=10;``, 1)."""
    steps, solution = record.get("steps"), record.get("completion")
    if not steps or not isinstance(solution, str) or len(steps) < 2:
        return None
    k = hint_step_count(len(steps), ratio)
    return solution[:step_starts(record)[k]], k


def has_step_labels(record: dict) -> bool:
    return "steps" in record and "completion" in record


@ALGOS.register("ghpo")
@dataclass(frozen=True, kw_only=True)
class GHPO(GRPO):
    hint_ratios: tuple
    success_threshold: float
    retries: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        given = self.hint_ratios
        ratios = None if isinstance(given, (str, bytes)) or not hasattr(given, "__iter__") else list(given)
        check(bool(ratios) and all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in ratios),
              f"algo.hint_ratios={given}: must be a non-empty list of numbers (the hint ratio ω of each stage)")
        check(all(0 < w < 1 for w in ratios), f"algo.hint_ratios={ratios}: each ratio must be in (0, 1) (the share "
                                              f"of the solution's steps a stage gives away)")
        check(all(a < b for a, b in zip(ratios, ratios[1:])),
              f"algo.hint_ratios={ratios}: must increase (each stage gives a longer hint)")
        object.__setattr__(self, "hint_ratios", tuple(float(w) for w in ratios))   # a tuple: the dataclass hashes

    def check_config(self, cfg) -> None:
        super().check_config(cfg)
        check(cfg.env.name == "single", f"env={cfg.env.name}: algo=ghpo hints single-turn prompts with a prefix "
                                         f"of their worked solution; it has no multi-turn form (use env=single)")
        name = cfg.data.name
        check(name in STEP_LABELLED + USER_ROWS,
              f"data.name={name}: algo=ghpo hints with a prefix of each record's worked solution, which needs step "
              f"labels (the record fields 'steps' and 'completion'); data={name} has none. Use data=sums "
              f"(experiment=sums) or data=jsonl with those fields")

    def gen_rounds(self) -> int:
        return 1 + len(self.hint_ratios)

    def keep(self, rewards: torch.Tensor) -> torch.Tensor:
        """Groups (rewards [n, G]) with at least one success, r > success_threshold."""
        return (rewards > self.success_threshold).any(-1)

    def retry_records(self, records: list[dict], keep: torch.Tensor) -> list[dict]:
        """For each refused record below the last stage that can be hinted: a copy at the next stage, its prompt
        the data's prompt (``raw_prompt``) followed by that stage's hint ([] when there is none: the round ends)."""
        out = []
        for record, kept in zip(records, keep.tolist()):
            stage = int(record.get("hint_stage", 0)) + 1
            if kept or stage > len(self.hint_ratios):
                continue
            if not has_step_labels(record):
                raise ValueError(f"algo=ghpo: the training record with prompt {record['prompt']!r} has no "
                                 f"'steps' and 'completion' fields (the worked solution a hint is a prefix of); the "
                                 f"data set (data.name) must give every record its step labels: data=sums does, "
                                 f"or add both fields to every row of a data=jsonl file")
            raw = record.get("raw_prompt", record["prompt"])
            made = hint(record, self.hint_ratios[stage - 1])
            if made is None:   # fewer than 2 steps: nothing to give away that leaves a step to the model
                continue
            text, k = made
            out.append({**record, "prompt": raw + text, "raw_prompt": raw, "hint_stage": stage, "hint_steps": k})
        return out
