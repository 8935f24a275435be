"""Sampled completions (``trainer.log_samples_every``, rlx.track.samples): the rows by hand, the file
after a resume, the trainer hook, and a real run whose samples.jsonl holds the rollout's own prompts
and rewards while every metric equals the same run's without sample logging."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
from conftest import FAST, read_metrics, run_cli
from omegaconf import OmegaConf

from rlx.track.samples import SampleLog, log_samples, record_samples, sample_rows

SCORED = {"total": [1.0, 0.0, math.nan, 0.5, 1.0, 1.0], "score": [1.0, 0.0, 0.0, 0.5, 1.0, 1.0],
          "terms": {"correct": [1.0, 0.0, math.nan, 0.5, 1.0, 1.0], "format": [1.0, 1.0, 0.0, 1.0, 1.0, 1.0]},
          "failed": [False, False, True, False, False, False]}
PROMPTS = ["1+1=", "1+1=", "2+2=", "2+2=", "3+3=", "3+3="]   # B = 3 prompts x G = 2, as scored
TEXTS = ["2", "3", "?", "4", "6", "6"]


def test_rows_by_hand():
    rows = sample_rows(7, PROMPTS, TEXTS, SCORED, k=2)
    assert rows == [
        {"step": 7, "prompt": "1+1=", "completions": ["2", "3"], "rewards": [1.0, 0.0],
         "terms": {"correct": [1.0, 0.0], "format": [1.0, 1.0]}},
        {"step": 7, "prompt": "2+2=", "completions": ["?", "4"], "rewards": [None, 0.5],   # NaN -> null
         "terms": {"correct": [None, 0.5], "format": [0.0, 1.0]}},
    ]


def test_backends_get_the_rows_and_resume_drops_later_steps(tmp_path):
    got = []
    backend = SimpleNamespace(log_samples=lambda rows, step: got.append((step, rows)))
    trackers = SimpleNamespace(backends=[SimpleNamespace(backend=backend, _call=lambda m, *a: getattr(backend, m)(*a))])
    log = SampleLog(tmp_path)
    for step in (2, 4, 6):
        log_samples(trackers, log, step, PROMPTS, TEXTS, SCORED)
    assert [s for s, _ in got] == [2, 4, 6] and len(got[0][1]) == 3
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert steps == [2] * 3 + [4] * 3 + [6] * 3
    # resumed from the step-4 checkpoint: the next write (step 6 again) replaces the killed run's step 6
    log = SampleLog(tmp_path)
    log_samples(SimpleNamespace(), log, 6, PROMPTS[:2], TEXTS[:2], SCORED)
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert steps == [2] * 3 + [4] * 3 + [6]


@pytest.mark.parametrize("every,step,main,written", [(2, 4, True, True), (2, 3, True, False), (0, 4, True, False),
                                                      (2, 4, False, False)])
def test_trainer_hook_cadence(tmp_path, every, step, main, written):
    trainer = SimpleNamespace(cfg=OmegaConf.create({"trainer": {"log_samples_every": every}}), step=step,
                              dist=SimpleNamespace(is_main=main), run_dir=tmp_path, trackers=SimpleNamespace(),
                              last_scored=(PROMPTS, TEXTS, SCORED))
    record_samples(trainer, None)
    assert (tmp_path / "samples.jsonl").exists() == written


def test_config_default():
    import rlx

    assert rlx.compose([]).trainer.log_samples_every == 50


@pytest.mark.slow
def test_run_writes_samples_and_changes_no_metric(tmp_path):
    args = ["trainer.steps=3", "data.prompts_per_step=4", "hardware.num_threads=1", *FAST]
    run_cli([*args, "trainer.log_samples_every=2"], run_dir=tmp_path / "on")
    run_cli([*args, "trainer.log_samples_every=0"], run_dir=tmp_path / "off")
    assert not (tmp_path / "off" / "samples.jsonl").exists()
    rows = [json.loads(ln) for ln in (tmp_path / "on" / "samples.jsonl").read_text().splitlines()]
    G = OmegaConf.load(tmp_path / "on" / "config.yaml").algo.group_size
    assert [r["step"] for r in rows] == [2] * 4 and len({r["prompt"] for r in rows}) == 4
    assert all(len(r["completions"]) == len(r["rewards"]) == G for r in rows)
    assert set(rows[0]["terms"]) >= {"correct"} and all(len(v) == G for v in rows[0]["terms"].values())
    # B = 4 prompts, all 4 recorded: they are the step's whole rollout, so their rewards average to reward/mean
    step2 = next(r for r in read_metrics(tmp_path / "on") if r["step"] == 2)
    flat = [x for r in rows for x in r["rewards"]]
    assert sum(flat) / len(flat) == pytest.approx(step2["reward/mean"], abs=1e-6)
    # recording draws nothing: every metric but timings and memory is identical
    def strip(rs):
        return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in rs]
    assert strip(read_metrics(tmp_path / "on")) == strip(read_metrics(tmp_path / "off"))
