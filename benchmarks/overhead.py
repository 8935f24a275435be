"""rlx's GRPO step against the bare operations it needs, timed in the same process, alternating.

    python benchmarks/overhead.py                  # 30m, 8 prompts x 8, 32 new tokens, beta 0.04 (a reference)
    python benchmarks/overhead.py --size 1m --prompts 32 --max-new 4

The bare operations, each the plain transformers/torch call on a plain copy of the same weights, in
the dtype rlx runs (bf16 autocast at 30M, fp32 at 1M) and on the same batch shapes:
  1. ``model.generate`` with the KV cache (do_sample, temperature 1, top_k 0, top_p 1), B·G rows;
  2. the reference log-prob forward: one no-grad forward over [prompt; completion] (when beta > 0);
  3. forward + backward + fused AdamW step over the same sequences (the policy-gradient update).
rlx's step (``train_step``: generation, rewards, reference, advantages, update, metrics) is timed
in between; the figure is median(rlx step) / (median(gen) + median(ref) + median(fwd+bwd+opt)).
Each is measured in wall and process CPU seconds. Prints a table and a final JSON line.
"""

from __future__ import annotations

import argparse
import time

from _common import emit, machine, median, model_dir, n_params, rlx_step, rlx_trainer, setup


class Bare:
    """The plain operations on a plain copy of the weights."""

    def __init__(self, path, prompts: list[str], G: int, L: int, autocast: bool, beta: float):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

        self.torch, self.autocast, self.beta = torch, autocast, beta
        self.tok = AutoTokenizer.from_pretrained(path, padding_side="left")
        self.model = AutoModelForCausalLM.from_pretrained(path)
        self.ref = AutoModelForCausalLM.from_pretrained(path).eval() if beta > 0 else None
        self.optim = torch.optim.AdamW(self.model.parameters(), lr=1e-4, betas=(0.9, 0.99), fused=True)
        enc = self.tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        self.ids, self.am = enc["input_ids"].repeat_interleave(G, 0), enc["attention_mask"].repeat_interleave(G, 0)
        self.gc = GenerationConfig(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=L,
                                   pad_token_id=self.tok.pad_token_id, eos_token_id=self.tok.eos_token_id)

    def _ac(self):
        return self.torch.autocast("cpu", self.torch.bfloat16, enabled=self.autocast)

    def generate(self):
        with self.torch.no_grad(), self._ac():
            self.model.eval()
            out = self.model.generate(input_ids=self.ids, attention_mask=self.am, generation_config=self.gc)
            self.model.train()
        self.seq = out
        self.T = out.shape[1] - self.ids.shape[1]
        self.mask = self.torch.cat([self.am, self.torch.ones_like(out[:, self.ids.shape[1]:])], 1)

    def _logp(self, model):
        with self._ac():
            logits = model(input_ids=self.seq, attention_mask=self.mask, logits_to_keep=self.T + 1).logits[:, :-1]
        return logits.float().log_softmax(-1).gather(-1, self.seq[:, -self.T:, None]).squeeze(-1)

    def reference(self):
        with self.torch.no_grad():
            self._logp(self.ref)

    def update(self):
        adv = self.torch.randn(self.seq.shape[0], 1)
        (-(self._logp(self.model) * adv).mean()).backward()
        self.optim.step()
        self.optim.zero_grad(set_to_none=True)


def timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="30m")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--max-new", type=int, default=32)
    p.add_argument("--beta", type=float, default=0.04)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    setup(a.threads)
    import warnings

    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    path = model_dir(a.size)
    rlx = rlx_trainer([f"model.path={path}", f"data.prompts_per_step={a.prompts}", f"algo.group_size={a.group}",
                       f"rollout.max_new_tokens={a.max_new}", f"algo.beta={a.beta}", "trainer.steps=100000",
                       f"hardware.num_threads={a.threads}"])
    prompts = [r["prompt"] for r in rlx.data.train_batch(0, a.prompts)]
    bare = Bare(path, prompts, a.group, a.max_new, rlx.autocast, a.beta)
    times = {"rlx": [], "generate": [], "reference": [], "update": []}
    for _ in range(a.warmup + a.steps):
        times["rlx"].append(rlx_step(rlx))
        times["generate"].append(timed(bare.generate))
        times["reference"].append(timed(bare.reference) if a.beta > 0 else (0.0, 0.0))
        times["update"].append(timed(bare.update))
    res = {}
    for i, unit in ((0, "s"), (1, "cpu_s")):
        med = {k: median([x[i] for x in v], a.warmup) for k, v in times.items()}
        bare_sum = med["generate"] + med["reference"] + med["update"]
        res[unit] = {**med, "bare_sum": bare_sum, "ratio": med["rlx"] / bare_sum}
    print(f"\n{a.size} ({n_params(path) / 1e6:.1f}M params), {a.prompts}x{a.group}, {a.max_new} new tokens, "
          f"beta {a.beta}, {'bf16 autocast' if rlx.autocast else 'fp32'}, {a.threads} thread(s)")
    print("| | generate | reference fwd | fwd+bwd+AdamW | sum of bare ops | rlx step | rlx / sum |")
    print("|---|---|---|---|---|---|---|")
    for unit, r in res.items():
        print(f"| {unit} | {r['generate']:.3f} | {r['reference']:.3f} | {r['update']:.3f} | {r['bare_sum']:.3f} | "
              f"{r['rlx']:.3f} | **{r['ratio']:.2f}** |")
    emit({"benchmark": "overhead", "machine": machine(), "size": a.size, "params": n_params(path),
          "batch": f"{a.prompts}x{a.group}", "max_new_tokens": a.max_new, "beta": a.beta,
          "dtype": "bf16 autocast" if rlx.autocast else "fp32", "threads": a.threads, "wall": res["s"],
          "cpu": res["cpu_s"]})


if __name__ == "__main__":
    main()
