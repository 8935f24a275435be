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


# ---------------------------------------------------------------- <run dir>/console.log


def _console(run_dir=None, progress=False, log_every=2):
    return Console(OmegaConf.create({"trainer": {"progress": progress, "log_every": log_every}}), run_dir)


def test_console_lines_are_also_appended_to_the_run_dirs_console_log(tmp_path, capsys):
    console = _console().attach(tmp_path)
    console.print("[rlx] lean forward: on")
    console.start(0, 3, {"eval/arithmetic/accuracy": 0.25})
    for step in (1, 2, 3):
        console.update(step, {"reward/mean": 0.5 * step, "policy/kl_ref": 0.01})
    console.stop()
    summary = {"steps": 3, "wall_s": 4.0, "run_dir": str(tmp_path), "initial": {"eval/arithmetic/accuracy": 0.25},
               "final": {"eval/arithmetic/accuracy": 0.5}}
    console.print(console.closing_line(summary))
    expected = ["[rlx] lean forward: on",
                "[rlx] step 2/3  reward 1.000  kl 0.010  acc 0.250",      # log_every=2, and the last step
                "[rlx] step 3/3  reward 1.500  kl 0.010  acc 0.250",
                "eval/arithmetic/accuracy 0.25 -> 0.50 in 3 steps (4 s)", f"run dir: {tmp_path}"]
    assert capsys.readouterr().err.splitlines() == expected             # the log holds the lines as printed
    assert (tmp_path / "console.log").read_text().splitlines() == expected
    _console(tmp_path).print("[rlx] resumed from x")                     # a resumed run appends
    assert (tmp_path / "console.log").read_text().splitlines()[-1] == "[rlx] resumed from x"


def test_the_log_gets_the_step_lines_while_the_live_bar_replaces_them_on_screen(tmp_path, capsys):
    console = _console(tmp_path, progress=True)
    console.enabled = True                                              # as on a terminal
    console.start(0, 2, {})
    console.update(1, {"reward/mean": 0.1})
    console.print("[rlx] step 1: non-finite loss; update skipped")      # printed above the bar
    console.update(2, {"reward/mean": 0.2})
    console.stop()
    assert "[rlx] step 2/2" not in capsys.readouterr().err
    assert (tmp_path / "console.log").read_text().splitlines() == [
        "[rlx] step 1: non-finite loss; update skipped", "[rlx] step 2/2  reward 0.200"]


def test_without_a_run_dir_or_on_other_ranks_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _console().print("[rlx] x")
    muted = _console(tmp_path / "rank1")
    muted.mute()
    muted.attach(tmp_path / "rank1")
    muted.print("[rlx] y")
    muted.start(0, 2, {})
    muted.update(2, {"reward/mean": 0.1})
    assert list(tmp_path.iterdir()) == []


def test_the_trackers_say_where_they_write_on_stderr_and_in_the_log(tmp_path, capsys):
    from rlx.track import Trackers

    cfg = OmegaConf.create({"tracker": {"backends": ["nope"]}})        # a backend that cannot start
    trackers = Trackers(cfg, tmp_path)
    trackers.close()
    err = capsys.readouterr().err
    assert "[rlx] tracker 'nope' could not start" in err
    assert (tmp_path / "console.log").read_text() == err


def test_a_run_writes_its_console_lines_to_console_log(tmp_path):
    """Through ``rlx.run``: the trainer's console is attached to the run dir (rlx/trainers/base.py)."""
    import rlx

    summary = rlx.run(rlx.compose(["trainer.steps=2", "trainer.log_every=1", "data.prompts_per_step=2",
                                   "algo.group_size=2", "data.eval_size=4", "hardware.num_threads=1",
                                   "model.init=random", "trainer.progress=false"]), tmp_path)
    lines = (tmp_path / "console.log").read_text().splitlines()
    assert any(ln.startswith("[rlx] lean forward:") for ln in lines)
    assert [ln.split("  ")[0] for ln in lines if ln.startswith("[rlx] step ")] == ["[rlx] step 1/2", "[rlx] step 2/2"]
    assert lines[-1] == f"run dir: {tmp_path}" and lines[-2].startswith("eval/arithmetic/accuracy ")
    assert lines[-2].endswith(f"in {summary['steps']} steps ({summary['wall_s']:.0f} s)")
