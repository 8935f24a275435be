"""The run's closing lines: the eval change, failures only when some sample failed, and where the run dir is."""

from omegaconf import OmegaConf

from rlx.runtime.console import Console


def test_the_closing_lines_end_with_the_run_dir():
    console = Console(OmegaConf.create({"trainer": {"progress": False, "log_every": 10}}))
    summary = {"steps": 500, "wall_s": 120.4, "run_dir": "outputs/grpo/tiny/x",
               "initial": {"eval/arithmetic/accuracy": 0.19, "eval/arithmetic/failures": 0.0},
               "final": {"eval/arithmetic/accuracy": 0.552, "eval/arithmetic/failures": 0.0}}
    assert console.closing_line(summary).splitlines() == [
        "eval/arithmetic/accuracy 0.19 -> 0.55 in 500 steps (120 s)", "run dir: outputs/grpo/tiny/x"]
    summary["final"]["eval/arithmetic/failures"] = 3.0
    assert "eval/arithmetic/failures 0.00 -> 3.00" in console.closing_line(summary)
