"""A scalar head on a causal-LM backbone: the reward model and the PPO critic are the same class.

``ValueModel`` = the backbone of a causal LM (``lm.base_model``: embeddings + decoder, no LM head)
and ``v_head`` = Linear(hidden, 1), one scalar per position (TRL's ``AutoModelForCausalLMWithValueHead``,
OpenRLHF's ``get_llm_for_sequence_regression``; docs/algorithm_notes.md §2.1 "Critic architecture", §3.3).

- Critic: V(s_t) for the state before response token t is the head's output at the position that
  predicts token t, the same alignment as the policy's log-probs (``logits[:, :-1]``; OpenRLHF slices
  values ``[:, :-1]`` then the last T, docs/algorithm_notes.md §3.3).
- Reward model: the score of (prompt x, response y) is the head's output at the last attended token,
  i.e. at the EOS (InstructGPT arXiv:2203.02155 §3.5; docs/algorithm_notes.md §2.3). Optionally
  (``likelihood_weight``, a learned scalar w initialised to that value) plus the length-normalised
  log-likelihood of y under the backbone's own LM head, SimPO's implicit reward (Meng et al. 2024,
  arXiv:2405.14734 eq. 4):

      r(x, y) = v·h_EOS + b + w · (1/|y|) Σ_t log π_φ(y_t | x, y_<t)

  The LM head is trained with the rest by the ranking loss. Why it exists: whether "85" answers
  "37+48=" is a comparison of the response token with the backbone's own next-token prediction,
  which the LM head computes in one dot product but a head on h_EOS has to learn from scratch; on
  the embedded task the plain head stays at the "concise beats rambling" plateau (docs/rlhf.md).

Saved as a directory that loads through the same ``from_pretrained`` path as any policy: the causal
LM (config, weights, LM head), the tokenizer, ``value_head.safetensors`` (head and w) and
``rlx_value_model.json``.
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
SUBDIR = "model"


class ValueModel(nn.Module):
    def __init__(self, lm, head: nn.Linear | None = None, likelihood_weight: float | None = None):
        """``lm``: a causal LM whose backbone is used (and trained); ``head``: None = a fresh zero head;
        ``likelihood_weight``: None = no likelihood term, else the initial w of it."""
        super().__init__()
        self.lm = [lm]  # for saving and the LM head; the backbone is registered below, not the whole LM
        self.backbone = lm.base_model
        self.v_head = head if head is not None else nn.Linear(lm.config.hidden_size, 1)
        if head is None:
            nn.init.zeros_(self.v_head.weight)  # V ≡ b = 0 at the start: no random value signal
            nn.init.zeros_(self.v_head.bias)
        self.lm_weight = None
        if likelihood_weight is not None:
            self.lm_head = lm.get_output_embeddings()   # tied models: the embedding matrix itself
            self.lm_weight = nn.Parameter(torch.tensor(float(likelihood_weight)))

    @property
    def config(self):
        return self.lm[0].config

    def hidden(self, input_ids, attention_mask, autocast=False) -> torch.Tensor:
        with torch.autocast(input_ids.device.type, torch.bfloat16, enabled=autocast):
            return self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                                 position_ids=position_ids_from_mask(attention_mask), use_cache=False).last_hidden_state

    def forward(self, input_ids, attention_mask, autocast=False) -> torch.Tensor:
        """Head output per position [n, L] (float32)."""
        return self.v_head(self.hidden(input_ids, attention_mask, autocast).float()).squeeze(-1)

    def score(self, input_ids, attention_mask, T: int, autocast=False) -> torch.Tensor:
        """Reward [n] of sequences whose response is the last T columns (right-padded, EOS included)."""
        h = self.hidden(input_ids, attention_mask, autocast)
        last = (attention_mask.long() * torch.arange(attention_mask.shape[1], device=attention_mask.device)).argmax(-1)
        h_last = h.gather(1, last.view(-1, 1, 1).expand(-1, 1, h.shape[-1])).squeeze(1)
        r = self.v_head(h_last.float()).squeeze(-1)
        if self.lm_weight is not None:
            from rlx.ops import logprobs_from_logits, masked_mean

            logp, _ = logprobs_from_logits(self.lm_head(h[:, -(T + 1):-1]), input_ids[:, -T:])
            r = r + self.lm_weight * masked_mean(logp, attention_mask[:, -T:].bool(), dim=-1)
        return r

    def save(self, path: str | Path, tok, **info) -> Path:
        from safetensors.torch import save_file
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.lm[0].save_pretrained(path)
        tok.save_pretrained(path)
        head = {k: v.detach().contiguous().cpu() for k, v in self.v_head.state_dict().items()}
        if self.lm_weight is not None:
            head["lm_weight"] = self.lm_weight.detach().reshape(1).cpu()
        save_file(head, path / HEAD_FILE)
        (path / INFO_FILE).write_text(json.dumps({"kind": "value_model", **info}, indent=1))
        return path


def resolve_dir(path: str | Path) -> Path:
    """A saved value model: ``path`` itself, or ``path/model`` (the ``algo=rm`` run dir works too)."""
    p = Path(path)
    for cand in (p, p / SUBDIR):
        if (cand / HEAD_FILE).exists():
            return cand
    raise FileNotFoundError(f"no reward/value model at '{path}' (expected {HEAD_FILE} in it or in "
                            f"{SUBDIR}/; train one with algo=rm)")


def load_value_model(path: str | Path, dtype: str = "float32"):
    """(ValueModel, tokenizer) from a directory written by ``ValueModel.save``."""
    from safetensors.torch import load_file

    from rlx.models import load_pretrained

    d = resolve_dir(path)
    lm, tok = load_pretrained(d, dtype)
    state = load_file(d / HEAD_FILE)
    w = state.pop("lm_weight", None)
    model = ValueModel(lm, likelihood_weight=None if w is None else float(w))
    model.v_head.load_state_dict(state)
    return model, tok


def value_model_from_policy(policy, full_state: dict | None = None) -> ValueModel:
    """A critic initialised from the policy: a deep copy of its backbone and a zero head. An FSDP2-wrapped policy
    cannot be deep-copied: pass its ``full_state`` (``Dist.full_state_dict``) and the backbone is rebuilt from the
    policy's config and loaded from it (a plain module, whole on every rank)."""
    if full_state is None:
        return ValueModel(copy.deepcopy(policy))
    from transformers import AutoModelForCausalLM

    backbone = AutoModelForCausalLM.from_config(policy.config)
    backbone.load_state_dict(full_state)
    return ValueModel(backbone.to(next(iter(full_state.values())).dtype))


def token_values(model: ValueModel, input_ids, attention_mask, T: int, autocast=False) -> torch.Tensor:
    """V(s_t) [n, T] for the state before each of the last T tokens (prompt left-padded, response right-padded)."""
    real = attention_mask.bool().any(0)
    first = int(real.nonzero()[0]) if real.any() else 0
    v = model(input_ids[:, first:], attention_mask[:, first:], autocast=autocast)
    return v[:, -(T + 1):-1]


def head_state(model: ValueModel) -> dict:
    """The parts of a value model that a checkpoint's model weights do not hold: its head (and the learned weight on
    the LM log-likelihood, when it has one), on the CPU."""
    state = {"v_head": {k: v.detach().cpu().clone() for k, v in model.v_head.state_dict().items()}}
    if model.lm_weight is not None:
        state["lm_weight"] = model.lm_weight.detach().cpu().clone()
    return state


def load_head_state(model: ValueModel, state: dict) -> None:
    """Restore what ``head_state`` saved."""
    model.v_head.load_state_dict(state["v_head"])
    if model.lm_weight is not None:
        model.lm_weight.data.copy_(state["lm_weight"])
