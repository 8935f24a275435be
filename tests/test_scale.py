"""Model presets, LoRA with the adapter-disabled reference, and the memory plan."""

import copy

import pytest
import torch
from conftest import FAST, REPO, read_metrics, run_cli
from omegaconf import OmegaConf

import rlx
from rlx.config import group_choices
from rlx.models import make_reference, prepare
from rlx.models.logprobs import token_logprobs
from rlx.models.memory import MemoryPlanError, check, estimate


def _batch(tok):
    enc = tok(["3+4=7", "12+85=97"], return_tensors="pt", padding=True, add_special_tokens=False)
    return enc["input_ids"], enc["attention_mask"]


def test_lora_reference_is_the_base_model(tiny):
    base, tok = tiny
    base = copy.deepcopy(base)
    lora_cfg = OmegaConf.create({"name": "tiny", "lora": {"rank": 4, "alpha": 8, "dropout": 0.0,
                                                          "target_modules": ["q_proj", "v_proj"]}})
    policy = prepare(copy.deepcopy(base), lora_cfg, log=lambda *_: None)
    counts = policy.rlx_param_counts
    assert 0 < counts["model/trainable_params"] < counts["model/params"] / 10
    # move the adapter away from its zero init so the policy differs from the base model
    with torch.no_grad():
        for p in policy.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    ref = make_reference(policy)
    ids, am = _batch(tok)
    with torch.no_grad():
        want, _ = token_logprobs(base.eval(), ids, am, 3)
        got, _ = token_logprobs(ref, ids, am, 3)
        pol, _ = token_logprobs(policy, ids, am, 3)
    assert torch.allclose(got, want, atol=1e-6)
    assert not torch.allclose(pol, want, atol=1e-3)
    # the adapter is enabled again after the reference forward
    with torch.no_grad():
        again, _ = token_logprobs(policy, ids, am, 3)
    assert torch.allclose(again, pol)


@pytest.mark.slow
def test_lora_run_logs_trainable_params(tmp_path):
    run_cli(["trainer.steps=2", "data.prompts_per_step=4", "model.lora.rank=4", *FAST], run_dir=tmp_path)
    first = read_metrics(tmp_path)[0]
    assert 0 < first["model/trainable_params"] < first["model/params"]


@pytest.mark.parametrize("preset", [m for m in group_choices("model") if m != "tiny"])
def test_presets_compose_with_architecture(preset):
    cfg = rlx.compose([f"model={preset}"])
    assert cfg.model.source == "hub" and "/" in cfg.model.hub_id
    plan = estimate(cfg, needs_ref=True)
    assert plan["params"] > 4e8  # 0.5B and up, counted on the meta device from model.arch


def test_memory_plan_refuses_what_cannot_fit():
    cfg = rlx.compose(["model=llama3_8b", "model.lora.rank=0", "model.dtype=float32", "algo.beta=0.04"])
    # 8.0B params in fp32 with a reference copy, grads and AdamW: ~150 GB, more than this machine has
    with pytest.raises(MemoryPlanError, match="llama3_8b"):
        check(cfg, needs_ref=True, log=lambda *_: None)


def _documented_command(name: str) -> list[str]:
    """The command line a sweep file's header documents (its first ``python -m rlx`` line), as argv."""
    import shlex

    line = next(ln for ln in (REPO / "sweeps" / f"{name}.yaml").read_text().splitlines() if "python -m rlx" in ln)
    return shlex.split(line.split("python -m rlx", 1)[1].split("#")[0])


def test_slurm_sweep_command_as_documented_checks_every_job():
    # the documented command, checked as the CLI checks it: every job of the sweep composes and validates on this
    # machine, and the launcher is the cluster's. The file sets hydra.mode MULTIRUN, so the same command without -m
    # is the same sweep; a comma list outside a sweep file without -m is refused (Hydra would take it as one value).
    from rlx.config import ConfigError, check_cli
    from rlx.config.compose import _compose_raw

    argv = _documented_command("slurm")
    cfgs = check_cli(argv)   # each value of each swept key once (rlx/config/compose.py _jobs)
    assert {c.model.name for c in cfgs} == {"qwen7b"}
    assert {c.algo.name for c in cfgs} == {"grpo", "dapo", "gspo"} and {c.seed for c in cfgs} == {0, 1, 2}
    launcher = _compose_raw([], "slurm", str(REPO / "sweeps"), hydra=True).hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.gpus_per_node == 8
    without_m = check_cli([a for a in argv if a != "-m"])
    assert [(c.algo.name, c.seed) for c in without_m] == [(c.algo.name, c.seed) for c in cfgs]
    with pytest.raises(ConfigError, match="needs -m"):
        check_cli(["algo=grpo,dapo"])
    with pytest.raises(ConfigError, match="needs -m"):   # a run dir with a comma is a sweep to Hydra too
        check_cli(["hydra.run.dir=/tmp/a,b"])
    assert len(check_cli(["trainer.betas=[0.9,0.95]"])) == 1   # a list value is no sweep


@pytest.mark.slow
def test_ray_sweep_runs_every_job_on_a_local_ray_instance(tmp_path, warm_tiny):
    # sweeps/ray.yaml as documented (rlx's own Ray launcher, hydra_plugins/rlx_ray_launcher), on a local Ray instance
    # of 2 CPUs, one CPU a job: both jobs run as Ray tasks, the sweep callback sees both, and a job's metrics equal the
    # same run in this process (a job is the run, not an approximation of it)
    import json

    argv = [a for a in _documented_command("ray") if a != "-m" and not a.startswith(("algo=", "seed="))]
    run = ["trainer.steps=2", "trainer.eval_every=0", "hardware.num_threads=1", "data.prompts_per_step=4"]
    sweep = ["seed=0,1", *run, "hydra.launcher.num_cpus=2", "hydra.launcher.cpus_per_job=1",
             "hydra.launcher.gpus_per_job=0", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    proc = run_cli([*argv, *sweep], timeout=600)
    assert "Ray (2 CPUs) is launching 2 jobs" in proc.stderr + proc.stdout
    summary = json.loads((tmp_path / "sweep" / "sweep_summary.json").read_text())
    assert [j["status"] for j in summary["jobs"]] == ["completed", "completed"], summary
    rlx.run(rlx.compose(["seed=1", *run]), run_dir=tmp_path / "here")
    job, here = read_metrics(tmp_path / "sweep" / "1_grpo_s1"), read_metrics(tmp_path / "here")
    assert [r["step"] for r in job] == [r["step"] for r in here] == [0, 1, 2]
    for a, b in zip(job, here):
        assert {k: v for k, v in a.items() if not k.startswith("perf/")} == \
               {k: v for k, v in b.items() if not k.startswith("perf/")}


def test_vllm_engine_says_what_it_needs(tiny):
    from rlx.registry import ENGINES

    cfg = rlx.compose(["hardware=vllm"])
    assert cfg.rollout.engine == "vllm" and cfg.hardware.device == "cuda"
    try:
        import vllm  # noqa: F401
        pytest.skip("vLLM is installed: the engine itself is exercised by benchmarks/gpu_check.sh")
    except ImportError:
        pass
    model, tok = tiny
    with pytest.raises(ImportError, match="pip install vllm"):
        ENGINES.get("vllm")(cfg.rollout, model, tok)
