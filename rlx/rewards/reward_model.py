"""A learned reward model as a reward term (``reward=rm reward.path=<dir>``): the scalar head of a
model saved by ``algo=rm`` read at the EOS of prompt + completion, the same encoding it was trained
on (``encode_sft``: left-padded prompt, completion, EOS). ``normalize`` subtracts the mean and divides
by the std of its scores on the held-out responses, recorded when it was saved, so that the KL
coefficient β means the same thing whatever offset the Bradley–Terry loss left (it is shift-invariant).
"""

from __future__ import annotations

import json

import torch

from rlx.models.value_head import INFO_FILE, load_value_model, resolve_dir
from rlx.registry import REWARDS


@REWARDS.register("reward_model")
def build_reward_model(cfg):
    from rlx.models.encode import encode_sft

    if not cfg.get("path"):
        raise ValueError("reward=rm needs reward.path=<dir>: a run dir of algo=rm (or its model/ subdir)")
    model, tok = load_value_model(cfg.path)
    device = torch.device(cfg.get("device") or "cpu")
    model.to(device).eval()
    info = json.loads((resolve_dir(cfg.path) / INFO_FILE).read_text())
    shift, scale = 0.0, 1.0
    if cfg.get("normalize", False):
        shift, scale = float(info.get("score_mean", 0.0)), max(float(info.get("score_std", 1.0)), 1e-6)
    batch = int(cfg.get("batch_size", 64))

    @torch.no_grad()
    def reward_model(prompts, completions, **fields) -> list[float]:
        """(r_θ(x, y) − shift) / scale for each (prompt, completion)."""
        out = []
        for i in range(0, len(completions), batch):
            recs = [{"prompt": p, "completion": c} for p, c in zip(prompts[i:i + batch], completions[i:i + batch])]
            ids, am, _, T = encode_sft(tok, recs, device)
            out += ((model.score(ids, am, T) - shift) / scale).tolist()
        return out

    return reward_model
