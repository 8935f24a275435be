"""Process reward model training (``algo=prm``): the scalar head of ``ValueModel`` on the policy's backbone, read at
the end token of every reasoning step and trained with the algorithm's step classification loss, with the shared
loop (eval, logging, checkpoints, resume). One step:

  1. take B step-labelled solutions from the data cursor (``prompt``, ``completion``, ``labels``)
  2. tokenise prompt and solution apart (rlx/models/prm_head.py) and find each step's end token: the k-th token
     holding a data delimiter ends step k (a solution whose count differs from its labels' is an error)
  3. one forward per micro-batch; the loss over the labelled steps, weighted so the step's gradient is the mean
     over all of the batch's labelled steps whatever the micro-batch size; one optimizer step

Held-out solutions (``data.step_eval_set()``) give ``eval/<data>/step_accuracy`` and
``eval/<data>/wrong_step_accuracy``. At the end (``trainer.save_model``, on for ``algo=prm``) the model is written
to ``<run dir>/model`` (``save_prm``) with its delimiters and held-out step accuracy, so that ``reward=prm
reward.path=<run dir>`` scores with it.
"""

from __future__ import annotations

import math
import time

import torch

from rlx.models.prm_head import encode, save_prm, step_ends, step_logits
from rlx.models.value_head import ValueModel, head_state, load_head_state
from rlx.registry import TRAINERS
from rlx.trainers.base import Trainer


def step_labels(records, S: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels [n, S] float, label_mask [n, S] bool) of records' ``labels`` (1, 0 or None = unlabelled)."""
    labels = torch.zeros(len(records), S)
    mask = torch.zeros(len(records), S, dtype=torch.bool)
    for i, r in enumerate(records):
        for k, y in enumerate(r["labels"]):
            if y is not None:
                labels[i, k], mask[i, k] = float(y), True
    return labels.to(device), mask.to(device)


class PRMTrainer(Trainer):
    def setup(self) -> None:
        w = self.algo.likelihood_weight
        self.prm = ValueModel(self.model, likelihood_weight=w if w else None).to(self.device).train()
        self.delimiters = tuple(self.data.delimiters)
        self.last_eval: dict = {}
        self._texts: dict = {}   # token id -> its text (step_ends)

    def trainable_parameters(self):
        return [p for p in self.prm.parameters() if p.requires_grad]

    def step_logits(self, records):
        """(z [n, S], labels [n, S], label_mask [n, S]) of a list of records (steps 2-3)."""
        comps = [self.tok(r["completion"], add_special_tokens=False)["input_ids"] for r in records]
        ends = [step_ends(self.tok, c, self.delimiters, self._texts) for c in comps]
        for r, e in zip(records, ends):
            if len(e) != len(r["labels"]):
                where = r.get("where", f"record {r.get('id')}")
                raise ValueError(f"{where}: {len(e)} step ends ({', '.join(map(repr, self.delimiters))}) in its "
                                 f"tokens for {len(r['labels'])} step labels: {r['completion']!r}")
        ids, am, T = encode(self.tok, [r["prompt"] for r in records], comps, self.device)
        z, _ = step_logits(self.prm, ids, am, T, ends, autocast=self.autocast)
        return (z, *step_labels(records, z.shape[1], self.device))

    def train_step(self) -> dict:
        t0 = time.perf_counter()
        B = self.cfg.data.prompts_per_step
        records = self.data.train_batch(self.cursor, B)
        self.cursor += B
        n_all = max(1, sum(y is not None for r in records for y in r["labels"]))
        micro = self.cfg.trainer.micro_batch_size or B
        total, counts = 0.0, {"right": 0.0, "steps": 0.0, "wrong_right": 0.0, "wrong": 0.0}
        for i in range(0, B, micro):
            loss, m = self.algo.loss(*self.step_logits(records[i:i + micro]))
            share = m["prm/steps"] / n_all   # this chunk's labelled steps among the batch's
            (loss * share).backward()
            total += float(loss.detach()) * share
            _count(counts, m)
        clip = self.cfg.trainer.grad_clip or math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.trainable_parameters(), clip))
        if self.guard(loss=total, grad_norm=grad_norm):
            self.optim.step()
        self.optim.zero_grad(set_to_none=True)
        self.sched.step()
        return {"prm/step_accuracy": counts["right"] / max(counts["steps"], 1),
                "prm/wrong_step_accuracy": counts["wrong_right"] / max(counts["wrong"], 1),
                "loss/total": total, "optim/grad_norm": grad_norm, "optim/lr": self.sched.get_last_lr()[0],
                "perf/step_s": time.perf_counter() - t0}

    @torch.no_grad()
    def evaluate(self) -> dict:
        records = self.data.step_eval_set()
        if not records:
            return {}
        self.prm.eval()
        counts = {"right": 0.0, "steps": 0.0, "wrong_right": 0.0, "wrong": 0.0}
        for i in range(0, len(records), 64):
            _count(counts, self.algo.loss(*self.step_logits(records[i:i + 64]))[1])
        self.prm.train()
        name = self.cfg.data.name
        self.last_eval = {f"eval/{name}/step_accuracy": counts["right"] / max(counts["steps"], 1),
                          f"eval/{name}/wrong_step_accuracy": counts["wrong_right"] / max(counts["wrong"], 1)}
        return dict(self.last_eval)

    # ------------------------------------------------------------------ checkpoints and the saved model
    def extra_state(self) -> dict:   # the backbone (and LM head) are in the checkpoint's model weights
        return head_state(self.prm)

    def load_extra_state(self, state: dict) -> None:
        load_head_state(self.prm, state)

    def export(self, path):
        """The PRM (``save_prm``) with its delimiters and held-out step accuracy."""
        acc = next((v for k, v in self.last_eval.items() if k.endswith("/step_accuracy")), None)
        return save_prm(self.prm, path, self.tok, self.delimiters, step=self.step, step_accuracy=acc)


def _count(counts: dict, m: dict) -> None:
    """Add a loss call's metrics to running counts (accuracies times their step counts)."""
    counts["right"] += m["prm/step_accuracy"] * m["prm/steps"]
    counts["steps"] += m["prm/steps"]
    counts["wrong_right"] += m["prm/wrong_step_accuracy"] * m["prm/wrong_steps"]
    counts["wrong"] += m["prm/wrong_steps"]


@TRAINERS.register("prm")
def build_prm_trainer(cfg, run_dir, **kw) -> PRMTrainer:
    return PRMTrainer(cfg, run_dir, **kw)
