"""torchrun with 2 gloo ranks (ddp and FSDP2) and sharded rollouts equals one process with the same global batch
for GRPO, DAPO (dynamic sampling), RLOO, REINFORCE++, PPO with its critic and DPO; each rank generates N/world
samples; two torchrun "nodes" on 127.0.0.1 (a c10d rendezvous) equal one process too; a 2-rank checkpoint resumes
on 1; a rank that dies takes the others down within hardware.timeout_s; bad launches exit 2."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
from conftest import REPO, read_metrics, run_cli

import rlx

ARGS = ["trainer.steps=5", "data.prompts_per_step=4", "trainer.progress=false", "trainer.eval_every=0",
        "trainer.micro_batch_size=4", "trainer.mini_batch_size=16", "trainer.update_epochs=2",
        "hardware.num_threads=1", "trainer.save_every=2", "data.eval_size=32"]
CASES = {"grpo": [], "dapo": ["algo=dapo"], "rloo": ["algo=rloo"], "reinforce_pp": ["algo=reinforce_pp"],
         "ppo": ["algo=ppo"], "dpo": ["algo=dpo", "data.pref_eval_size=32"]}
# The equality runs are in float64 (model.dtype=float64). Two ranks add a mini-batch's gradient in another order
# than one process (each rank its micro-batches, then the all-reduce; FSDP2's reduce-scatter and sharded norm). In
# float32 that is ~6e-7 relative at step 1, and by step 5 the extreme token ratio and the pre-clip gradient norm (a
# sum with cancellation) amplify it to 9.9e-6 on one CPU, 1.3e-5 on another: the dtype's noise, at the edge of 1e-5.
# In float64 the order costs ~1e-15 (GRPO, DAPO, RLOO, DPO); what remains is the float32 arithmetic rlx does on
# purpose in both runs (advantages: REINFORCE++'s whitening over the all-reduced batch 3e-8, PPO's GAE and explained
# variance 1.8e-6). So every metric is held to the 1e-5, and a wrong share, normalisation or collective
# cannot hide under it.
F64 = ["model.dtype=float64"]


def torchrun(launch: list[str], script: list[str], env=None, timeout=600):
    cmd = [sys.executable, "-m", "torch.distributed.run", *launch, *script]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def assert_same(a, b, rel=1e-5):
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for x, y in zip(a, b):
        for k, v in x.items():
            if k.startswith("perf/"):
                continue
            assert k in y, (x["step"], k)
            assert abs(v - y[k]) <= rel * max(1.0, abs(v)), (x["step"], k, v, y[k])


@pytest.fixture(scope="module")
def single(tmp_path_factory, warm_tiny):
    """Every case in this process (one rank), in float64."""
    d = tmp_path_factory.mktemp("single")
    for name, overrides in CASES.items():
        rlx.run(rlx.compose([*ARGS, *F64, *overrides]), run_dir=d / name)
    return {name: read_metrics(d / name) for name in CASES}


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
@pytest.mark.slow
def test_two_ranks_equal_one_process(strategy, single, tmp_path):
    cases = {name: [*ARGS, *F64, *o, f"hardware={strategy}"] for name, o in CASES.items()}
    proc = torchrun(["--standalone", "--nproc_per_node", "2"], ["tests/dist_runs.py", str(tmp_path), json.dumps(cases)])
    assert proc.returncode == 0, proc.stderr[-4000:]
    for name in CASES:
        rows = read_metrics(tmp_path / name)
        assert rows[1]["optim/grad_norm"] > 0, name   # a real signal, not zeros
        assert_same(single[name], rows)
        if name != "dpo":   # each rank generated its half of every round: N/world samples
            for one, two in zip(single[name][1:], rows[1:]):
                assert two["perf/rollout_samples_per_rank"] * 2 == one["perf/rollout_samples_per_rank"], name
            G, rounds = rlx.compose(CASES[name]).algo.group_size, single[name][1].get("dapo/gen_rounds", 1.0)
            assert single[name][1]["perf/rollout_samples_per_rank"] == 4 * G * rounds, name
    assert "value/explained_var" in read_metrics(tmp_path / "ppo")[1]   # PPO ran with its critic
    # the 2-rank checkpoint (full state dicts) resumes in one process and continues identically
    resumed = tmp_path / "grpo_resumed"
    shutil.copytree(tmp_path / "grpo", resumed)
    shutil.rmtree(resumed / "checkpoints" / "step_00000004")
    run_cli(ARGS + F64 + ["trainer.resume=true", "hardware=cpu"], run_dir=resumed)   # the saved hardware=ddp needs torchrun
    assert_same(single["grpo"], read_metrics(resumed))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_nodes(run_dir, *extra, env=None, timeout=600):
    """Two torchrun agents, one process each, meeting at a c10d rendezvous on 127.0.0.1: two nodes on one machine.
    Returns [(returncode, stderr, seconds)] of node 0 and node 1."""
    port, procs, t0 = _free_port(), [], time.monotonic()
    for node in (0, 1):
        launch = ["--nnodes", "2", "--node_rank", str(node), "--nproc_per_node", "1", "--rdzv_backend", "c10d",
                  "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "rlx-test", "--max_restarts", "0"]
        cmd = [sys.executable, "-m", "torch.distributed.run", *launch, "-m", "rlx", *ARGS, "hardware=ddp", *extra,
               f"hydra.run.dir={run_dir}"]
        procs.append(subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                      env={**os.environ, **(env or {})}))
    out = []
    for p in procs:
        _, err = p.communicate(timeout=timeout)
        out.append((p.returncode, err, time.monotonic() - t0))
    return out


@pytest.mark.slow
def test_two_nodes_on_loopback_equal_one_process(single, tmp_path):
    (rc0, err0, _), (rc1, err1, _) = _two_nodes(tmp_path, *F64)
    assert rc0 == 0 and rc1 == 0, (err0[-3000:], err1[-3000:])
    assert_same(single["grpo"], read_metrics(tmp_path))


@pytest.mark.slow
def test_a_dead_rank_takes_the_others_down(tmp_path):
    # node 1's only rank is SIGKILLed at the start of step 2; node 0's rank waits in a collective for it and must
    # fail (not hang) within hardware.timeout_s, so both agents exit non-zero
    timeout_s = 60
    (rc0, err0, t0), (rc1, _, _) = _two_nodes(tmp_path, f"hardware.timeout_s={timeout_s}",
                                              env={"RLX_FAULT": "kill_rank@2:1"}, timeout=300)
    assert rc1 != 0 and rc0 != 0, err0[-3000:]
    assert t0 < timeout_s + 60, t0   # start-up and the first step, then at most the collective timeout


@pytest.mark.slow
def test_two_ranks_build_the_embedded_model_once_in_an_empty_cache(tmp_path):
    # a new user's first torchrun: no cached embedded model. Rank 0 builds it (a short warm start here: a recipe of its
    # own, so a cache entry of its own), the other rank waits for it, and the cache entry is complete. (Before, either
    # rank could build, and transformers' save_pretrained writes no weights on a rank other than 0: whenever rank 1
    # built first the entry had no config.json and both ranks failed to load it.)
    recipe = ["model.warm_start.dev_target=0.99", "model.warm_start.max_steps=20"]   # stops at 20 steps
    cache = tmp_path / "cache"
    proc = torchrun(["--standalone", "--nproc_per_node", "2"],
                    ["-m", "rlx", *ARGS, "trainer.steps=1", "hardware=ddp", *recipe, f"hydra.run.dir={tmp_path / 'run'}"],
                    env={"RLX_CACHE": str(cache)})
    assert proc.returncode == 0, proc.stderr[-4000:]
    entries = [p for p in cache.iterdir() if p.name.startswith("tiny-")]
    assert len(entries) == 1 and {"config.json", "model.safetensors", "rlx_build.json"} <= {
        p.name for p in entries[0].iterdir()}


def test_a_bad_launch_exits_2(tmp_path):
    proc = run_cli(["hardware=ddp"], run_dir=tmp_path / "x", check=False)
    assert proc.returncode == 2 and "without torchrun" in proc.stderr and "torchrun --nproc_per_node" in proc.stderr
    from rlx.config.preflight import PreflightError, check_launch

    cfg = rlx.compose(["hardware=ddp", "data.prompts_per_step=5"])
    with pytest.raises(PreflightError, match=r"data.prompts_per_step=5 is not divisible by the world size 2") as e:
        check_launch(cfg, env={"WORLD_SIZE": "2"})
    assert "data.prompts_per_step=6" in e.value.hint
    check_launch(rlx.compose(["hardware=ddp", "data.prompts_per_step=5", "rollout.shard=false"]), env={"WORLD_SIZE": "2"})
    check_launch(cfg, env={"WORLD_SIZE": "1", "RANK": "0"})   # torchrun with one process: nothing to share
    assert not (tmp_path / "x").exists()
