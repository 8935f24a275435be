"""Reward-model training (``algo=rm``): a scalar head on the policy's backbone, trained with the
algorithm's ranking loss on preference records, with the shared loop (eval, logging, checkpoints,
resume). One step:

  1. take B records from the data cursor: ``responses`` (K, ranked best first; ``scores`` decide
     ties) or a ``chosen``/``rejected`` pair (K = 2)
  2. score all K responses of each prompt in one forward (micro-batches of whole prompts)
  3. the algorithm's loss over all K(K−1)/2 pairs of each prompt, then one optimizer step

Held-out pairs (``data.pref_eval_set()``) give ``rm/accuracy`` and ``rm/margin``. At the end
(``trainer.save_model``, on for ``algo=rm``) the model is written to ``<run dir>/model``
(``ValueModel.save``) with the mean and std of its scores on the held-out responses, so that
``reward=rm reward.path=<run dir>`` scores with it.
"""

from __future__ import annotations

import math
import time

import torch

from rlx.models.value_head import ValueModel, head_state, load_head_state
from rlx.registry import TRAINERS
from rlx.trainers.base import Trainer


def ranked_responses(record: dict) -> tuple[list[str], list[int]]:
    """(responses, ranks) of one record; rank 0 = best, equal scores share a rank (no pair between them)."""
    if "responses" in record:
        responses = list(record["responses"])
        scores = record.get("scores")
        if scores is None:
            return responses, list(range(len(responses)))
        return responses, [sum(s > x for s in scores) for x in scores]
    return [record["chosen"], record["rejected"]], [0, 1]


def example_ids(tok, record: dict) -> tuple[list[int], list[list[int]], list[int]]:
    """(prompt ids, response ids each ending in EOS, ranks): the data's own tokenisation when it has one
    (``prompt_ids``/``response_ids``, with its length limits), else prompt and response tokenised apart
    as SFT and the ``reward_model`` reward do (``encode_sft``)."""
    responses, ranks = ranked_responses(record)
    if "prompt_ids" in record:
        return list(record["prompt_ids"]), [list(r) for r in record["response_ids"]], ranks
    prompt = tok(record["prompt"], add_special_tokens=False)["input_ids"]
    return prompt, [tok(r, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for r in responses], ranks


def encode_records(tok, records, device):
    """(input_ids, attention_mask, T, ranks [B, K], valid [B, K]): left-padded prompt + right-padded
    response (the last T columns), the K responses of a prompt in contiguous rows (a prompt with
    fewer repeats its last)."""
    items = [example_ids(tok, r) for r in records]
    K = max(len(resp) for _, resp, _ in items)
    rows = [(p, resp[min(j, len(resp) - 1)]) for p, resp, _ in items for j in range(K)]
    P, T = max(len(p) for p, _ in rows), max(len(r) for _, r in rows)
    ids = torch.full((len(rows), P + T), tok.pad_token_id, dtype=torch.long)
    am = torch.zeros(len(rows), P + T, dtype=torch.long)
    for i, (p, r) in enumerate(rows):
        ids[i, P - len(p):P], am[i, P - len(p):P] = torch.tensor(p, dtype=torch.long), 1
        ids[i, P:P + len(r)], am[i, P:P + len(r)] = torch.tensor(r, dtype=torch.long), 1
    valid = torch.tensor([[j < len(resp) for j in range(K)] for _, resp, _ in items])
    ranks = torch.tensor([rk + [len(rk)] * (K - len(rk)) for _, _, rk in items])
    return ids.to(device), am.to(device), T, ranks.to(device), valid.to(device)


class RMTrainer(Trainer):
    def setup(self) -> None:
        if hasattr(self.data, "prepare"):   # data sets that tokenise (and length-limit) their rows themselves
            self.data.prepare(self.tok)
        w = self.algo.likelihood_weight
        self.rm = ValueModel(self.model, likelihood_weight=w if w else None).to(self.device).train()
        self.last_eval: dict = {}

    def trainable_parameters(self):
        return [p for p in self.rm.parameters() if p.requires_grad]

    def scores(self, records) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ids, am, T, ranks, valid = encode_records(self.tok, records, self.device)
        s = self.rm.score(ids, am, T, autocast=self.autocast)
        return s.view(ranks.shape), ranks, valid

    def train_step(self) -> dict:
        t0 = time.perf_counter()
        B = self.cfg.data.prompts_per_step
        records = self.data.train_batch(self.cursor, B)
        self.cursor += B
        K = len(ranked_responses(records[0])[0])
        micro = max(1, (self.cfg.trainer.micro_batch_size or B * K) // K)   # whole prompts per forward
        metrics, total = {}, 0.0
        for i in range(0, B, micro):
            chunk = records[i:i + micro]
            loss, m = self.algo.loss(*self.scores(chunk))
            (loss * len(chunk) / B).backward()
            total += float(loss.detach()) * len(chunk) / B
            for k in ("rm/accuracy", "rm/margin"):
                metrics[k] = metrics.get(k, 0.0) + float(m[k]) * len(chunk) / B
        clip = self.cfg.trainer.grad_clip or math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.trainable_parameters(), clip))
        if self.guard(loss=total, grad_norm=grad_norm):
            self.optim.step()
        self.optim.zero_grad(set_to_none=True)
        self.sched.step()
        out = {f"rm/train_{k[3:]}": v for k, v in metrics.items() if k.startswith("rm/")}
        out.update({"loss/total": total, "optim/grad_norm": grad_norm, "optim/lr": self.sched.get_last_lr()[0],
                    "perf/step_s": time.perf_counter() - t0})
        return out

    @torch.no_grad()
    def evaluate(self) -> dict:
        records = self.data.pref_eval_set() if hasattr(self.data, "pref_eval_set") else []
        if not records:
            return {}
        self.rm.eval()
        n = correct = margin = 0.0
        all_scores = []
        for i in range(0, len(records), 64):
            scores, ranks, valid = self.scores(records[i:i + 64])
            m = self.algo.loss(scores, ranks, valid)[1]
            n += m["rm/pairs"]
            correct += m["rm/accuracy"] * m["rm/pairs"]
            margin += m["rm/margin"] * m["rm/pairs"]
            all_scores.append(scores[valid])
        self.rm.train()
        s = torch.cat(all_scores)
        self.score_stats = {"score_mean": s.mean().item(), "score_std": s.std().item() if s.numel() > 1 else 1.0}
        self.last_eval = {"rm/accuracy": correct / max(n, 1), "rm/margin": margin / max(n, 1)}
        return dict(self.last_eval)

    # ------------------------------------------------------------------ checkpoints and the saved model
    def extra_state(self) -> dict:   # the backbone (and LM head) are in the checkpoint's model weights
        return head_state(self.rm)

    def load_extra_state(self, state: dict) -> None:
        load_head_state(self.rm, state)

    def summary(self, wall_s, resumed_from, last) -> dict:
        out = super().summary(wall_s, resumed_from, last)
        out["final"].update(self.last_eval)
        return out

    def export(self, path):
        """The reward model (``ValueModel.save``) with its held-out accuracy and score statistics."""
        stats = getattr(self, "score_stats", {"score_mean": 0.0, "score_std": 1.0})
        return self.rm.save(path, self.tok, step=self.step, accuracy=self.last_eval.get("rm/accuracy"), **stats)


@TRAINERS.register("rm")
def build_rm_trainer(cfg, run_dir, **kw) -> RMTrainer:
    return RMTrainer(cfg, run_dir, **kw)
