"""SPIN — Self-Play fIne-tuNing (Chen et al. 2024, "Self-Play Fine-Tuning Converts Weak Language Models to Strong
Language Models", ICML 2024, arXiv:2401.01335).

SPIN improves an SFT model with nothing but the SFT data: the model of the previous iteration, p_θt, is the
opponent that writes a response y' to each SFT prompt x, and the new model learns to tell the data's response y
from it, with a logistic loss on the log-ratios against the previous iterate (the paper's eq. 4.7, ℓ(t) =
log(1 + e^(−t)); its λ is β here):

    y' ~ p_θt(·|x),   h = [log p_θ(y|x) − log p_θt(y|x)] − [log p_θ(y'|x) − log p_θt(y'|x)]   (sums over tokens)
    L  = ℓ(β·h) = −log σ(β·h),   averaged over the prompts;   then θ_(t+1) = argmin L, and p_θt ← p_θ(t+1)

It is DPO's loss (``rlx.algos.online_dpo.online_dpo_loss``) with chosen = the demonstration, rejected = the
model's own sample and the reference = the previous iterate; the optimum is the data distribution (the paper's
Theorem 5.2: p_θ = p_data is the only fixed point), so unlike DPO or RL it needs no reward, no preference labels
and no reward model. At p_θ = p_θt, h = 0 and L = log 2.

How the online loop runs it: the data's records carry their demonstration (``completion``, the SFT target of the
warm start: data=sums, data=arithmetic); ``sample_completions`` samples one response per prompt from the policy
and lays each prompt's pair out as rows (2k, 2k+1) = (demonstration, sample), the demonstration encoded as the
SFT trainer encodes it (its tokens, then EOS). The reference is the previous iterate through
``ref_update_every`` (``refresh_reference``, rlx/trainers/reference.py): with 1 (the preset) π_ref ← π_θ at the
start of every step, so the sample comes from the model that is also the reference, as in the paper, and an
iteration is one step's B prompts, trained for ``trainer.update_epochs`` passes; with N > 1 an iteration spans N
steps and the samples come from the moving policy (SPIN's iteration data regenerated every step). The reward is
not part of the loss: the loop still scores every row, and ``spin/sample_reward`` (the samples' mean reward) and
``spin/demo_reward`` say how far the model is from its data; ``spin/identical_frac`` counts samples that equal
their demonstration (their pair has h = 0: no gradient). ``reward/*`` and ``response/*`` cover both rows of each
pair. The demonstrations have no engine log-probs, so ``rollout.is_correction`` is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlx.algos.base import check
from rlx.algos.online_dpo import OnlineDPO
from rlx.algos.reinforce import per_token
from rlx.registry import ALGOS
from rlx.rollout.base import Rollout, merge_rollouts


def demo_rollout(tok, records: list[dict], prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> Rollout:
    """The records' demonstrations (``completion``) as a ``Rollout`` of one row per record over the given prompt
    columns: their tokens then EOS, right-padded; ``response_mask`` True on them and the EOS; none truncated.

    Raises ``ValueError`` naming the first record without a demonstration."""
    comps = []
    for i, r in enumerate(records):
        if not isinstance(r.get("completion"), str):
            raise ValueError(f"algo=spin: training record {i} (prompt {r.get('prompt')!r}) has no demonstration "
                             "('completion'): SPIN needs SFT data, e.g. data=sums or data=arithmetic")
        comps.append(tok(r["completion"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
    T = max(len(c) for c in comps)
    ids = torch.full((len(comps), T), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros(len(comps), T, dtype=torch.bool)
    for i, c in enumerate(comps):
        ids[i, :len(c)], mask[i, :len(c)] = torch.tensor(c, dtype=torch.long), True
    return Rollout(prompt_ids, prompt_mask, ids.to(prompt_ids.device), mask.to(prompt_ids.device),
                   torch.zeros(len(comps), dtype=torch.bool), [r["completion"] for r in records])


@ALGOS.register("spin")
@dataclass(frozen=True, kw_only=True)
class SPIN(OnlineDPO):
    """One demonstration and one sample per prompt (``group_size`` 2); the loss and its pair layout are online
    DPO's."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.group_size == 2, f"algo.group_size={self.group_size}: spin pairs each prompt's demonstration "
                                    "with one sample of the policy, so it must be 2")

    def check_config(self, cfg) -> None:
        super().check_config(cfg)
        check(cfg.env.name == "single", f"env={cfg.env.name}: algo=spin pairs a single-turn demonstration with a "
                                        "single-turn sample (env=single)")
        corr = cfg.rollout.get("is_correction", "none")
        check(corr == "none", f"rollout.is_correction={corr}: algo=spin's demonstration rows have no engine "
                              "log-probs to correct with (none)")

    def sample_completions(self, sampler, records: list[dict], group_size: int) -> Rollout:
        """Rows (2k, 2k+1) = (record k's demonstration, one sample of the policy for it)."""
        sample = sampler.generate(records, 1)
        sample.engine_logp = None   # the demonstrations have none (check_config refuses the correction)
        demo = demo_rollout(sampler.tokenizer, records, sample.prompt_ids, sample.prompt_mask)
        out = merge_rollouts(demo, sample, len(records), sampler.pad_id)
        same = sum(d == s for d, s in zip(demo.texts, sample.texts))
        out.extra_metrics = {f"{self.name}/identical_frac": same / len(records)}
        return out

    def keep(self, rewards: torch.Tensor) -> torch.Tensor:
        """Every prompt: its pair is (demonstration, sample), whatever the reward says."""
        return torch.ones(rewards.shape[0], dtype=torch.bool)

    def keep_samples(self, rewards: torch.Tensor):
        return torch.ones_like(rewards, dtype=torch.bool), {}

    def advantages(self, batch):
        """+1 on the demonstration rows (2k), −1 on the sample rows (2k+1), on every token."""
        n = batch.rewards.shape[0]
        if n % 2:
            raise ValueError(f"spin: {n} rows are not whole (demonstration, sample) pairs")
        chosen = torch.arange(n, device=batch.rewards.device) % 2 == 0
        r = batch.rewards.view(-1, 2)
        extras = {f"{self.name}/demo_reward": r[:, 0].mean().item(), f"{self.name}/sample_reward": r[:, 1].mean().item()}
        return per_token(torch.where(chosen, 1.0, -1.0), batch.response_mask), extras
