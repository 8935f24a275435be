"""rlx against TRL on identical work, interleaved in one process so both see the same machine.

    python benchmarks/vs_trl.py                       # every workload below, 1 thread
    python benchmarks/vs_trl.py --workloads grpo-1m,dpo-1m --steps 12 --threads 2

Each workload loads one model directory into both frameworks (benchmarks/_common.py: same weights),
and runs the same prompts, group size, completion length, batch, one update pass per batch, β and
dtype. TRL runs its ``train()``; a callback times each of its steps (``on_step_begin`` →
``on_step_end``: TRL generates inside the step) and, outside that window, runs one rlx step, so
the two alternate step by step. TRL is run in these variants:
  - ``trl_default``: as a user runs it: TRL's defaults (gradient checkpointing on) in rlx's dtype
    (rlx's ``hardware.autocast`` default: fp32 at 1M, bf16 autocast at 30M; TRL ``bf16`` set to match);
  - ``trl_matched``: gradient checkpointing off (rlx has it off), same dtype;
  - ``trl_default_bf16`` (1M only, informational): TRL's out-of-the-box bf16=True while rlx is fp32.
Medians drop the first ``--warmup`` steps of each. Each step is timed in wall seconds and in process CPU
seconds (one thread: the work done, less sensitive to other processes on a shared machine). Prints a
table and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from _common import (
    arithmetic_records,
    emit,
    machine,
    median,
    model_dir,
    n_params,
    quiet,
    reward_funcs,
    rlx_step,
    rlx_trainer,
    setup,
    trl_step_timer,
)

# name: (algo, size, prompts (or pairs) per step, group size, max completion tokens, beta)
WORKLOADS = {
    "grpo-1m": ("grpo", "1m", 8, 8, 32, 0.0),
    "grpo-30m": ("grpo", "30m", 8, 8, 32, 0.0),
    "grpo-1m-demo": ("grpo", "1m", 32, 8, 4, 0.04),   # the default `python -m rlx` step (beta 0.04: a reference)
    "dpo-1m": ("dpo", "1m", 8, 2, 0, 0.1),
    "dpo-30m": ("dpo", "30m", 8, 2, 0, 0.1),
}


def variants(bf16: bool):
    out = [("trl_default", {"bf16": bf16, "gradient_checkpointing": True}),
           ("trl_matched", {"bf16": bf16, "gradient_checkpointing": False})]
    if not bf16:
        out.append(("trl_default_bf16", {"bf16": True, "gradient_checkpointing": True}))
    return out


# ---------------------------------------------------------------- GRPO
def rlx_grpo(path, B, G, L, beta, threads, seed=0):
    return rlx_trainer([f"model.path={path}", f"data.prompts_per_step={B}", f"algo.group_size={G}",
                        f"rollout.max_new_tokens={L}", f"algo.beta={beta}", "trainer.lr=1e-4", "trainer.steps=100000",
                        f"hardware.num_threads={threads}", f"seed={seed}"])


def trl_grpo(path, B, G, L, beta, steps, callback, seed=0, **kw):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    tok = AutoTokenizer.from_pretrained(path, padding_side="left")
    funcs, weights = reward_funcs()
    args = GRPOConfig(output_dir=tempfile.mkdtemp(prefix="trl_bench_"), num_generations=G,
                      per_device_train_batch_size=B * G, max_completion_length=L, beta=beta, learning_rate=1e-4,
                      lr_scheduler_type="constant", adam_beta2=0.99, temperature=1.0, top_k=0, top_p=1.0,
                      use_cpu=True, report_to="none", logging_steps=1, save_strategy="no", max_steps=steps,
                      seed=seed, reward_weights=weights, disable_tqdm=True, **kw)
    ds = Dataset.from_list([{"prompt": r["prompt"], "answer": r["answer"]} for r in arithmetic_records(B * steps)])
    return GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(path), reward_funcs=funcs, args=args,
                       train_dataset=ds, processing_class=tok, callbacks=[callback])


# ---------------------------------------------------------------- DPO
def pairs_file(n: int) -> str:
    """TRL-format pairs on the embedded task: chosen = the right sum, rejected = a wrong one."""
    path = tempfile.mkstemp(prefix="rlx_bench_pairs_", suffix=".jsonl")[1]
    with open(path, "w") as fh:
        for i, r in enumerate(arithmetic_records(n)):
            wrong = str(int(r["answer"]) + 1 + i % 9)
            fh.write(json.dumps({"prompt": r["prompt"], "chosen": r["answer"], "rejected": wrong}) + "\n")
    return path


def rlx_dpo(path, B, beta, threads, data):
    return rlx_trainer(["algo=dpo", f"model.path={path}", "data=preference", f"data.path={data}",
                        f"data.prompts_per_step={B}", f"algo.beta={beta}", "trainer.lr=1e-4", "trainer.steps=100000",
                        f"hardware.num_threads={threads}"])


def trl_dpo(path, B, beta, steps, callback, data, **kw):
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tok = AutoTokenizer.from_pretrained(path, padding_side="left")
    args = DPOConfig(output_dir=tempfile.mkdtemp(prefix="trl_bench_"), per_device_train_batch_size=B, beta=beta,
                     learning_rate=1e-4, lr_scheduler_type="constant", adam_beta2=0.99, max_length=64, use_cpu=True,
                     report_to="none", logging_steps=1, save_strategy="no", max_steps=steps, disable_tqdm=True, **kw)
    ds = load_dataset("json", data_files=data, split="train")
    return DPOTrainer(model=AutoModelForCausalLM.from_pretrained(path), args=args, train_dataset=ds,
                      processing_class=tok, callbacks=[callback])


# ---------------------------------------------------------------- driver
def run_workload(name: str, a) -> list[dict]:
    algo, size, B, G, L, beta = WORKLOADS[name]
    path, steps = model_dir(size), a.warmup + a.steps
    data = pairs_file(B * (steps + 2) * 4) if algo == "dpo" else None
    rlx = rlx_grpo(path, B, G, L, beta, a.threads) if algo == "grpo" else rlx_dpo(path, B, beta, a.threads, data)
    autocast = rlx.autocast   # hardware.autocast=null: rlx picks the dtype (rlx/runtime/speed.py); TRL gets the same
    rows = []
    for vname, kw in variants(autocast):
        rlx_times = []
        timer = trl_step_timer(after_step=lambda: rlx_times.append(rlx_step(rlx)))  # noqa: B023
        if algo == "grpo":
            trainer = trl_grpo(path, B, G, L, beta, steps, timer, **kw)
        else:
            trainer = trl_dpo(path, B, beta, steps, timer, data, **kw)
        quiet(trainer)
        t0 = time.perf_counter()
        trainer.train()
        r, t = median([x[0] for x in rlx_times], a.warmup), median(timer.times, a.warmup)
        rc, tc = median([x[1] for x in rlx_times], a.warmup), median(timer.cpu, a.warmup)
        rows.append({"workload": name, "algo": algo, "params": n_params(path), "batch": f"{B}x{G}",
                     "max_new_tokens": L, "beta": beta, "dtype": "bf16 autocast" if autocast else "fp32",
                     "trl": vname, "trl_bf16": kw["bf16"], "trl_gc": kw["gradient_checkpointing"],
                     "rlx_s": r, "trl_s": t, "ratio": r / t, "rlx_cpu_s": rc, "trl_cpu_s": tc, "cpu_ratio": rc / tc,
                     "n": len(timer.times) - a.warmup, "wall_s": time.perf_counter() - t0})
        print(f"{name:14s} {vname:17s} rlx {r:7.3f} s  TRL {t:7.3f} s  rlx/TRL {r / t:5.2f}   "
              f"(CPU s: rlx {rc:.3f}  TRL {tc:.3f}  rlx/TRL {rc / tc:.2f})", flush=True)
        del trainer
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    setup(a.threads)
    import warnings

    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    rows = []
    for name in a.workloads.split(","):
        rows += run_workload(name, a)
    print("\n| workload | params | batch | L | beta | dtype | TRL variant | rlx s/step | TRL s/step | rlx/TRL "
          "| rlx/TRL (CPU s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        trl = f"{r['trl']} (gc {'on' if r['trl_gc'] else 'off'}, {'bf16' if r['trl_bf16'] else 'fp32'})"
        print(f"| {r['workload']} | {r['params'] / 1e6:.2f}M | {r['batch']} | {r['max_new_tokens']} | {r['beta']} | "
              f"{r['dtype']} | {trl} | {r['rlx_s']:.3f} | {r['trl_s']:.3f} | **{r['ratio']:.2f}** | {r['cpu_ratio']:.2f} |")
    emit({"benchmark": "vs_trl", "machine": machine(), "threads": a.threads, "rows": rows})


if __name__ == "__main__":
    main()
