"""EEPO — Exploration-Enhanced Policy Optimization via Sample-Then-Forget (Chen et al., ICLR 2026,
arXiv:2510.05837; code github.com/ChanLiang/EEPO).

GRPO's objective is unchanged; the rollout is not. Each prompt's G samples come in two halves, and between
them the rollout model briefly *forgets* what the first half sampled, so that the second half explores away
from the dominant mode instead of drawing it again:

    O₁ ~ π_θ(·|q)                          G/2 samples per prompt
    H_t = mean entropy of π_θ over O₁'s response tokens (as ``policy/entropy``);  H̄_t = mean(H_{t−m+1..t})
    θ' = θ − η ∇_θ L_forget(O₁)   if H̄_t < α   (entropy gate; one plain SGD step, no momentum)
    θ' = θ                        otherwise
        L_forget(O₁) = 1/|O₁| Σ_k 1/|o_k| Σ_t −log(1 − min(π_θ(o_k,t|q, o_k,<t), 1 − ε))
    O₂ ~ π_θ'(·|q)                         G/2 samples per prompt; then θ' is dropped (θ restored bit for bit)
    A_i, L: GRPO's over the G = |O₁ ∪ O₂| samples of each prompt (the old log-probs are the restored π_θ's)

Why −log(1 − p): its gradient on the sampled token's logit is p, so the step pushes down hardest where the
policy is most certain, the mode that GRPO's positive advantages would otherwise reinforce again, and barely
touches tokens it was unsure of (gradient ascent on the NLL, the usual unlearning step, pushes with 1 − p: the
other way round). ε only keeps the value finite (p = 1 → log 0); its value is rlx's. m, α, η and the G/2 split
are the paper's knobs (conf/algo/eepo.yaml says which values are confirmed and which are rlx's).

How the loop does it: ``sample_completions`` (rlx/algos/base.py) runs the schedule with the loop's
``Sampler`` (rlx/rollout/base.py): the first half; one forward with gradient over it (its entropies, and
the loss); when the gate fires, a backward, a copy of the trainable parameters, p −= η·∇p in place, the
second half, and the copy written back. The trainer's optimizer is never touched and every ``.grad`` is left
as it was found, so the update that follows is GRPO's on the merged G samples (each prompt's first half
then its second half, ``merge_rollouts``). The step draws no random numbers besides the two generations, so
a run is deterministic per seed and resumes exactly; the last m − 1 entropies of the gate's window are
part of the algorithm's ``state_dict``. Under ``rollout.is_correction=tis`` the second half's engine
log-probs are the forgetting model's, so its tokens are weighted by min(π_old/π_θ', C). Only the hf engine
samples from the live parameters (``check_config``); with a multi-turn env the loop samples episodes
instead (``sample_episodes``), where EEPO's rollout is GRPO's. Metrics, per step: ``eepo/unlearned`` (1.0
when the gate fired), ``eepo/entropy_first_half`` (H_t), ``eepo/entropy_gate`` (H̄_t) and
``eepo/forget_loss`` (L_forget at θ).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch

from rlx.algos.base import check
from rlx.algos.grpo import GRPO
from rlx.models.logprobs import token_logprobs
from rlx.ops import masked_mean
from rlx.registry import ALGOS
from rlx.rollout.base import merge_rollouts

#: ε of p_clip = min(p, 1 − ε): keeps −log(1 − p) finite (≤ −log 1e-6 = 13.8). A float32 log-softmax of logits
#: of magnitude ~10 is only good to about 1e-6, so the clip binds only where 1 − p is rounding noise anyway
P_CLIP_EPS = 1e-6


def forget_loss(logp: torch.Tensor, response_mask: torch.Tensor, eps: float = P_CLIP_EPS) -> torch.Tensor:
    """L = 1/|rows| Σ_k 1/|o_k| Σ_t −log(1 − min(p_k,t, 1 − ε)) for token log-probs [n, T] of the sampled tokens
    (rows with no valid token are left out; 0 when none has one).

    p = 0.9 → −log 0.1 = 2.3026; p = 0.5 → log 2 = 0.6931; a row [0.9, 0.5] → 1.4979. The gradient on log p is
    p/(1 − p) (9 at p = 0.9, 1 at p = 0.5): descending it lowers the sampled tokens' probability, the surest most.
    """
    log_p = logp.clamp(max=math.log1p(-eps))
    per_token = -torch.log(-torch.expm1(log_p))   # −log(1 − p), exact near p = 1
    rows = response_mask.any(-1)
    per_row = masked_mean(per_token, response_mask, dim=-1)
    return per_row[rows].mean() if rows.any() else per_row.sum() * 0.0


def entropy_gate(window: list[float], threshold: float) -> bool:
    """Whether to forget this step: the mean of the window's entropies (this step's last) is below α."""
    return sum(window) / len(window) < threshold


class EntropyWindow:
    """The last m first-half entropies H_t, oldest first (fewer at the start of a run); round-trips through
    ``state_dict`` so that a resumed run gates as the uninterrupted one."""

    def __init__(self, m: int):
        self.m, self.values = int(m), []

    def push(self, h: float) -> list[float]:
        self.values = [*self.values, float(h)][-self.m:]
        return list(self.values)

    def state_dict(self) -> dict:
        return {"values": list(self.values)}

    def load_state_dict(self, state: dict) -> None:
        self.values = [float(v) for v in state["values"]][-self.m:]


def _trainable(model) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def _gradients(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> list[torch.Tensor | None]:
    """∇loss for each parameter, leaving every ``.grad`` as it was found (a backward, as the trainer's, rather
    than ``torch.autograd.grad``, so that a wrapper which reduces gradients in backward hooks, FSDP2, sees it as it
    sees the trainer's; not tried under FSDP)."""
    held = [p.grad for p in params]
    for p in params:
        p.grad = None
    try:
        loss.backward()
        return [p.grad for p in params]
    finally:
        for p, g in zip(params, held):
            p.grad = g


@contextlib.contextmanager
def sgd_step(params: list[torch.nn.Parameter], grads: list[torch.Tensor | None], lr: float):
    """Within the block p = p − lr·g (one plain SGD step, in place); after it the parameters are restored from
    a copy, bit for bit, whatever happened inside."""
    saved = [p.detach().clone() for p in params]
    try:
        with torch.no_grad():
            for p, g in zip(params, grads):
                if g is not None:
                    p.sub_(g.to(p.dtype), alpha=lr)
        yield
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)


@ALGOS.register("eepo")
@dataclass(frozen=True, kw_only=True)
class EEPO(GRPO):
    entropy_threshold: float   # α: forget when the window's mean first-half entropy (nats) is below it
    entropy_window: int        # m: steps in that mean
    unlearn_lr: float          # η: the SGD step of the forgetting update
    window: EntropyWindow = field(init=False, repr=False, compare=False)
    shards_rollouts = False   # the gate's entropy and the forgetting step read the whole round

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.group_size % 2 == 0, f"algo.group_size={self.group_size}: eepo samples G/2 per prompt before the "
                                        f"forgetting step and G/2 after it, so G must be even")
        check(self.entropy_threshold >= 0, f"algo.entropy_threshold={self.entropy_threshold}: must be >= 0 (α in "
                                           f"nats; 0 = never forget, GRPO's rollout in two calls)")
        check(isinstance(self.entropy_window, int) and self.entropy_window >= 1,
              f"algo.entropy_window={self.entropy_window}: must be an integer >= 1 (m, steps in the gate's mean; "
              f"1 = this step's entropy alone)")
        check(self.unlearn_lr >= 0, f"algo.unlearn_lr={self.unlearn_lr}: must be >= 0 (η of the forgetting "
                                    f"step; 0 = no change)")
        object.__setattr__(self, "window", EntropyWindow(self.entropy_window))

    def check_config(self, cfg) -> None:
        super().check_config(cfg)
        engine = cfg.rollout.engine
        check(engine == "hf", f"rollout.engine={engine}: algo=eepo changes the policy's parameters between the two "
                              f"halves of a step's samples, and only rollout.engine=hf samples from them (vllm holds "
                              f"its own copy of the weights)")

    def sample_completions(self, sampler, records: list[dict], group_size: int):
        half = group_size // 2
        first = sampler.generate(records, half)
        model = sampler.model
        ids = torch.cat([first.prompt_ids, first.completion_ids], 1)
        am = torch.cat([first.prompt_mask, first.response_mask.long()], 1)
        with torch.enable_grad():
            logp, ent = token_logprobs(model, ids, am, first.completion_ids.shape[1], with_entropy=True,
                                       autocast=sampler.autocast)
            loss = forget_loss(logp, first.response_mask)
        h, loss_value = masked_mean(ent.detach(), first.response_mask).item(), loss.item()
        window = self.window.push(h)
        fire = entropy_gate(window, float(self.entropy_threshold))
        if fire:
            params = _trainable(model)
            with sgd_step(params, _gradients(loss, params), float(self.unlearn_lr)):
                second = sampler.generate(records, half)
        else:
            del loss, logp, ent   # no step: the graph goes before the second half is generated
            second = sampler.generate(records, half)
        out = merge_rollouts(first, second, len(records), sampler.pad_id)
        out.extra_metrics = {"eepo/unlearned": float(fire), "eepo/entropy_first_half": h,
                               "eepo/entropy_gate": sum(window) / len(window), "eepo/forget_loss": loss_value}
        return out

    def state_dict(self) -> dict:
        return {**super().state_dict(), "entropy_window": self.window.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if "entropy_window" in state:
            self.window.load_state_dict(state["entropy_window"])
