"""Training time to a target held-out accuracy: rlx GRPO against TRL GRPO, same hyper-parameters, 3 seeds.

    python benchmarks/time_to_accuracy.py                           # the embedded task, target 0.40, seeds 0 1 2
    python benchmarks/time_to_accuracy.py --task sums               # the reasoning task, target 0.65
    python benchmarks/time_to_accuracy.py --target 0.5 --seeds 0 --max-steps 400

Both start from the same embedded 1M model (its SFT warm start for the task) and run rlx's default GRPO recipe:
32 prompts x 8 samples, beta 0.04 (k3), token-mean loss, group-std advantages (eps 1e-4), clip 0.2, AdamW lr 1e-4
betas (0.9, 0.99), grad clip 1.0, constant schedule, temperature 1 / top-k 0 / top-p 1, fp32, and the task's
reward and length: ``--task arithmetic`` (``python -m rlx``: 4 new tokens, correctness + 0.1 x format) or
``--task sums`` (``python -m rlx experiment=sums``: 3-6 numbers with a written running total, 48 new tokens, the
exact final answer; docs/length.md). TRL: ``GRPOTrainer`` with exactly these settings (its ``loss_type="dapo"`` is
the token mean), the same training problems and reward functions, and its other defaults. The two run in one
process, one step each in turn (a TRL callback runs the rlx step), and every ``--eval-every`` steps both models are
scored by the same code: greedy decoding of the task's 500 held-out problems, exact match. The time to target is the
sum of a framework's own step times up to the first evaluation at or above the target (evaluations are not
counted). Prints a table and a final JSON line.
"""

from __future__ import annotations

import argparse
import statistics
import time

from _common import emit, machine, quiet, reward_funcs, rlx_step, rlx_trainer, setup, trl_step_timer

# task -> (rlx overrides, new tokens, default target)
TASKS = {"arithmetic": ([], 4, 0.40), "sums": (["experiment=sums"], 48, 0.65)}


def task_parts(task: str) -> dict:
    """What both frameworks need for ``task``: the model directory ``python -m rlx <overrides>`` loads, the rlx
    overrides, the new-token limit, the reward terms with non-zero weight as TRL reward functions (and weights), the
    correctness function of the evaluation, and the task object (training and held-out problems)."""
    import rlx
    from rlx.catalogue import load as load_components
    from rlx.rewards.composite import CompositeReward
    from rlx.trainers.embedded import ensure_tiny

    load_components()
    overrides, L, _ = TASKS[task]
    cfg = rlx.compose(["trainer.progress=false", *overrides])
    path = ensure_tiny(cfg.model, log=lambda *a: None, data=cfg.data)
    reward = CompositeReward(cfg.reward)   # the run's reward: its score term is the evaluation's correctness
    return {"path": path, "overrides": overrides, "L": L, "rewards": reward_funcs(reward),
            "correct": reward.terms[reward.score_term][0], "data": rlx.build("data", cfg.data)}


def accuracy(model, tok, records, max_new_tokens: int, correct) -> float:
    """Greedy exact-match accuracy with rlx's engine and the task's correctness function (the same code for both)."""
    from omegaconf import OmegaConf

    from rlx.rollout.hf import HFEngine

    eng = HFEngine(model, tok, OmegaConf.create({"max_new_tokens": max_new_tokens, "temperature": 1.0, "top_k": 0,
                                                 "top_p": 1.0}))
    out = eng.generate([r["prompt"] for r in records], greedy=True)
    scores = correct([r["prompt"] for r in records], out.texts, [r["answer"] for r in records])
    return sum(scores) / len(scores)


def run_seed(seed: int, a) -> dict:
    from vs_trl import trl_grpo

    task = task_parts(a.task)
    rlx = rlx_trainer([*task["overrides"], f"seed={seed}", "trainer.steps=100000", f"hardware.num_threads={a.threads}"])
    records = rlx.data.eval_set()
    score = lambda model: accuracy(model, rlx.tok, records, task["L"], task["correct"])   # noqa: E731
    state = {"rlx": [0.0, 0.0, None, None], "trl": [0.0, 0.0, None, None]}   # wall, cpu, step reached, acc
    curve, reached = [], {}

    def after_trl_step():
        step = len(timer.times)
        state["trl"][0] += timer.times[-1]
        state["trl"][1] += timer.cpu[-1]
        if state["rlx"][2] is None:
            wall, cpu = rlx_step(rlx)
            state["rlx"][0] += wall
            state["rlx"][1] += cpu
        if step % a.eval_every:
            return
        accs = {"step": step}
        for name, model in (("rlx", rlx.model), ("trl", trainer.model)):
            if state[name][2] is None:
                accs[name] = score(model)
                if accs[name] >= a.target:   # freeze this framework's time at the evaluation that reached it
                    state[name] = [state[name][0], state[name][1], step, accs[name]]
                    reached[name] = (state[name][0], state[name][1])
        curve.append(accs)
        print(f"seed {seed} step {step}: " + "  ".join(f"{k} {v:.3f}" for k, v in accs.items() if k != "step")
              + f"   (rlx {state['rlx'][0]:.0f} s, TRL {state['trl'][0]:.0f} s)", flush=True)
        if state["rlx"][2] is not None and state["trl"][2] is not None:
            trainer.control.should_training_stop = True

    timer = trl_step_timer(after_step=after_trl_step)
    trainer = trl_grpo(task["path"], 32, 8, task["L"], 0.04, a.max_steps, timer, seed=seed, bf16=False,
                       records=task["data"].train_batch(0, 32 * a.max_steps), rewards=task["rewards"])
    quiet(trainer)
    start = score(trainer.model)
    trainer.train()
    out = {"seed": seed, "start_acc": start, "curve": curve}
    for name in ("rlx", "trl"):
        wall, cpu = reached.get(name, (None, None))
        out[name] = {"step": state[name][2], "acc": state[name][3], "wall_s": wall, "cpu_s": cpu}
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=sorted(TASKS), default="arithmetic")
    p.add_argument("--target", type=float, default=None, help="held-out accuracy (default: 0.40 arithmetic, "
                   "0.65 sums)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--max-steps", type=int, default=300)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    a.target = TASKS[a.task][2] if a.target is None else a.target
    setup(a.threads)
    import warnings

    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    t0 = time.perf_counter()
    runs = [run_seed(s, a) for s in a.seeds]
    print(f"\ntarget held-out accuracy {a.target} (start {runs[0]['start_acc']:.3f}); time = the framework's own "
          "step time up to the first evaluation at or above the target\n")
    print("| seed | rlx steps | rlx s (wall) | rlx s (CPU) | TRL steps | TRL s (wall) | TRL s (CPU) | rlx/TRL (wall) |")
    print("|---|---|---|---|---|---|---|---|")
    ratios = []
    for r in runs:
        x, y = r["rlx"], r["trl"]
        ok = x["step"] and y["step"]
        ratio = x["wall_s"] / y["wall_s"] if ok else None
        ratios += [ratio] if ok else []
        fmt = (lambda v, d=1: f"{v:.{d}f}" if v is not None else "not reached")   # noqa: E731
        print(f"| {r['seed']} | {x['step'] or '-'} | {fmt(x['wall_s'])} | {fmt(x['cpu_s'])} | {y['step'] or '-'} | "
              f"{fmt(y['wall_s'])} | {fmt(y['cpu_s'])} | {fmt(ratio, 2)} |")
    emit({"benchmark": "time_to_accuracy", "task": a.task, "machine": machine(), "target": a.target, "threads": a.threads,
          "median_ratio": statistics.median(ratios) if ratios else None, "runs": runs,
          "total_s": time.perf_counter() - t0})


if __name__ == "__main__":
    main()
