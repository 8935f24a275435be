"""Per-prompt random streams: the samples of a prompt depend on (seed, step, generation round, the prompt's place
in the round, the call), never on which other prompts share its batch, its process or its rank.

The online loop gives every prompt of a generation round a key (``prompt_keys``); an algorithm that calls the
sampler more than once in a round (EEPO's two halves, a retried record) gets a fresh key per call (``call_key``).
Sample j of a prompt with key k draws its uniforms u_1..u_T from its own generator seeded with mix(k, j)
(``uniforms``), and the decoding loop picks token t by inverse-CDF sampling on the warped distribution p
(rlx/rollout/sampler.py):

    y_t = min{ i : p_1 + ... + p_i > u_t · (p_1 + ... + p_V) }

which is a draw from p (u_t uniform on [0, 1)). So one process generating B prompts and two ranks generating B/2
each produce the same tokens (to the float rounding of the logits), which is what makes sharded rollouts
(``rollout.shard``, docs/distributed.md) equal a single process. The streams replace torch's global generator for
sampling only; the rest of the run (mini-batch shuffles, initialisation) still draws from it, identically on
every rank.
"""

from __future__ import annotations

import hashlib

import torch

_MASK = (1 << 63) - 1


def mix(*parts: int) -> int:
    """A 63-bit key from integers (blake2b of their decimal text): distinct inputs give unrelated keys."""
    text = "/".join(str(int(p)) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") & _MASK


def prompt_keys(seed: int, step: int, round_: int, n: int) -> list[int]:
    """Keys of the n prompts of generation round ``round_`` of ``step``, by their place in the round."""
    base = mix(seed, step, round_)
    return [mix(base, i) for i in range(n)]


def call_key(key: int, call: int) -> int:
    """The key of a prompt's ``call``-th generation in its round (0: the prompt's own key)."""
    return key if call == 0 else mix(key, call)


def uniforms(keys: list[int], n: int, length: int, device=None) -> torch.Tensor:
    """[len(keys)·n, length] float32 uniforms on [0, 1): row i·n + j from the generator seeded with mix(keys[i], j)
    (rows in the sampler's layout: a prompt's n samples contiguous)."""
    g = torch.Generator()
    rows = []
    for k in keys:
        for j in range(n):
            g.manual_seed(mix(k, j))
            rows.append(torch.rand(length, generator=g))
    return torch.stack(rows).to(device) if rows else torch.zeros(0, length, device=device)


def inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Index drawn from each row of ``probs`` [N, V] (non-negative, need not sum to 1) with the uniforms ``u`` [N]:
    the first i whose cumulative sum exceeds u·total. A zero-probability entry is never picked; a row that is not
    finite raises ``RuntimeError`` with torch.multinomial's message.

    probs [[0.5, 0, 0.5]], u 0.3 → 0; u 0.5 → 2 (0.5 is not above 0.5); u 0.7 → 2."""
    cdf = probs.float().cumsum(-1)
    if not bool(torch.isfinite(cdf[:, -1]).all()):   # as torch.multinomial: the online loop catches it (a bad step)
        raise RuntimeError("probability tensor contains either `inf`, `nan` or element < 0")
    target = (u.float() * cdf[:, -1]).unsqueeze(-1)
    idx = (cdf <= target).sum(-1)
    last = probs.shape[-1] - 1 - (probs > 0).flip(-1).int().argmax(-1)   # where u·total rounds up to the total
    return torch.minimum(idx, last)
