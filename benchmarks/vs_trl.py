"""rlx against TRL on identical work, interleaved in one process so both see the same machine.

    python benchmarks/vs_trl.py                       # the CPU workloads below, 1 thread
    python benchmarks/vs_trl.py --workloads grpo-1m,grpo-30m --variants trl_default --compile --runs 3
    python benchmarks/vs_trl.py --device cuda --compile   # GRPO and DPO at ~0.5B (random init, bf16) on one GPU

Each workload loads one model directory into both frameworks (benchmarks/_common.py: same weights),
and runs the same prompts, group size, completion length, batch, one update pass per batch, β and
dtype. TRL runs its ``train()``; a callback times each of its steps (``on_step_begin`` →
``on_step_end``: TRL generates inside the step) and, outside that window, runs one step of each rlx
trainer (eager, and with ``--compile`` the compiled path, ``hardware.compile=true``), so they alternate
step by step. Every variant starts all of them from the same fresh weights. TRL is run in these variants:
  - ``trl_default``: as a user runs it: TRL's defaults (gradient checkpointing on) in rlx's dtype
    (rlx's ``hardware.autocast`` default: fp32 at 1M, bf16 autocast at 30M on a CPU with bf16 matrix
    instructions, bf16 on a GPU; TRL ``bf16`` set to match);
  - ``trl_matched``: gradient checkpointing off (rlx has it off), same dtype;
  - ``trl_default_bf16`` (fp32 rows only, informational): TRL's out-of-the-box bf16=True while rlx is fp32.
Medians drop the first ``--warmup`` steps of each. The compiled path's steady step excludes the seconds
spent compiling inside it (``rlx.models.compiled.seconds()``); its compile time is a column of its own.
Each step is timed in wall seconds and in process CPU seconds (one thread: the work done). ``--runs N``
repeats every workload N times and the table gives each run and the median. Prints a table and a final
JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
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
    "grpo-0.5b": ("grpo", "0.5b", 16, 8, 64, 0.0),   # --device cuda: Qwen2.5-0.5B's architecture, random init, bf16
    "dpo-0.5b": ("dpo", "0.5b", 8, 2, 0, 0.1),
}
DEFAULTS = {"cpu": "grpo-1m,grpo-30m,grpo-1m-demo,dpo-1m,dpo-30m", "cuda": "grpo-0.5b,dpo-0.5b"}


def rlx_common(path, size, threads, device, compile_, backend="inductor"):
    model = ["model=qwen0_5b", f"model.path={path}"] if size == "0.5b" else [f"model.path={path}"]
    hw = ["hardware=gpu"] if device == "cuda" else []
    return [*model, *hw, f"hardware.compile={str(compile_).lower()}", f"hardware.compile_backend={backend}",
            "trainer.lr=1e-4", "trainer.steps=100000",
            f"hardware.num_threads={threads}"]


def variants(bf16: bool, device: str, names: str | None):
    use_cpu = device == "cpu"
    out = [("trl_default", {"bf16": bf16, "gradient_checkpointing": True, "use_cpu": use_cpu}),
           ("trl_matched", {"bf16": bf16, "gradient_checkpointing": False, "use_cpu": use_cpu})]
    if not bf16:
        out.append(("trl_default_bf16", {"bf16": True, "gradient_checkpointing": True, "use_cpu": use_cpu}))
    return [v for v in out if names is None or v[0] in names.split(",")]


# ---------------------------------------------------------------- GRPO
def rlx_grpo(common, B, G, L, beta, seed=0):
    return rlx_trainer([*common, f"data.prompts_per_step={B}", f"algo.group_size={G}", f"rollout.max_new_tokens={L}",
                        f"algo.beta={beta}", f"seed={seed}"])


def trl_grpo(path, B, G, L, beta, steps, callback, seed=0, records=None, rewards=None, **kw):
    """TRL's GRPOTrainer on ``records`` (default: the embedded task's) with ``rewards`` = (funcs, weights) (default:
    rlx's default reward), the hyper-parameters of rlx's default GRPO recipe and TRL's other defaults."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    tok = AutoTokenizer.from_pretrained(path, padding_side="left")
    funcs, weights = rewards or reward_funcs()
    args = GRPOConfig(output_dir=tempfile.mkdtemp(prefix="trl_bench_"), num_generations=G,
                      per_device_train_batch_size=B * G, max_completion_length=L, beta=beta, learning_rate=1e-4,
                      lr_scheduler_type="constant", adam_beta2=0.99, temperature=1.0, top_k=0, top_p=1.0,
                      report_to="none", logging_steps=1, save_strategy="no", max_steps=steps,
                      seed=seed, reward_weights=weights, disable_tqdm=True, **kw)
    records = records if records is not None else arithmetic_records(B * steps)
    ds = Dataset.from_list([{"prompt": r["prompt"], "answer": r["answer"]} for r in records])
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


def rlx_dpo(common, B, beta, data):
    return rlx_trainer([*common, "algo=dpo", "data=preference", f"data.path={data}", f"data.prompts_per_step={B}",
                        f"algo.beta={beta}"])


def trl_dpo(path, B, beta, steps, callback, data, **kw):
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tok = AutoTokenizer.from_pretrained(path, padding_side="left")
    args = DPOConfig(output_dir=tempfile.mkdtemp(prefix="trl_bench_"), per_device_train_batch_size=B, beta=beta,
                     learning_rate=1e-4, lr_scheduler_type="constant", adam_beta2=0.99, max_length=64,
                     report_to="none", logging_steps=1, save_strategy="no", max_steps=steps, disable_tqdm=True, **kw)
    ds = load_dataset("json", data_files=data, split="train")
    return DPOTrainer(model=AutoModelForCausalLM.from_pretrained(path), args=args, train_dataset=ds,
                      processing_class=tok, callbacks=[callback])


# ---------------------------------------------------------------- driver
def rlx_timed_step(trainer) -> tuple[float, float, float]:
    """One rlx step: (wall s less the seconds compiled inside it, CPU s likewise, seconds compiled)."""
    from rlx.models import compiled

    c0 = compiled.seconds()
    wall, cpu = rlx_step(trainer)
    c = compiled.seconds() - c0
    return wall - c, cpu - c, c


def run_workload(name: str, a, run: int) -> list[dict]:
    algo, size, B, G, L, beta = WORKLOADS[name]
    path, steps = model_dir(size), a.warmup + a.steps
    data = pairs_file(B * (steps + 2) * 4) if algo == "dpo" else None

    def build(compile_):
        common = rlx_common(path, size, a.threads, a.device, compile_, a.compile_backend)
        return rlx_grpo(common, B, G, L, beta) if algo == "grpo" else rlx_dpo(common, B, beta, data)

    autocast = build(False).autocast   # hardware.autocast=null: rlx picks the dtype (rlx/runtime/speed.py)
    rows = []
    for vname, kw in variants(autocast, a.device, a.variants):
        rlx = {"eager": build(False), **({"compiled": build(True)} if a.compile else {})}   # fresh weights each
        times = {k: [] for k in rlx}

        def after_step(rlx=rlx, times=times):
            for k, tr in rlx.items():
                times[k].append(rlx_timed_step(tr))

        timer = trl_step_timer(after_step=after_step)
        trainer = (trl_grpo(path, B, G, L, beta, steps, timer, **kw) if algo == "grpo"
                   else trl_dpo(path, B, beta, steps, timer, data, **kw))
        quiet(trainer)
        t0 = time.perf_counter()
        trainer.train()
        t, tc = median(timer.times, a.warmup), median(timer.cpu, a.warmup)
        row = {"workload": name, "run": run, "algo": algo, "params": n_params(path), "batch": f"{B}x{G}",
               "max_new_tokens": L, "beta": beta, "dtype": "bf16 autocast" if autocast else "fp32", "device": a.device,
               "trl": vname, "trl_bf16": kw["bf16"], "trl_gc": kw["gradient_checkpointing"], "trl_s": t, "trl_cpu_s": tc,
               "n": len(timer.times) - a.warmup, "wall_s": 0.0}
        for k, ts in times.items():
            pre = "rlx" if k == "eager" else "rlx_compiled"
            r, rc = median([x[0] for x in ts], a.warmup), median([x[1] for x in ts], a.warmup)
            row.update({f"{pre}_s": r, f"{pre}_cpu_s": rc, f"{pre}_ratio": r / t, f"{pre}_cpu_ratio": rc / tc})
            if k == "compiled":
                row["compile_s"] = sum(x[2] for x in ts)
        row["ratio"], row["cpu_ratio"], row["wall_s"] = row["rlx_ratio"], row["rlx_cpu_ratio"], time.perf_counter() - t0
        rows.append(row)
        comp = (f"  compiled {row['rlx_compiled_s']:.3f} s ({row['rlx_compiled_ratio']:.2f}, compile "
                f"{row['compile_s']:.1f} s)" if a.compile else "")
        print(f"run {run} {name:12s} {vname:17s} rlx {row['rlx_s']:7.3f} s  TRL {t:7.3f} s  rlx/TRL "
              f"{row['ratio']:5.2f} (CPU s {row['cpu_ratio']:.2f}){comp}", flush=True)
        del trainer, rlx
    return rows


def table(rows, compiled_rows: bool) -> None:
    head = ("| workload | run | params | batch | L | beta | dtype | TRL variant | rlx s/step | TRL s/step | rlx/TRL "
            "| rlx/TRL (CPU s) |")
    if compiled_rows:
        head += " rlx compiled s/step | compiled/TRL | compile s |"
    print("\n" + head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        trl = f"{r['trl']} (gc {'on' if r['trl_gc'] else 'off'}, {'bf16' if r['trl_bf16'] else 'fp32'})"
        line = (f"| {r['workload']} | {r['run']} | {r['params'] / 1e6:.2f}M | {r['batch']} | {r['max_new_tokens']} | "
                f"{r['beta']} | {r['dtype']} | {trl} | {r['rlx_s']:.3f} | {r['trl_s']:.3f} | **{r['ratio']:.2f}** | "
                f"{r['cpu_ratio']:.2f} |")
        if compiled_rows:
            line += f" {r['rlx_compiled_s']:.3f} | **{r['rlx_compiled_ratio']:.2f}** | {r['compile_s']:.1f} |"
        print(line)


def medians(rows) -> list[dict]:
    """One row per (workload, TRL variant): the median of the runs' ratios and times; compile seconds are the
    largest run's (the process compiles once: later runs reuse the code)."""
    out = {}
    for r in rows:
        out.setdefault((r["workload"], r["trl"]), []).append(r)
    keys = ("ratio", "cpu_ratio", "rlx_compiled_ratio", "rlx_s", "trl_s", "rlx_compiled_s")
    return [{"workload": w, "trl": v, "runs": len(rs),
             **{k: statistics.median(r[k] for r in rs) for k in keys if k in rs[0]},
             **({"compile_s": max(r["compile_s"] for r in rs)} if "compile_s" in rs[0] else {})}   # the first run's
            for (w, v), rs in out.items()]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", default=None, help="comma-separated; default: " + " | ".join(
        f"{d}: {w}" for d, w in DEFAULTS.items()))
    p.add_argument("--variants", default=None, help="TRL variants to run (default: all)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--compile", action="store_true", help="also time rlx's compiled path (hardware.compile=true)")
    p.add_argument("--compile-backend", default="inductor", help="hardware.compile_backend of the compiled rows "
                   "(aot_eager: the same path without code generation, for checking the script quickly)")
    p.add_argument("--runs", type=int, default=1, help="repeat every workload this many times (median in the JSON)")
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
    for run in range(1, a.runs + 1):   # runs alternate: every workload once, then again
        for name in (a.workloads or DEFAULTS[a.device]).split(","):
            rows += run_workload(name, a, run)
    table(rows, a.compile)
    emit({"benchmark": "vs_trl", "machine": machine(), "device": a.device, "threads": a.threads, "rows": rows,
          "medians": medians(rows)})


if __name__ == "__main__":
    main()
