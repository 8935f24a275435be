"""Shared pieces of the benchmarks: the two models, the prompts, rlx and TRL trainers on identical work.

Models: ``1m`` is the embedded model (1.02M parameters, SFT warm start, cached by rlx); ``30m`` is a
Qwen3 with the embedded tokenizer, hidden 512, 8 layers, 8 heads / 4 KV heads, FFN 2048 (≈30M
parameters), random init with seed 0, saved once under ``$RLX_CACHE``. Both frameworks load the same
directory with ``from_pretrained``, so they start from the same weights.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline",
       "MLFLOW_DISABLE_TELEMETRY": "true", "TOKENIZERS_PARALLELISM": "false", "DISABLE_MLFLOW_INTEGRATION": "TRUE"}


def setup(threads: int) -> None:
    os.environ.update(ENV)
    os.environ.setdefault("RLX_CACHE", str(Path.home() / ".cache" / "rlx"))
    import torch

    torch.set_num_threads(threads)


def model_dir(size: str) -> Path:
    """Directory of the benchmark model ``1m`` or ``30m`` (built on first use)."""
    import rlx
    from rlx.models.tiny import cache_root
    from rlx.trainers.embedded import ensure_tiny

    cfg = rlx.compose(["trainer.progress=false"])
    tiny = ensure_tiny(cfg.model, log=lambda *a: None)
    if size == "1m":
        return tiny
    if size == "0.5b":
        return random_preset_dir("qwen0_5b")
    if size != "30m":
        raise ValueError(f"unknown size {size!r} (1m | 30m | 0.5b)")
    out = cache_root() / "bench-qwen3-30m-v1"
    if not (out / "config.json").exists():
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, Qwen3Config

        tok = AutoTokenizer.from_pretrained(tiny, padding_side="left")
        conf = Qwen3Config(vocab_size=len(tok), hidden_size=512, intermediate_size=2048, num_hidden_layers=8,
                           num_attention_heads=8, num_key_value_heads=4, head_dim=64, max_position_embeddings=128,
                           tie_word_embeddings=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                           bos_token_id=tok.eos_token_id)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(conf)
        model.generation_config = GenerationConfig(pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, out)
    return out


def random_preset_dir(preset: str) -> Path:
    """A model preset built with random weights (``model=<preset> model.init=random``: no download; the embedded
    tokenizer where the hub's is unreachable), saved once under the cache so both frameworks load the same weights."""
    import rlx
    from rlx.models.tiny import cache_root

    out = cache_root() / f"bench-{preset}-random-v1"
    if not (out / "config.json").exists():
        import torch

        torch.manual_seed(0)
        cfg = rlx.compose([f"model={preset}", "model.init=random"])
        model, tok = rlx.build("model", cfg.model, log=lambda *a: None)
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, out)
    return out


def n_params(path) -> int:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        m = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
    return sum(p.numel() for p in m.parameters())


def arithmetic_records(n: int, start: int = 0) -> list[dict]:
    """The embedded task's training records (prompt "a+b=", answer), the ones rlx's data=arithmetic serves."""
    from rlx.data.arithmetic import ArithmeticTask

    return ArithmeticTask().train_batch(start, n)


def reward_funcs(reward=None):
    """A run's ``CompositeReward`` (default: rlx's default run's, conf/reward/arithmetic.yaml) as TRL reward
    functions: its terms with non-zero weight, as (funcs, weights)."""
    if reward is None:
        import rlx
        from rlx.catalogue import load as _load_components
        from rlx.rewards.composite import CompositeReward

        _load_components()
        reward = CompositeReward(rlx.compose([]).reward)
    terms = [(fn, w) for fn, w in reward.terms.values() if w]
    return [f for f, _ in terms], [w for _, w in terms]


def rlx_trainer(overrides: list[str], run_dir: str | None = None):
    """An rlx trainer for ``overrides`` (the objects ``python -m rlx <overrides>`` builds)."""
    import rlx
    from rlx.catalogue import build
    from rlx.catalogue import load as _load_components
    from rlx.registry import TRAINERS

    _load_components()
    cfg = rlx.compose(["trainer.progress=false", "trainer.eval_every=0", "tracker=none", *overrides])
    algo = build("algo", cfg.algo)
    trainer = TRAINERS.get(algo.trainer)(cfg, run_dir or tempfile.mkdtemp(prefix="rlx_bench_"))
    trainer.console.print = lambda *a, **k: None
    return trainer


def sync() -> None:
    """Wait for queued GPU work (CUDA timings); nothing on the CPU."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def rlx_step(trainer) -> tuple[float, float]:
    """One rlx training step; returns (wall s, process CPU s) of the ``train_step`` call (GPU work waited for)."""
    import time

    trainer.step += 1
    sync()
    t0, c0 = time.perf_counter(), time.process_time()
    trainer.train_step()
    sync()
    return time.perf_counter() - t0, time.process_time() - c0


def trl_step_timer(after_step=None):
    """A TRL callback timing each optimizer step (on_step_begin → on_step_end; TRL generates inside it) in
    wall and process CPU seconds, then calling ``after_step()`` outside the timed window (to interleave rlx)."""
    import time

    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self.cpu, self._t0 = [], [], None

        def on_step_begin(self, args, state, control, **kw):
            sync()
            self._t0 = (time.perf_counter(), time.process_time())

        def on_step_end(self, args, state, control, **kw):
            sync()
            self.times.append(time.perf_counter() - self._t0[0])
            self.cpu.append(time.process_time() - self._t0[1])
            if after_step is not None:
                after_step()

    return StepTimer()


def quiet(trl_trainer) -> None:
    """Stop a transformers Trainer from printing its log dict every step."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trl_trainer.remove_callback(PrinterCallback)
    trl_trainer.remove_callback(ProgressCallback)


def median(xs, skip: int = 0) -> float:
    xs = list(xs)[skip:]
    return statistics.median(xs) if xs else float("nan")


def emit(result: dict) -> None:
    """The final JSON line every benchmark prints."""
    print(json.dumps(result, default=lambda o: round(o, 4) if isinstance(o, float) else str(o)))


def machine() -> str:
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
