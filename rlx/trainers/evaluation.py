"""Held-out evaluation of a trainer's policy: greedy accuracy over the samples the reward can score, the count
of those it cannot, and with ``data.eval_k`` = k > 0 pass@k and maj@k of k samples."""

from __future__ import annotations

import math

import torch

from rlx.rewards.vote import maj_at_k, pass_at_k


@torch.no_grad()
def evaluate(trainer) -> dict:
    """eval/<data>/accuracy (greedy) over the samples the reward could score, eval/<data>/failures the count of
    those it could not (NaN or a failed term); with data.eval_k = k > 0 pass@k and maj@k of k samples
    (unscorable = wrong there)."""
    records = trainer.data.eval_set()
    if not records:
        return {}
    name, k = trainer.data.name, int(trainer.cfg.data.get("eval_k", 0) or 0)
    scores, _ = eval_samples(trainer, records, 1, greedy=True)
    scored = [s for s in scores if math.isfinite(s)]
    out = {f"eval/{name}/accuracy": sum(scored) / len(scored) if scored else math.nan,
           f"eval/{name}/failures": float(len(scores) - len(scored))}
    if k > 0:
        scores, answers = eval_samples(trainer, records, k, greedy=False)
        scores = [s if math.isfinite(s) else 0.0 for s in scores]
        out[f"eval/{name}/pass@{k}"] = pass_at_k(scores, k)
        if answers is not None:
            out[f"eval/{name}/maj@{k}"] = maj_at_k(answers, scores, k)
    return out


def eval_samples(trainer, records: list[dict], n: int, greedy: bool):
    """Score-term values [len·n] (unscorable = NaN) and the reward's answers (None if it has no extractor)."""
    scores, answers, size = [], [], max(1, 512 // n)
    for i in range(0, len(records), size):
        chunk = records[i:i + size]
        out = trainer.sample(chunk, n=n, greedy=greedy)
        prompts = [r["prompt"] for r in chunk for _ in range(n)]
        scored = trainer.reward.score(prompts, out.texts, **trainer.reward_fields(chunk, out, n))
        scores += [s if math.isfinite(s) else math.nan for s in scored["score"]]
        if n > 1 and trainer.reward.can_extract:
            answers += trainer.reward.answers(out.texts)
    return scores, (answers if n > 1 and trainer.reward.can_extract else None)


def completion_ids(out) -> list[list[int]]:
    """The scored completion's token ids per sample: the response up to and including EOS, or with episodes the
    final turn's tokens."""
    if out.turn is None:
        lens = out.response_mask.sum(-1).tolist()
        return [row[:m] for row, m in zip(out.completion_ids.tolist(), lens)]
    last = (out.turn == out.turn.max(-1, keepdim=True).values) & out.response_mask
    return [row[sel].tolist() for row, sel in zip(out.completion_ids, last)]


def reward_fields(algo, reward, records: list[dict], out, n: int, train: bool = False) -> dict:
    """Keyword fields of a reward call on ``out`` (n samples per record, contiguous): the records' fields but the
    prompt, and ``completion_ids`` (as TRL passes them). A label-free algorithm's training call gets no data
    fields, only its pseudo-labels."""
    fields = {"completion_ids": completion_ids(out)}
    if train and algo.label_free:
        labels = algo.pseudo_labels(reward.answers(out.texts), n)
        return fields if labels is None else {**fields, "answer": labels}
    keys = dict.fromkeys(k for r in records for k in r if k != "prompt")
    return {**fields, **{k: [r.get(k) for r in records for _ in range(n)] for k in keys}}
