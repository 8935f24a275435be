"""The reference model's hard update, π_ref ← π_θ, for the algorithms that ask for it (``refresh_reference(step)``:
iterative DPO with a refreshed reference, the hard update of TR-DPO, Gorbatovski et al. 2024, arXiv:2404.09656).

The online loop calls ``maybe_refresh`` first in a step (step 0), so a step that made no update (no pair, a skipped
non-finite step) does not delay the refresh. A refreshed reference is no longer the initial model, so its weights go
into the checkpoint (``state``, ``load``) and a resumed run goes on with the same reference. One process, or ranks
that hold the whole model (ddp): the copy is ``model.state_dict()``.
"""

from __future__ import annotations

import torch


def refreshable(ref) -> str | None:
    """Why ``ref`` cannot take the policy's weights, or None: a LoRA reference is the policy itself with the adapter
    switched off (rlx.models.AdapterDisabledReference), so there is no separate copy to overwrite."""
    if not isinstance(ref, torch.nn.Module):
        return f"the reference is a {type(ref).__name__} (a LoRA policy with its adapter off), not a separate copy"
    return None


@torch.no_grad()
def refresh(ref: torch.nn.Module, model: torch.nn.Module) -> None:
    """Copy the policy's weights into the frozen reference. ``load_state_dict`` copies in place, casts to the
    reference's dtypes (bf16 linear layers under autocast: speed.bf16_linear_reference) and keeps it frozen."""
    why = refreshable(ref)
    if why is not None:
        raise ValueError(f"cannot refresh the reference model: {why}")
    ref.load_state_dict(model.state_dict())


def maybe_refresh(trainer) -> None:
    """π_ref ← π_θ when ``trainer.algo.refresh_reference(trainer.step)``; marks the trainer's reference refreshed."""
    if trainer.ref is not None and trainer.algo.refresh_reference(trainer.step):
        refresh(trainer.ref, trainer.model)
        trainer.ref_refreshed = True


def state(trainer) -> dict:
    """{"ref": its weights on the CPU} once the reference was refreshed, else {} (it is the initial model)."""
    if not getattr(trainer, "ref_refreshed", False):
        return {}
    return {"ref": {k: v.detach().cpu().clone() for k, v in trainer.ref.state_dict().items()}}


def load(trainer, state: dict) -> None:
    """The reference of a checkpoint whose ``state`` holds one (``state``)."""
    if "ref" in state:
        trainer.ref.load_state_dict(state["ref"])
        trainer.ref_refreshed = True
