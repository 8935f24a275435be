"""torchrun with 2 gloo ranks (ddp and FSDP2) equals one process with the same global batch, and a
checkpoint written by 2 ranks resumes on 1."""

import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO, read_metrics, run_cli

ARGS = ["trainer.steps=5", "data.prompts_per_step=4", "trainer.progress=false", "trainer.eval_every=0",
        "trainer.micro_batch_size=4", "trainer.mini_batch_size=16", "trainer.update_epochs=2",
        "hardware.num_threads=1", "trainer.save_every=2"]


def torchrun(args, run_dir):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "rlx",
           *args, f"hydra.run.dir={run_dir}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr[-4000:]


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
    d = tmp_path_factory.mktemp("single")
    run_cli(ARGS, run_dir=d)
    return read_metrics(d)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
@pytest.mark.slow
def test_two_ranks_equal_one_process(strategy, single, tmp_path):
    torchrun(ARGS + [f"hardware={strategy}"], tmp_path)
    rows = read_metrics(tmp_path)
    assert rows[1]["optim/grad_norm"] > 0 and rows[1]["policy/clip_frac"] >= 0  # a real signal, not zeros
    assert_same(single, rows)
    if strategy == "fsdp":
        # the 2-rank checkpoint (full state dicts) resumes in one process and continues identically
        resumed = tmp_path.parent / f"{tmp_path.name}_resumed"
        shutil.copytree(tmp_path, resumed)
        shutil.rmtree(resumed / "checkpoints" / "step_00000004")
        run_cli(ARGS + ["trainer.resume=true"], run_dir=resumed)
        assert_same(single, read_metrics(resumed))
