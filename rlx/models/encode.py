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
