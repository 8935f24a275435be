"""A process reward model (PRM): ``ValueModel``'s scalar head on a causal-LM backbone, read at the end of every
reasoning step as the logit z_k of "step k is correct" (Lightman et al. 2023, arXiv:2305.20050 §2.6: the PRM
predicts each step's correctness after its last token, and one forward pass over the whole solution scores
every step). p_k = σ(z_k).

With a likelihood weight (``algo.likelihood_weight``, as algo=rm's: a learned scalar w, rlx/models/value_head.py)
the logit also reads the step's log-likelihood under the backbone's own LM head,

    z_k = v·h_{end_k} + b + w · Σ_{t ∈ step k} log π_φ(y_t | x, y_<t)       (step k: the tokens after step k−1's
                                                                           end, up to and including its own)

Why: a wrong step ("10+9=20", or "10+8=18" where the next number is 9) holds a token the warm-started LM finds
unlikely, which its LM head computes in one dot product, while the plain head at the ``;`` has to learn the
arithmetic check from scratch. Measured on the embedded task (algo=prm's preset, 300 steps): the plain head stays
at "every step is correct" (held-out step accuracy 0.82, the share of correct steps; wrong-step accuracy 0), with
w = 1 it reaches 0.99 (wrong steps: 0.97). algo=rm's likelihood term exists for the same reason
(rlx/models/value_head.py).

Where a step ends: at a token whose text holds one of the data's step delimiters (data=sums_prm: the ``;`` after a
step, the ``>`` before the answer; rlx/data/sums_prm.py). The text of a token is ``tok.decode([id])`` with special
tokens skipped, so EOS (``<|endoftext|>``) never counts as a ``>``. Causal attention makes z_k depend only on
the prompt and the tokens up to step k's end.

Encoding: the prompt tokenised alone and left-padded, then the solution's token ids right-padded (the PPO
rollout's layout, so that the reward reads the policy's own completion ids). Saved by ``ValueModel.save`` with
``head: prm`` and the delimiters in its info file, so that ``reward=prm`` splits completions the way the PRM
was trained.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from rlx.models.value_head import INFO_FILE, ValueModel, load_value_model, resolve_dir
from rlx.ops import logprobs_from_logits

HEAD = "prm"


def token_texts(tok, ids: list[int], cache: dict | None = None) -> list[str]:
    """The text of each token alone, special tokens as ''. ``cache`` (id -> text) saves decodes across calls."""
    cache = {} if cache is None else cache
    for i in ids:
        if i not in cache:
            cache[i] = tok.decode([i], skip_special_tokens=True)
    return [cache[i] for i in ids]


def step_ends(tok, ids: list[int], delimiters, cache: dict | None = None) -> list[int]:
    """Indices into ``ids`` of the tokens that end a step (their text holds a delimiter), in order."""
    return [j for j, text in enumerate(token_texts(tok, ids, cache)) if any(d in text for d in delimiters)]


def encode(tok, prompts: list[str], completions: list[list[int]], device="cpu"):
    """(input_ids, attention_mask, T): each prompt tokenised alone and left-padded (rlx's tokenizers pad on the
    left), then its completion's token ids right-padded to T columns."""
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    T = max(1, max(len(c) for c in completions))
    comp = torch.full((len(completions), T), tok.pad_token_id, dtype=torch.long)
    am = torch.zeros(len(completions), T, dtype=torch.long)
    for i, c in enumerate(completions):
        comp[i, :len(c)] = torch.tensor(c, dtype=torch.long)
        am[i, :len(c)] = 1
    ids = torch.cat([enc["input_ids"], comp], 1).to(device)
    return ids, torch.cat([enc["attention_mask"], am], 1).to(device), T


def step_logits(model: ValueModel, ids, am, T: int, ends: list[list[int]], autocast=False):
    """(z [n, S], mask [n, S]): the logit of each row's steps (their end tokens: completion column indices
    ``ends[i]``), padded to the most steps S; mask True on real steps. With a likelihood weight w (``ValueModel``'s
    ``lm_weight``) z_k also has w times the step's log-likelihood under the backbone's LM head (module docstring)."""
    h = model.hidden(ids, am, autocast)                    # [n, P+T, H]
    S = max(1, max(len(e) for e in ends))
    pos = torch.zeros(len(ends), S, dtype=torch.long)
    mask = torch.zeros(len(ends), S, dtype=torch.bool)
    for i, e in enumerate(ends):
        pos[i, :len(e)], mask[i, :len(e)] = torch.tensor(e, dtype=torch.long), True
    pos, mask = pos.to(h.device), mask.to(h.device)
    z = model.v_head(h[:, -T:].float()).squeeze(-1).gather(1, pos)   # the head at each step's end token
    if model.lm_weight is None:
        return z, mask
    h_prev = h[:, -(T + 1):-1].to(model.lm_head.weight.dtype)   # the states that predict the completion tokens
    logp, _ = logprobs_from_logits(model.lm_head(h_prev), ids[:, -T:])   # log π(y_t | ·), [n, T]
    upto = (logp * am[:, -T:]).cumsum(1).gather(1, pos)    # Σ_{t ≤ end_k} log π(y_t)
    before = torch.cat([torch.zeros_like(upto[:, :1]), upto[:, :-1]], 1)   # the same up to the previous step's end
    return z + model.lm_weight * (upto - before), mask


def save_prm(model: ValueModel, path, tok, delimiters, **info) -> Path:
    """The PRM as a ``ValueModel`` directory whose info names it (``head: prm``) and its step delimiters."""
    return model.save(path, tok, head=HEAD, step_delimiters=list(delimiters), **info)


def load_prm(path, dtype: str = "float32"):
    """(ValueModel, tokenizer, delimiters) of a PRM saved by ``algo=prm``; ValueError for another kind of model."""
    info = json.loads((resolve_dir(path) / INFO_FILE).read_text())
    if info.get("head") != HEAD:
        raise ValueError(f"reward.path={path}: not a process reward model (a model saved by algo=rm scores whole "
                         "responses); train one with algo=prm")
    model, tok = load_value_model(path, dtype)
    return model, tok, tuple(info["step_delimiters"])
