"""A scalar head on a causal-LM backbone: the reward model and the PPO critic are the same class.

``ValueModel`` = the backbone of a causal LM (``lm.base_model``: embeddings + decoder, no LM head)
and ``v_head`` = Linear(hidden, 1), one scalar per position (TRL's ``AutoModelForCausalLMWithValueHead``,
OpenRLHF's ``get_llm_for_sequence_regression``; algorithms.md §2.1 "Critic architecture", §3.3).

- Reward model: the score of (prompt, response) is the head's output at the last attended token,
  i.e. after the EOS (InstructGPT arXiv:2203.02155 §3.5; algorithms.md §2.3).
- Critic: V(s_t) for the state before response token t is the head's output at the position that
  predicts token t, the same alignment as the policy's log-probs (``logits[:, :-1]``; OpenRLHF slices
  values ``[:, :-1]`` then the last T, algorithms.md §3.3).

Saved as a directory that loads through the same ``from_pretrained`` path as any policy: the causal
LM (config, weights; its LM head is never used for scoring), the tokenizer, ``value_head.safetensors``
and ``rlx_value_model.json``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import nn

from rlx.ops import position_ids_from_mask

HEAD_FILE = "value_head.safetensors"
INFO_FILE = "rlx_value_model.json"
SUBDIR = "reward_model"


class ValueModel(nn.Module):
    def __init__(self, lm, head: nn.Linear | None = None):
        """``lm``: a causal LM whose backbone is used (and trained); ``head``: None = a fresh zero head."""
        super().__init__()
        self.lm = [lm]  # kept for saving (its LM head shares the trained embeddings); not a submodule
        self.backbone = lm.base_model
        hidden = lm.config.hidden_size
        self.v_head = head if head is not None else nn.Linear(hidden, 1)
        if head is None:
            nn.init.zeros_(self.v_head.weight)  # V ≡ bias = 0 at the start: no random value signal
            nn.init.zeros_(self.v_head.bias)

    @property
    def config(self):
        return self.lm[0].config

    def forward(self, input_ids, attention_mask, position_ids=None, autocast=False) -> torch.Tensor:
        """Scalar per position [n, L] (float32)."""
        if position_ids is None:
            position_ids = position_ids_from_mask(attention_mask)
        with torch.autocast(input_ids.device.type, torch.bfloat16, enabled=autocast):
            h = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                              use_cache=False).last_hidden_state
        return self.v_head(h.float()).squeeze(-1)

    def save(self, path: str | Path, tok, **info) -> Path:
        from safetensors.torch import save_file
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.lm[0].save_pretrained(path)
        tok.save_pretrained(path)
        save_file({k: v.detach().contiguous().cpu() for k, v in self.v_head.state_dict().items()}, path / HEAD_FILE)
        (path / INFO_FILE).write_text(json.dumps({"kind": "value_model", **info}, indent=1))
        return path


def resolve_dir(path: str | Path) -> Path:
    """A saved value model: ``path`` itself, or ``path/reward_model`` (the RM run dir works too)."""
    p = Path(path)
    for cand in (p, p / SUBDIR):
        if (cand / HEAD_FILE).exists():
            return cand
    raise FileNotFoundError(f"no reward/value model at '{path}' (expected {HEAD_FILE} in it or in "
                            f"{SUBDIR}/; train one with algo=rm)")


def load_value_model(path: str | Path, dtype: str = "float32"):
    """(ValueModel, tokenizer) from a directory written by ``ValueModel.save``."""
    from safetensors.torch import load_file

    from rlx.models import _load_pretrained

    d = resolve_dir(path)
    lm, tok = _load_pretrained(d, dtype)
    model = ValueModel(lm)
    model.v_head.load_state_dict(load_file(d / HEAD_FILE))
    return model, tok


def value_model_from_policy(policy) -> ValueModel:
    """A critic initialised from the policy: a deep copy of its backbone and a zero head."""
    return ValueModel(copy.deepcopy(policy))


def token_values(model: ValueModel, input_ids, attention_mask, T: int, autocast=False) -> torch.Tensor:
    """V(s_t) [n, T] for the state before each of the last T tokens (prompt left-padded, response right-padded)."""
    real = attention_mask.bool().any(0)
    first = int(real.nonzero()[0]) if real.any() else 0
    ids, am = input_ids[:, first:], attention_mask[:, first:]
    v = model(ids, am, autocast=autocast)
    return v[:, -(T + 1):-1]


def sequence_scores(model: ValueModel, input_ids, attention_mask, autocast=False) -> torch.Tensor:
    """Score [n] at the last attended token of each row (the EOS of the response)."""
    v = model(input_ids, attention_mask, autocast=autocast)
    last = (attention_mask.long() * torch.arange(attention_mask.shape[1], device=attention_mask.device)).argmax(-1)
    return v.gather(1, last.unsqueeze(1)).squeeze(1)
