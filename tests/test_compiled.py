"""hardware.compile (rlx/models/compiled.py): the compiled decoder layers give the eager path's metrics within float32
rounding on short GRPO and DPO runs, compile time is logged apart from the step, and the auto setting says why."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import read_metrics, run_main

from rlx.models import compiled

# Inductor fuses element-wise ops and may reorder float32 reductions: the compiled run differs from the eager one at
# float32 rounding (measured: at most 1.4e-6 relative over 4 GRPO steps), which the update then carries.
RTOL, ATOL = 1e-5, 1e-7
SKIP = ("perf/", "time/", "sys/", "health/")   # timings and memory differ by nature


def _compare(eager: list[dict], comp: list[dict]) -> None:
    assert len(eager) == len(comp) >= 3
    for a, b in zip(eager, comp):
        keys = [k for k, v in a.items() if isinstance(v, (int, float)) and not k.startswith(SKIP)]
        assert keys and set(keys) <= set(b)
        for k in keys:
            x, y = float(a[k]), float(b[k])
            assert (math.isnan(x) and math.isnan(y)) or abs(x - y) <= ATOL + RTOL * abs(x), (a.get("step"), k, x, y)


@pytest.mark.parametrize("args", [
    ["trainer.steps=3"],
    ["algo=dpo", "data.prompts_per_step=4", "data.train_size=16", "data.responses_per_prompt=2", "trainer.steps=3"],
], ids=["grpo", "dpo"])
def test_compiled_layers_equal_the_eager_path(tmp_path, args):
    common = [*args, "trainer.eval_every=0", "hardware.num_threads=1"]
    run_main([*common, "hardware.compile=false"], tmp_path / "eager")
    run_main([*common, "hardware.compile=true"], tmp_path / "compiled")
    eager, comp = read_metrics(tmp_path / "eager"), read_metrics(tmp_path / "compiled")
    _compare(eager[1:], comp[1:])   # row 0: the step-0 evaluation
    assert "[rlx] compile: on" in (tmp_path / "compiled.log").read_text()
    assert "[rlx] compile: off (hardware.compile=false)" in (tmp_path / "eager.log").read_text()
    # compile time is counted where it happens (the first step), apart from later steps; the eager run compiles nothing
    assert comp[1]["perf/compile_s"] > 0 and all(r["perf/compile_s"] == 0 for r in eager[1:])
    assert all(r["perf/compile_s"] < comp[1]["perf/compile_s"] for r in comp[2:])


def test_compiled_layers_under_autocast_with_a_bf16_reference(tmp_path):
    """bf16 autocast stores the reference's linear weights in bf16 (speed.bf16_linear_reference); turning the compiled
    layers on must not run the lean forward's self-check on that reference outside autocast (it crashed at start).
    The crash is in rlx's start-up, whatever the backend: ``aot_eager`` traces the same graphs without inductor's
    code generation (~45 s of a cold cache here)."""
    args = ["algo=dpo", "data.prompts_per_step=4", "data.train_size=16", "data.responses_per_prompt=2",
            "trainer.steps=2", "trainer.eval_every=0", "hardware.num_threads=1", "hardware.autocast=true"]
    run_main([*args, "hardware.compile=true", "hardware.compile_backend=aot_eager"], tmp_path / "compiled")
    rows = read_metrics(tmp_path / "compiled")[1:]
    assert "[rlx] compile: on (decoder layers, backend aot_eager;" in (tmp_path / "compiled.log").read_text()
    assert rows[0]["perf/compile_s"] > 0 and all(math.isfinite(r["loss/total"]) for r in rows)


def test_auto_setting_is_off_on_the_cpu_and_says_why():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert "off on the CPU" in compiled.why_not(None, cpu, lean_on=True)
    assert compiled.why_not(True, cpu, lean_on=True) is None
    assert compiled.why_not(False, cuda, lean_on=True) == "hardware.compile=false"
    assert "not measured there yet" in compiled.why_not(None, cuda, lean_on=True)   # until gpu_check.sh has
    assert "lean forward is off" in compiled.why_not(True, cpu, lean_on=False)
    assert compiled.apply((), False, cpu, True) == "[rlx] compile: off (hardware.compile=false)"
    # the backend: inductor needs a C++ compiler on the CPU, aot_eager does not; cudagraphs needs CUDA
    assert compiled.why_not(True, cpu, lean_on=True, backend="aot_eager") is None
    assert "needs a CUDA device" in compiled.why_not(True, cpu, lean_on=True, backend="cudagraphs")


def test_a_misspelt_compile_backend_is_a_config_error():
    from rlx.config import ConfigError, check_cli

    with pytest.raises(ConfigError, match="hardware.compile_backend='inductr': not a valid choice; did you mean "
                                          "'inductor'"):
        check_cli(["hardware.compile_backend=inductr"])
