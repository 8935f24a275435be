"""Shared fixtures: a hermetic environment, the composed default config, and the tiny model built
once per session (random init: unit tests need the architecture, not the warm start)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FAST = ["model.init=random", "trainer.progress=false", "trainer.eval_every=0"]


@pytest.fixture(scope="session", autouse=True)
def hermetic_env(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    # Under pytest-xdist (-n 2) the workers share one model cache beside their temp dirs, so the warm-started model
    # is built once (ensure_tiny takes a file lock), not once per worker.
    shared = tmp_path_factory.getbasetemp().parent / "rlx_cache" if os.environ.get("PYTEST_XDIST_WORKER") else None
    if shared is not None:
        shared.mkdir(exist_ok=True)
    env = {
        "RLX_CACHE": os.environ.get("RLX_TEST_CACHE", str(shared or tmp_path_factory.mktemp("rlx_cache"))),
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true", "WANDB_MODE": "offline", "WANDB_SILENT": "true",
        "WANDB_DIR": str(home / "wandb"), "WANDB_CACHE_DIR": str(home / "wandb_cache"),
        "WANDB_DATA_DIR": str(home / "wandb_data"), "WANDB_CONFIG_DIR": str(home / "wandb_config"),
        "RAY_AUTH_MODE": "disabled", "MPLCONFIGDIR": str(home / "mpl"),
    }
    os.environ.update(env)
    yield env


@pytest.fixture(scope="session")
def cfg():
    import rlx

    return rlx.compose(FAST)


@pytest.fixture(scope="session")
def tiny(cfg):
    """(model, tokenizer) of the embedded architecture, random init, built once."""
    import rlx

    model, tok = rlx.build("model", cfg.model, log=lambda *_: None)
    return model, tok


@pytest.fixture(scope="session")
def warm_tiny(cfg):
    """Builds the warm-started embedded model (SFT to dev accuracy 0.2, ~40 s once per cache) so
    that runs with the default ``model=tiny`` have a reward signal."""
    import rlx
    from rlx.trainers.embedded import ensure_tiny

    return ensure_tiny(rlx.compose([]).model, log=lambda *_: None)


@pytest.fixture(scope="session")
def guess_model(tiny):
    """(env, task, model, tokenizer) for env=guess: a copy of the random-init tiny model after 30 SFT steps on the
    env's demonstrations (about 2 s), enough to write integer guesses that end with EOS, so episodes take
    several turns. Tests that sample from it build their runner with ``episode_runner``."""
    import copy

    import torch

    import rlx
    from rlx.algos.sft import sft_loss
    from rlx.models.encode import encode_episodes
    from rlx.models.logprobs import token_logprobs

    model, tok = tiny
    cfg = rlx.compose(["env=guess"])
    env, task = rlx.build("env", cfg.env), rlx.build("data", cfg.data)
    model = copy.deepcopy(model)
    torch.manual_seed(0)
    optim = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(30):
        records = task.train_batch(step * 32, 32)
        ids, am, mask, T = encode_episodes(tok, [r["prompt"] for r in records], [env.demo(r) for r in records])
        loss, _ = sft_loss(token_logprobs(model, ids, am, T)[0], mask, "token_mean")
        loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)
    return env, task, model, tok


def episode_runner(guess_model, max_new_tokens=3, record_logp=False, env=None):
    """An EpisodeRunner of ``guess_model`` (or another ``env``) with an HFEngine sampling at temperature 1."""
    from omegaconf import OmegaConf

    from rlx.rollout.episodes import EpisodeRunner
    from rlx.rollout.hf import HFEngine

    default_env, _, model, tok = guess_model
    engine = HFEngine(model, tok, OmegaConf.create({"max_new_tokens": max_new_tokens, "temperature": 1.0, "top_k": 0,
                                                    "top_p": 1.0, "engine_logprobs": record_logp}))
    return EpisodeRunner(env or default_env, engine, tok, max_new_tokens)


def run_cli(args, run_dir=None, timeout=300, check=True):
    """``python -m rlx args`` in a subprocess (the user's path); returns the CompletedProcess."""
    cmd = [sys.executable, "-m", "rlx", *args]
    if run_dir is not None:
        cmd.append(f"hydra.run.dir={run_dir}")
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=os.environ.copy())
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stderr[-4000:]}")
    return proc


# Heavy modules a forked CLI run finds imported (run_main); test_resume preloads the same set for its kill chains.
PRELOAD = ["torch", "transformers", "transformers.models.qwen3.modeling_qwen3", "rlx", "rlx.run", "rlx.__main__",
           "rlx.algos", "rlx.data", "rlx.models", "rlx.rewards", "rlx.rollout", "rlx.track", "rlx.trainers", "hydra",
           "conftest"]


def _main_child(args: list[str], log: str, env: dict) -> None:
    """Child process of run_main: ``python -m rlx args`` without the interpreter start, output to ``log``."""
    os.environ.clear()
    os.environ.update(env)
    os.chdir(REPO)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.argv = ["rlx", *args]
    from rlx.__main__ import main

    main()


def run_main(args, run_dir, timeout=300):
    """``python -m rlx args hydra.run.dir=run_dir`` through the CLI's own ``main`` (its checks, Hydra's app, the run
    dir it writes), in a process forked from a server that has torch, transformers and rlx imported once: the user's
    path less ~3 s of imports per run. Raises with the log's tail when the run does not exit 0."""
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)   # no effect once a server runs (test_resume's preloads the same set)
    log = Path(str(run_dir) + ".log")
    Path(run_dir).parent.mkdir(parents=True, exist_ok=True)
    p = ctx.Process(target=_main_child, args=([*args, f"hydra.run.dir={run_dir}"], str(log), dict(os.environ)))
    p.start()
    p.join(timeout)
    if p.is_alive():
        p.kill()
        p.join()
    if p.exitcode != 0:
        raise AssertionError(f"python -m rlx {' '.join(args)} exited {p.exitcode}\n{log.read_text()[-4000:]}")


def read_metrics(run_dir) -> list[dict]:
    import json

    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if line]


def algo_batch(rewards, response_mask, **fields):
    """An online ``rlx.batch.Batch`` as an algorithm's ``advantages`` reads it: rewards [N], response_mask [N, T]
    and the optional fields (old_logp, ref_logp, values, greedy_rewards); the token ids are not read."""
    import torch

    from rlx.batch import Batch

    n, T = response_mask.shape
    return Batch(torch.zeros(n, T, dtype=torch.long), torch.ones(n, T, dtype=torch.long), response_mask,
                 rewards, **fields)


def loss_inputs(old_logp, advantages, response_mask, ref_logp=None, **fields):
    """``LossInputs`` of one micro-batch that is its own mini-batch (the totals are this batch's)."""
    import torch

    from rlx.batch import LossInputs

    fields.setdefault("rewards", torch.zeros(response_mask.shape[0]))
    return LossInputs(old_logp=old_logp, advantages=advantages, response_mask=response_mask, ref_logp=ref_logp,
                      num_tokens=response_mask.sum(), num_seqs=max(int(response_mask.any(-1).sum()), 1),
                      max_len=response_mask.shape[1], **fields)


def last_step(run_dir) -> int:
    """Step of the last complete line of ``<run_dir>/metrics.jsonl`` (-1 if none); a torn last line is ignored."""
    import json
    from pathlib import Path

    try:
        lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return -1
    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError):
            continue
    return -1
