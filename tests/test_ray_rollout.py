"""rollout.engine=ray (rlx/rollout/ray_actors.py): 2 Ray actors on a local ray.init() generate what the in-process
engine generates, token for token (per-prompt random streams), follow the policy's weights after sync_weights, and
a 3-step GRPO run with them equals the same run with the in-process engine."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import read_metrics
from omegaconf import OmegaConf

import rlx
from rlx.rollout import streams
from rlx.rollout.hf import HFEngine

pytestmark = pytest.mark.slow
CFG = OmegaConf.create({"max_new_tokens": 6, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "engine_logprobs": False})


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_actors_generate_what_the_in_process_engine_generates(ray_local, tiny):
    from rlx.rollout.ray_actors import RayEngine

    model, tok = tiny
    model = copy.deepcopy(model)
    here, actors = HFEngine(model, tok, CFG), RayEngine(model, tok, CFG, actors=2)
    prompts = ["1+2=", "37+48=", "5-9=", "12*3=", "7+7="]
    keys = streams.prompt_keys(0, 1, 0, len(prompts))
    a, b = here.generate(prompts, n=3, keys=keys), actors.generate(prompts, n=3, keys=keys)
    assert a.texts == b.texts and torch.equal(a.response_mask, b.response_mask[:, :a.response_mask.shape[1]])
    assert torch.equal(a.prompt_ids, b.prompt_ids) and b.gen_tokens == a.gen_tokens
    # the actors sample from the weights last synced: move the policy, sync, and greedy decodes agree again
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    actors.sync_weights(model)
    assert actors.generate(prompts, greedy=True).texts == here.generate(prompts, greedy=True).texts


def test_a_run_with_ray_actors_equals_the_in_process_run(ray_local, tmp_path, warm_tiny):
    args = ["trainer.steps=3", "trainer.progress=false", "trainer.eval_every=0", "hardware.num_threads=1",
            "data.prompts_per_step=4", "data.eval_size=16"]
    rlx.run(rlx.compose(args), run_dir=tmp_path / "hf")
    rlx.run(rlx.compose([*args, "rollout.engine=ray"]), run_dir=tmp_path / "ray")
    a, b = read_metrics(tmp_path / "hf"), read_metrics(tmp_path / "ray")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [0, 1, 2, 3]
    for x, y in zip(a, b):
        for k, v in x.items():
            if not k.startswith("perf/"):
                assert y[k] == pytest.approx(v, rel=1e-6, abs=1e-9), (x["step"], k)
