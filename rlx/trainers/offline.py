"""The offline loop: every preference algorithm (DPO, IPO, SimPO, ORPO, KTO, ODPO, RRHF) runs here.

One step, numbered as in the code:
  1. take B records (``data.prompts_per_step``) from the data cursor: a prompt with K responses ranked
     best first (``responses``/``scores``; a pair is K = 2), or an unpaired prompt/completion/label
  2. lay them out as the algorithm asks (``algo.layout``): ``pairs`` — every ordered pair of a record
     is a row; ``ranked`` — the K responses of a record are one row; ``pointwise`` — each response
     with a desirable/undesirable label (unpaired rows as given; each ordered pair of a ranked record
     as chosen = desirable, rejected = undesirable, so a middle response is desirable against worse
     ones only), plus each prompt with the previous row's response when the algorithm estimates a KL
     term from mismatched pairs (``mismatched`` in ``algo.requires``)
  3. tokenise as TRL does (``rlx.data.preference.tokenize_example``: response + EOS after the prompt)
  4. reference log-probs Σ_t log π_ref, only when the algorithm requires ``ref_logp`` (
     reference-free losses load no reference model): computed once per (example id, response) and
     cached for the run (checkpointed too), so later epochs never recompute them
  5. policy log-probs (and, when the algorithm requires ``seq_kl``, each sequence's sequential KL
     Σ_t KL(π_ref(·|x, y_<t) ‖ π_θ(·|x, y_<t)) over the full vocabulary: the reference forward runs
     again here every step, since per-token distributions are too large to cache), the algorithm's
     loss on the whole batch, backward. When the batch has more sequences than
     ``trainer.micro_batch_size`` the gradient is accumulated exactly in two passes: the per-sequence
     quantities of the whole batch without gradient, dL/dlogp (and dL/dKL) from the loss on them, then
     per micro-batch a forward with gradient and the backward of Σ logp · dL/dlogp (+ Σ KL · dL/dKL)
     (the loss depends on the weights only through these per-sequence sums, and the models have no
     dropout)
  6. clip, optimizer step; metrics pref/*, logps/*, loss/*, optim/*, perf/*
Evaluation adds held-out preference accuracy on ``data.pref_eval_set()`` (always as pairs) as
``eval/<data config name>/pref_accuracy`` to the base trainer's greedy-generation accuracy. The trainer
asks the algorithm what it needs; it never branches on its name.
"""

from __future__ import annotations

import math
import time

import torch

from rlx.algos.preference import PrefBatch, ordered_pairs, pref_metrics
from rlx.data.preference import tokenize_example
from rlx.models.logprobs import token_logprobs, token_logprobs_and_kl
from rlx.ops import masked_sum
from rlx.registry import TRAINERS
from rlx.runtime import speed
from rlx.trainers.base import Trainer


def layout_rows(records: list[dict], layout: str, algo_name: str = "") -> list[tuple[int, list[int], list | None]]:
    """[(record index, response columns, labels or None)] of one batch in the algorithm's layout."""
    rows = []
    for r, rec in enumerate(records):
        K = len(rec["responses"])
        if "label" in rec:
            if layout != "pointwise":
                raise ValueError(f"algo={algo_name} needs ranked responses (prompt/chosen/rejected) but the data "
                                 "has unpaired prompt/completion/label rows; use algo=kto for those")
            rows.append((r, [0], [bool(rec["label"])]))
        elif layout == "pairs":
            rows += [(r, [i, j], None) for i, j in ordered_pairs(K)]
        elif layout == "ranked":
            rows.append((r, list(range(K)), None))
        elif layout == "pointwise":   # each ordered pair: chosen desirable, rejected undesirable
            rows += [(r, [i, j], [True, False]) for i, j in ordered_pairs(K)]
        else:
            raise ValueError(f"algorithm layout '{layout}': valid: pairs, ranked, pointwise")
    if len({len(cols) for _, cols, _ in rows}) > 1:
        raise ValueError("one batch mixes records with different numbers of responses (or paired and unpaired "
                         "rows); the offline loop needs the same K in a batch")
    return rows


def encode(seqs: list[tuple[list[int], list[int]]], pad_id: int, device):
    """(input_ids, attention_mask, response_mask, T): prompts left-padded, responses right-padded."""
    P, T = max(len(p) for p, _ in seqs), max(max(len(r) for _, r in seqs), 1)
    ids = torch.full((len(seqs), P + T), pad_id, dtype=torch.long)
    am = torch.zeros(len(seqs), P + T, dtype=torch.long)
    for i, (p, r) in enumerate(seqs):
        ids[i, P - len(p):P], ids[i, P:P + len(r)] = torch.tensor(p, dtype=torch.long), torch.tensor(r, dtype=torch.long)
        am[i, P - len(p):P + len(r)] = 1
    return ids.to(device), am.to(device), am[:, P:].bool().to(device), T


class Sequences:
    """The distinct (prompt, response) sequences of a batch, their cache keys, and where each row's
    columns (and mismatched KL partner) are among them."""

    def __init__(self):
        self.keys, self.seqs, self._pos = [], [], {}

    def add(self, key, prompt_ids, response_ids) -> int:
        if key not in self._pos:
            self._pos[key] = len(self.seqs)
            self.keys.append(key)
            self.seqs.append((prompt_ids, response_ids))
        return self._pos[key]


class OfflineTrainer(Trainer):
    def setup(self) -> None:
        # file data was tokenised and checked by the base trainer (data.prepare) before this
        self.ref_cache: dict = {}
        self.ref_sequences = 0   # sequences the reference model has scored (the cache keeps this at one per example)
        # the model whose per-token distributions the policy's sequential KL is taken from (algorithms with seq_kl)
        self.kl_ref = self.ref if "seq_kl" in self.algo.requires else None
        if "seq_kl" in self.algo.requires and self.ref is None:
            raise ValueError(f"algo={self.algo.name} requires seq_kl, a KL to the reference model, but loads none "
                             "(it must require ref_logp too)")

    def extra_state(self) -> dict:
        return {"ref_cache": self.ref_cache}

    def load_extra_state(self, state: dict) -> None:
        self.ref_cache = dict(state.get("ref_cache", {}))

    # ------------------------------------------------------------------ one step
    def train_step(self) -> dict:
        t0 = time.perf_counter()
        B = self.cfg.data.prompts_per_step
        records = self.data.train_batch(self.cursor, B)                                    # 1
        self.cursor += B
        rows = layout_rows(records, self.algo.layout, self.algo.name)                      # 2
        main, index, kl, kl_index = self.sequences("train", records, rows)                 # 3
        ref, ref_kl = self.reference(main), self.reference(kl) if kl_index is not None else None   # 4
        batch, loss, metrics = self.update(main, index, records, rows, ref, ref_kl, kl, kl_index)   # 5
        grad_norm = speed.clip_grad_norm(self.trainable_parameters(), self.cfg.trainer.grad_clip or math.inf)  # 6
        if self.guard(loss=loss, grad_norm=grad_norm):
            self.optim.step()
        self.optim.zero_grad(set_to_none=True)
        self.sched.step()
        out = {k: float(v) for k, v in metrics.items()}
        out.update(pref_metrics(self.algo.implicit_rewards(batch), batch.logps, batch.labels))
        out.update({"optim/grad_norm": grad_norm, "optim/lr": self.sched.get_last_lr()[0],
                    "perf/step_s": time.perf_counter() - t0})
        return out

    # ------------------------------------------------------------------ 3: sequences and rows
    def tokens(self, rec: dict):
        if "prompt_ids" in rec:
            return rec["prompt_ids"], rec["response_ids"]
        return tokenize_example(self.tok, rec["prompt"], rec["responses"])

    def sequences(self, split: str, records, rows, mismatched: bool = True):
        """(main Sequences, index [rows, K], mismatched Sequences, kl index [rows] or None)."""
        toks = [self.tokens(rec) for rec in records]
        ids = [rec.get("id", i) for i, rec in enumerate(records)]
        main = Sequences()
        index = torch.tensor([[main.add((split, ids[r], c), toks[r][0], toks[r][1][c]) for c in cols]
                              for r, cols, _ in rows])
        kl, kl_index = Sequences(), None
        if mismatched and "mismatched" in self.algo.requires and len(records) > 1:
            # each row's prompt with the first response of the previous record's first row: another prompt's
            # response (TRL's KTOTrainer shifts completions by one example likewise)
            first = {}
            for r, cols, _ in rows:
                first.setdefault(r, cols[0])
            partner = {r: (r - 1) % len(records) for r in first}
            kl_index = torch.tensor([kl.add((split, "kl", ids[r], ids[partner[r]], first[partner[r]]), toks[r][0],
                                            toks[partner[r]][1][first[partner[r]]]) for r, _, _ in rows])
        return main, index, kl, kl_index

    def make_batch(self, logps, n_tokens, index, records, rows, ref=None, kl=None, ref_kl=None, kl_index=None,
                   seq_kl=None):
        scores = torch.tensor([[float((records[r].get("scores") or [-i for i in range(len(records[r]["responses"]))])[c])
                                for c in cols] for r, cols, _ in rows])
        labels = torch.tensor([lab for _, _, lab in rows]) if rows[0][2] is not None else None
        take = (lambda x: x[kl_index]) if kl_index is not None else (lambda x: x.new_zeros(0))
        return PrefBatch(logps=logps[index], n_tokens=n_tokens[index], scores=scores.to(logps.device),
                         ref_logps=ref[index] if ref is not None else None,
                         labels=labels.to(logps.device) if labels is not None else None,
                         kl_logps=take(kl) if kl is not None else None,
                         ref_kl_logps=take(ref_kl) if ref_kl is not None else None,
                         seq_kl=seq_kl[index] if seq_kl is not None else None)

    # ------------------------------------------------------------------ 4 and 5: log-probs
    def seq_logps(self, model, seqs: list, kl_ref=None):
        """(Σ_t log π(y_t|·) [n], response tokens [n], Σ_t KL(kl_ref(·|x, y_<t) ‖ π(·|x, y_<t)) [n] or None
        without ``kl_ref``) in micro-batches of ``trainer.micro_batch_size``."""
        micro = self.cfg.trainer.micro_batch_size or len(seqs)
        sums, counts, kls = [], [], []
        for s in range(0, len(seqs), micro):
            ids, am, mask, T = encode(seqs[s:s + micro], self.tok.pad_token_id, self.device)
            if kl_ref is None:
                logp, _ = token_logprobs(model, ids, am, T, autocast=self.autocast)
            else:
                logp, kl = token_logprobs_and_kl(model, kl_ref, ids, am, T, autocast=self.autocast)
                kls.append(masked_sum(kl, mask, -1))
            sums.append(masked_sum(logp, mask, -1))
            counts.append(mask.sum(-1).to(logp.dtype))
        return torch.cat(sums), torch.cat(counts), torch.cat(kls) if kls else None

    @torch.no_grad()
    def reference(self, seqs: Sequences) -> torch.Tensor | None:
        """Reference log-probs of ``seqs`` from the run's cache, scoring only sequences not seen before."""
        if self.ref is None or not seqs.seqs:
            return None
        missing = [i for i, k in enumerate(seqs.keys) if k not in self.ref_cache]
        if missing:
            logps, _, _ = self.seq_logps(self.ref, [seqs.seqs[i] for i in missing])
            self.ref_cache.update({seqs.keys[i]: float(v) for i, v in zip(missing, logps.tolist())})
            self.ref_sequences += len(missing)
        return torch.tensor([self.ref_cache[k] for k in seqs.keys], device=self.device)

    def update(self, main, index, records, rows, ref, ref_kl, kl, kl_index):
        """Step 5: (batch, loss, metrics) after the backward of the algorithm's loss."""
        kl_logps = None
        if kl_index is not None:
            with torch.no_grad():
                kl_logps = self.seq_logps(self.model, kl.seqs)[0]
        micro = self.cfg.trainer.micro_batch_size or len(main.seqs)
        one_pass = len(main.seqs) <= micro
        with torch.set_grad_enabled(one_pass):
            logps, n_tokens, seq_kl = self.seq_logps(self.model, main.seqs, self.kl_ref)
        leaf = logps if one_pass else logps.detach().requires_grad_(True)
        kl_leaf = seq_kl if one_pass or seq_kl is None else seq_kl.detach().requires_grad_(True)
        batch = self.make_batch(leaf, n_tokens, index, records, rows, ref, kl_logps, ref_kl, kl_index, kl_leaf)
        loss, metrics = self.algo.loss(batch)
        loss.backward()
        if not one_pass:   # exact accumulation: d/dθ L = Σ_i dL/dlogp_i · d logp_i/dθ (+ dL/dKL_i · d KL_i/dθ)
            grad, kl_grad = leaf.grad, kl_leaf.grad if kl_leaf is not None else None
            for s in range(0, len(main.seqs), micro):
                part, _, part_kl = self.seq_logps(self.model, main.seqs[s:s + micro], self.kl_ref)
                surrogate = (part * grad[s:s + micro]).sum()
                if kl_grad is not None:
                    surrogate = surrogate + (part_kl * kl_grad[s:s + micro]).sum()
                surrogate.backward()
        return batch, float(loss.detach()), metrics

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> dict:
        out = super().evaluate()
        pairs = self.data.pref_eval_set() if hasattr(self.data, "pref_eval_set") else []
        if pairs:
            out[f"eval/{self.cfg.data.name}/pref_accuracy"] = self.pref_accuracy(pairs)
        return out

    def pref_accuracy(self, records: list[dict]) -> float:
        """Share of held-out ordered pairs whose chosen response gets the higher implicit reward (ties 1/2)."""
        rows = layout_rows(records, "pairs")
        main, index, _, _ = self.sequences("eval", records, rows, mismatched=False)
        logps, n_tokens, seq_kl = self.seq_logps(self.model, main.seqs, self.kl_ref)
        batch = self.make_batch(logps, n_tokens, index, records, rows, self.reference(main), seq_kl=seq_kl)
        return pref_metrics(self.algo.implicit_rewards(batch), batch.logps)["pref/accuracy"]


@TRAINERS.register("offline")
def build_offline(cfg, run_dir, **kw) -> OfflineTrainer:
    return OfflineTrainer(cfg, run_dir, **kw)
