"""Token ids of (prompt, completion) records, as SFT, the PPO-ptx term and the reward-model reward read them."""

from __future__ import annotations

import torch


def encode_sft(tok, records, device="cpu"):
    """(input_ids, attention_mask, response_mask, T): left-padded prompts + completions + EOS."""
    enc = tok([r["prompt"] for r in records], return_tensors="pt", padding=True, add_special_tokens=False)
    comps = [tok(r["completion"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for r in records]
    T = max(len(c) for c in comps)
    comp = torch.full((len(records), T), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros(len(records), T, dtype=torch.bool)
    for i, c in enumerate(comps):
        comp[i, : len(c)] = torch.tensor(c)
        mask[i, : len(c)] = True
    ids = torch.cat([enc["input_ids"], comp], 1).to(device)
    am = torch.cat([enc["attention_mask"], mask.long()], 1).to(device)
    return ids, am, mask.to(device), T


def encode_episodes(tok, prompts: list[str], demos: list[list[tuple[str, bool, bool]]], device="cpu"):
    """(input_ids, attention_mask, loss mask, T) of demonstration episodes, laid out as a multi-turn rollout
    (rlx/rollout/episodes.py): left-padded prompt, then each segment's tokens in order, a policy turn followed
    by EOS; the loss mask is True on the trained turns' tokens and their EOS."""
    rows = []
    for demo in demos:
        ids, mask = [], []
        for text, is_policy, trained in demo:
            seg = tok(text, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if is_policy else [])
            ids += seg
            mask += [trained] * len(seg)
        rows.append((ids, mask))
    T = max(len(r[0]) for r in rows)
    comp = torch.full((len(rows), T), tok.pad_token_id, dtype=torch.long)
    loss_mask = torch.zeros(len(rows), T, dtype=torch.bool)
    am_r = torch.zeros(len(rows), T, dtype=torch.long)
    for i, (ids, mask) in enumerate(rows):
        comp[i, :len(ids)] = torch.tensor(ids)
        loss_mask[i, :len(ids)] = torch.tensor(mask)
        am_r[i, :len(ids)] = 1
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    ids = torch.cat([enc["input_ids"], comp], 1).to(device)
    am = torch.cat([enc["attention_mask"], am_r], 1).to(device)
    return ids, am, loss_mask.to(device), T
