"""Where an rlx GRPO step's time goes: the torch profiler over a few steps after warm-up, split into matrix
multiplications and the rest, with the matmuls' achieved rate.

    python benchmarks/profile_step.py                       # 30m, compiled, 8 prompts x 8, 32 new tokens, beta 0
    python benchmarks/profile_step.py --size 1m --eager

The workload is ``vs_trl.py``'s grpo-30m (or grpo-1m). Matmuls are the ops that multiply the weights: ``aten::mm``
and ``aten::addmm`` (the training forward and backward, also inside compiled graphs) and oneDNN's
``mkldnn::_linear_pointwise`` (the decode step's packed bf16 weights). Their FLOPs are counted from the shapes the
profiler records (2·M·N·K each). The rest (attention, element-wise work, the optimizer, Python) is what kernel
fusion and lower overhead can still remove; the matmul seconds are what a step costs at the matmuls' rate whatever
the framework. Prints the top ops, a summary and a final JSON line.
"""

from __future__ import annotations

import argparse

from _common import emit, machine, model_dir, n_params, rlx_step, setup
from vs_trl import WORKLOADS, rlx_common, rlx_grpo

MATMULS = ("aten::mm", "aten::addmm", "mkldnn::_linear_pointwise")


def flops(name: str, shapes: list) -> float:
    """2·M·N·K of one matmul call from its input shapes (0 where they are not recorded)."""
    try:
        if name == "aten::mm":
            (m, k), (_, n) = shapes[0], shapes[1]
        elif name == "aten::addmm":
            (m, k), (_, n) = shapes[1], shapes[2]
        else:   # mkldnn::_linear_pointwise(input [..., K], packed weight [N, K], ...)
            *lead, k = shapes[0]
            m, n = 1, shapes[1][0]
            for d in lead:
                m *= d
        return 2.0 * m * n * k
    except (IndexError, TypeError, ValueError):
        return 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="30m", choices=["1m", "30m"])
    ap.add_argument("--eager", action="store_true", help="the eager path (default: hardware.compile=true)")
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    setup(args.threads)
    from torch.profiler import ProfilerActivity, profile

    _, size, B, G, L, beta = WORKLOADS[f"grpo-{args.size}"]
    path = model_dir(size)
    trainer = rlx_grpo(rlx_common(path, size, args.threads, "cpu", not args.eager), B, G, L, beta)   # vs_trl's trainer
    for _ in range(args.warmup):
        rlx_step(trainer)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        steps = [rlx_step(trainer)[0] for _ in range(args.steps)]
    events = prof.key_averages(group_by_input_shape=True)
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    mm_s = sum(e.self_cpu_time_total for e in events if e.key in MATMULS) / 1e6
    mm_flop = sum(flops(e.key, e.input_shapes) * e.count for e in events if e.key in MATMULS)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    n, step = args.steps, sum(steps) / args.steps   # the profiled steps' mean wall time (the profiler adds a little)
    print(f"{args.size} {'eager' if args.eager else 'compiled'}: step {step:.3f} s (mean of {n} profiled; ops "
          f"{total / n:.3f} s), matmuls {mm_s / n:.3f} s ({mm_s / n / step:.0%}) at {mm_flop / mm_s / 1e9:.0f} GFLOP/s "
          f"({mm_flop / n / 1e9:.0f} GFLOP a step), the rest {step - mm_s / n:.3f} s")
    emit({"machine": machine(), "size": args.size, "params": n_params(path), "compiled": not args.eager,
          "step_s": step, "op_s": total / n, "matmul_s": mm_s / n, "matmul_share": mm_s / n / step,
          "matmul_gflop_per_step": mm_flop / n / 1e9, "matmul_gflops": mm_flop / mm_s / 1e9 if mm_s else 0.0,
          "rest_s": step - mm_s / n})


if __name__ == "__main__":
    main()
