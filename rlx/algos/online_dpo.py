"""Online and iterative DPO: DPO's loss on pairs that the policy samples itself and the reward labels, every step.

Online DPO (Guo et al. 2024, "Direct Language Model Alignment from Online AI Feedback", arXiv:2402.04792, OAIF):
"on each training iteration, we sample two responses from the current model" and an annotator says which is
preferred; a direct-alignment loss (DPO, IPO, SLiC) trains on that fresh pair. No reward model is trained and there
is no critic. Here the annotator is the run's reward, and of G ≥ 2 samples per prompt the best and the worst form
the pair (best-of-n against worst-of-n, the pairs of iterative DPO: Xiong et al. 2024, arXiv:2312.11456; Dong et al.
2024, "RLHF Workflow", arXiv:2405.07863, n = 8). The loss is DPO's (Rafailov et al. 2023, arXiv:2305.18290 eq. 7;
``rlx.algos.dpo.dpo_loss``) on sequence log-probs:

    y_w = argmax_i r_i,   y_l = argmin_i r_i          (the first one where several tie for the extreme)
    h   = [log π_θ(y_w|x) − log π_ref(y_w|x)] − [log π_θ(y_l|x) − log π_ref(y_l|x)]      (sums over response tokens)
    L   = −log σ(β·h),  averaged over the prompts that have a pair

A prompt whose best and worst rewards are equal has no pair: it is left out (``keep``) and counted
(``online_dpo/no_pair_frac``); a step where no prompt has one makes no update (the loop's empty-batch path, which
logs ``groups/kept_frac`` = 0). At π_θ = π_ref, h = 0 and L = log 2.

Iterative DPO as Xiong et al. and Dong et al. run it regenerates the pairs with the latest policy once per
iteration (a few iterations) and keeps the initial model as the reference; online DPO regenerates them every step,
which is what this loop does. ``ref_update_every`` = N > 0 also moves the reference: π_ref ← π_θ every N steps (the
hard update of TR-DPO, Gorbatovski et al. 2024, arXiv:2404.09656); the loop does it at the start of the steps that
``refresh_reference(step)`` names (rlx/trainers/reference.py).

Layout in the online loop: ``keep_samples`` keeps two rows per prompt with a pair, in their sampling order, so
rows 2k and 2k+1 of the batch are one prompt's pair; ``advantages`` marks y_w with +1 and y_l with −1 on every
token (``adv/*`` log these labels). The loss needs both rows of a pair in one micro-batch: the step's pairs are
one mini-batch (``trainer.mini_batch_size`` null or ≥ 2·B) and micro-batches hold whole pairs (an even
``trainer.micro_batch_size``), which ``check_config`` asks for; the loss refuses a micro-batch that splits a pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlx.algos.base import PolicyAlgorithm, check
from rlx.algos.dpo import dpo_loss
from rlx.algos.preference import pref_metrics
from rlx.algos.reinforce import per_token
from rlx.ops import kl_penalty, masked_mean, masked_sum
from rlx.registry import ALGOS


def select_pairs(rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask [B, G], has_pair [B]) for rewards [B, G]: the best and the worst sample of each group (the first of
    several equal extremes); a group whose rewards are all equal has no pair and an all-False row.

    [[1, 0, 1, 0.5], [0.3, 0.3, 0.3, 0.3]] → [[T, T, F, F], [F, F, F, F]], has_pair [T, F].
    """
    has_pair = rewards.max(-1).values > rewards.min(-1).values
    mask = torch.zeros_like(rewards, dtype=torch.bool)
    mask.scatter_(-1, rewards.argmax(-1, keepdim=True), True)
    mask.scatter_(-1, rewards.argmin(-1, keepdim=True), True)
    return mask & has_pair.unsqueeze(-1), has_pair


def pair_labels(rewards: torch.Tensor) -> torch.Tensor:
    """Bool [2k]: True on y_w, for the rewards [2k] of k pairs laid out as rows (2j, 2j+1) (``select_pairs``'s
    rows in sampling order). [0, 1, 2, −1] → [F, T, T, F]."""
    if rewards.shape[0] % 2:
        raise ValueError(f"online_dpo: {rewards.shape[0]} rows are not whole pairs (keep_samples keeps two per prompt)")
    r = rewards.view(-1, 2)
    if (r[:, 0] == r[:, 1]).any():
        raise ValueError("online_dpo: a pair with equal rewards reached advantages (keep drops those groups)")
    first = r[:, 0] > r[:, 1]
    return torch.stack([first, ~first], 1).reshape(-1)


def online_dpo_loss(logp, ref_logp, response_mask, chosen, *, beta: float, num_pairs: int | None = None):
    """(loss, metrics) for token log-probs [n, T] of a micro-batch of whole pairs (rows 2j, 2j+1), ``chosen`` [n]
    True on y_w; ``num_pairs``: the pairs of the whole mini-batch, so that the micro-batch losses add up to its
    mean. Metrics: the offline family's ``pref/*`` and ``logps/*`` (``pref_metrics``) with the implicit reward
    β·(log π_θ − log π_ref), and ``policy/kl_ref``.
    """
    if logp.shape[0] % 2 or (chosen.view(-1, 2).sum(-1) != 1).any():
        raise ValueError("online_dpo: a micro-batch must hold whole pairs, one y_w and one y_l each (rows 2j, 2j+1): "
                         "trainer.mini_batch_size null, an even trainer.micro_batch_size, one process")
    seq = masked_sum(logp, response_mask, -1).view(-1, 2)
    ref = masked_sum(ref_logp, response_mask, -1).view(-1, 2)
    first = chosen.view(-1, 2)[:, 0]

    def sides(x):   # [k, 2] → (y_w column, y_l column)
        return torch.where(first, x[:, 0], x[:, 1]), torch.where(first, x[:, 1], x[:, 0])

    (lw, ll), (rw, rl) = sides(seq), sides(ref)
    loss, _ = dpo_loss(lw, ll, rw, rl, beta=beta)
    k = first.shape[0]
    loss = loss * k / (num_pairs or k)
    logps = torch.stack([lw, ll], 1)
    metrics = {"loss/policy": loss.detach(), "loss/total": loss.detach(),
               "policy/kl_ref": masked_mean(kl_penalty(logp.detach(), ref_logp, "k3"), response_mask),
               **pref_metrics(beta * (logps - torch.stack([rw, rl], 1)), logps)}
    return loss, metrics


@ALGOS.register("online_dpo")
@dataclass(frozen=True, kw_only=True)
class OnlineDPO(PolicyAlgorithm):
    beta: float
    ref_update_every: int
    takes_is_weights = False   # one log-ratio per response: no per-token term to reweight

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.beta > 0, f"algo.beta={self.beta}: must be > 0")
        check(isinstance(self.ref_update_every, int) and self.ref_update_every >= 0,
              f"algo.ref_update_every={self.ref_update_every}: must be an integer >= 0 (0 = a fixed reference)")

    @property
    def requires(self) -> frozenset[str]:
        return frozenset({"ref_logp"})

    def check_config(self, cfg) -> None:
        t, rows = cfg.trainer, 2 * cfg.data.prompts_per_step
        check(t.mini_batch_size is None or t.mini_batch_size >= rows,
              f"trainer.mini_batch_size={t.mini_batch_size}: {self.name} trains on whole pairs, so a step's pairs (at "
              f"most 2·data.prompts_per_step = {rows} rows) must be one mini-batch: null or >= {rows}")
        check(t.micro_batch_size is None or t.micro_batch_size % 2 == 0,
              f"trainer.micro_batch_size={t.micro_batch_size}: must be even (or null): a pair is two rows of one "
              "micro-batch")
        strategy = cfg.hardware.get("strategy", "none")
        check(strategy == "none", f"hardware.strategy={strategy}: {self.name} runs in one process (ranks take "
                                  "contiguous shares of the rows, which can split a pair)")

    def refresh_reference(self, step: int) -> bool:
        """True before steps N+1, 2N+1, ... (N = ``ref_update_every``): π_ref ← π_θ after every N updates."""
        n = self.ref_update_every
        return n > 0 and step > 1 and (step - 1) % n == 0

    def keep(self, rewards: torch.Tensor) -> torch.Tensor:
        """Groups with a pair (best reward above worst)."""
        return select_pairs(rewards)[1]

    def keep_samples(self, rewards: torch.Tensor):
        mask, has_pair = select_pairs(rewards)
        return mask, {f"{self.name}/no_pair_frac": 1.0 - has_pair.float().mean().item()}

    def advantages(self, batch):
        chosen = pair_labels(batch.rewards)
        r = batch.rewards.view(-1, 2)
        gap = (r.max(-1).values - r.min(-1).values).mean().item()   # r(y_w) − r(y_l), the annotator's margin
        label = torch.where(chosen, 1.0, -1.0)
        return per_token(label, batch.response_mask), {f"{self.name}/reward_gap": gap}

    def loss(self, logp, mb):
        chosen = masked_sum(mb.advantages, mb.response_mask, -1) > 0
        return online_dpo_loss(logp, mb.ref_logp, mb.response_mask, chosen, beta=float(self.beta),
                               num_pairs=mb.num_seqs // 2)
