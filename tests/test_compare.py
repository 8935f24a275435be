"""The comparison dashboard (numbers by hand, rendering in headless Chromium) and sweeps (the files in
sweeps/ compose; a sweep in which one job raises and one is SIGKILLed finishes the others and reports)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO
from omegaconf import OmegaConf

from rlx.config import validate
from rlx.config.compose import _check_overrides, _compose_raw, _jobs
from rlx.report import compare
from rlx.report.png import COLORS
from rlx.sweep import sweep_group, threads_per_job

# Two arms x two seeds, small enough to check by hand (steps 0-4; eval at 0, 2, 4).
ARMS = {
    ("grpo", 0): dict(eval=[0.2, 0.4, 0.6], reward=[0.2, 0.4, 0.6, 0.8], entropy=[1.0, 0.8, 0.6, 0.4],
                      kl=[0.0, 0.02, 0.04, 0.06], length=[6.0, 5.0, 4.0, 3.0], wall=10.0),
    ("grpo", 1): dict(eval=[0.2, 0.6, 0.8], reward=[0.4, 0.4, 0.8, 0.8], entropy=[1.0, 1.0, 0.8, 0.8],
                      kl=[0.0, 0.0, 0.02, 0.02], length=[8.0, 8.0, 6.0, 6.0], wall=14.0),
    ("dapo", 0): dict(eval=[0.1, 0.3, 0.4], reward=[0.1, 0.2, 0.3, 0.4], wall=20.0),
    ("dapo", 1): dict(eval=[0.3, 0.3, 0.4], reward=[0.3, 0.3, 0.3, 0.4], wall=22.0),
}


def write_run(d: Path, algo: str, seed: int, arm: dict) -> None:
    d.mkdir(parents=True)
    rows = []
    for step in range(5):
        row = {"step": step}
        if step % 2 == 0:
            row["eval/arithmetic/accuracy"] = arm["eval"][step // 2]
        if step:
            row["reward/mean"] = arm["reward"][step - 1]
            row["response_length/mean"] = arm["length"][step - 1] if "length" in arm else 4.0
            row["policy/clip_frac"] = 0.0
            if "entropy" in arm:
                row["policy/entropy"], row["policy/kl_ref"] = arm["entropy"][step - 1], arm["kl"][step - 1]
        rows.append(row)
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "config.yaml").write_text(OmegaConf.to_yaml({"algo": {"name": algo, "beta": 0.04 if algo == "grpo" else 0.0},
                                                      "seed": seed, "trainer": {"steps": 4}}))
    (d / "summary.json").write_text(json.dumps({"steps": 4, "wall_s": arm["wall"], "final": {}}))


@pytest.fixture
def sweep_dir(tmp_path):
    for i, ((algo, seed), arm) in enumerate(ARMS.items()):
        write_run(tmp_path / "sweep" / f"{i}_{algo}_s{seed}", algo, seed, arm)
    killed = tmp_path / "sweep" / "4_grpo_s2"   # a job killed after step 1: partial metrics, no summary
    write_run(killed, "grpo", 2, ARMS[("grpo", 0)])
    (killed / "summary.json").unlink()
    (killed / "job_status.json").write_text(json.dumps({"status": "killed", "reason": "killed by SIGKILL"}))
    return tmp_path / "sweep"


@pytest.mark.slow
def test_summary_table_by_hand(sweep_dir, tmp_path):
    out = tmp_path / "report"
    result = compare.build_report([compare.load_run_dir(d) for d in compare.find_run_dirs([sweep_dir])], out)
    assert result["keys"] == ["algo.name"]            # seeds share a group; beta follows the algorithm
    assert result["failed"] == ["4_grpo_s2"]
    md = (out / "report.md").read_text()
    # grpo: final acc 0.6, 0.8 -> 0.700 ± 0.141 (std with n-1: sqrt(0.01 + 0.01)); >= 0.5 first at steps 4
    # and 2 -> 3 (2/2); wall (10 + 14) / 2 = 12; entropy: mean of all 4 steps per run 0.7, 0.9 -> 0.80 ±
    # 0.14; KL 0.03, 0.01 -> 0.0200 ± 0.0141; response length at step 1: 6, 8 -> 7.0; over the last (all 4)
    # steps: 4.5, 7.0 -> 5.75, printed 5.8.
    assert ("| grpo | 2 | 0.200 ± 0.000 | 0.700 ± 0.141 | 3 (2/2) | 4 | 12 | 0.80 ± 0.14 | 0.0200 ± 0.0141 "
            "| 7.0 → 5.8 |") in md
    # dapo: start 0.1, 0.3 -> 0.200 ± 0.141; final 0.4, 0.4; never reaches 0.5; no entropy/KL logged; length 4.
    assert "| dapo | 2 | 0.200 ± 0.141 | 0.400 ± 0.000 | – | 4 | 21 | – | – | 4.0 → 4.0 |" in md
    assert "| 4_grpo_s2 | killed | killed by SIGKILL |" in md
    for name in ("report.html", "report.png"):
        assert (out / name).stat().st_size > 5_000


def test_curves_mean_band_and_smoothing(sweep_dir):
    runs = [compare.load_run_dir(d) for d in sorted(sweep_dir.glob("[01]_grpo_*"))]
    agg = compare.aggregate(runs, "reward/mean")
    assert agg["steps"] == [1, 2, 3, 4] and agg["n"] == [2, 2, 2, 2]
    # step 1: 0.2 and 0.4 -> mean 0.3, std 0.1414 -> band [0.1586, 0.4414]
    assert agg["mean"][0] == pytest.approx(0.3) and agg["lo"][0] == pytest.approx(0.3 - 0.02 ** 0.5)
    assert agg["hi"][0] == pytest.approx(0.3 + 0.02 ** 0.5)
    assert compare.smooth([1.0, 2.0, 3.0, 4.0], 2) == [1.0, 1.5, 2.5, 3.5]
    # smoothing is linear: smoothing each run then averaging = averaging then smoothing
    sm = compare.aggregate(runs, "reward/mean", window=2)
    assert sm["mean"] == pytest.approx(compare.smooth(agg["mean"], 2))


def test_html_renders_in_headless_chromium(sweep_dir, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's `chromium` is not installed (.ci/run installs it with apt-get where it can)")
    out = tmp_path / "report"
    compare.build_report([compare.load_run_dir(d) for d in compare.find_run_dirs([sweep_dir])], out)
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr",
             "--log-level=0", "--virtual-time-budget=5000", f"--user-data-dir={tmp_path / 'profile'}"]

    def dom(page: Path):
        """The <html> tag after the scripts ran, the whole DOM, and Chromium's log (console included)."""
        p = subprocess.run(flags + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=90)
        tag = re.search(r"<html[^>]*>", p.stdout)
        return (tag.group(0) if tag else ""), p.stdout, p.stderr

    # the harness sees a script error (control): the same page with one broken call appended
    broken = out / "broken.html"
    broken.write_text((out / "report.html").read_text().replace("</body>", "<script>notDefined();</script></body>"))
    root, html, log = dom(broken)
    assert "data-js-errors" in root and "Uncaught ReferenceError" in log

    root, html, log = dom(out / "report.html")
    assert 'data-rendered="6"' in root and "data-js-errors" not in root, root
    assert "Uncaught" not in log and ':ERROR:CONSOLE' not in log
    # a band and a mean line per panel and group that logged it: 3 panels x 2 groups + entropy and KL x grpo;
    # the evaluations are points (no eval size in these configs: no error bars)
    assert html.count("<path") == (3 * 2 + 2) * 2
    assert html.count('class="evalpt"') == 3 * 2 and 'class="errbar"' not in html

    shot = tmp_path / "shot.png"
    subprocess.run(flags + ["--window-size=1300,1000", f"--screenshot={shot}", (out / "report.html").as_uri()],
                   capture_output=True, timeout=90, check=True)
    import matplotlib.image

    img = (matplotlib.image.imread(shot)[..., :3] * 255).round().astype(int)
    non_white = (img < 245).any(-1).mean()
    assert non_white > 0.03, f"screenshot nearly blank ({non_white:.3%} non-white pixels)"
    for hex_color in COLORS[:2]:   # both groups' curves were drawn in their colours
        rgb = [int(hex_color[i:i + 2], 16) for i in (1, 3, 5)]
        assert (abs(img - rgb).sum(-1) <= 6).sum() > 200, f"no {hex_color} pixels in the screenshot"


def write_samples(sweep_dir: Path) -> None:
    """samples.jsonl at steps 2 and 4 in every completed run: the same prompts in every group (same seed)."""
    for d in sweep_dir.iterdir():
        algo = d.name.split("_")[1]
        rows = [{"step": s, "prompt": f"{s}+{i}=", "completions": [f"{algo}-{s}-{i}-a", f"{algo}-{s}-{i}-<b>"],
                 "rewards": [1.0, None], "terms": {"correct": [1.0, None]}} for s in (2, 4) for i in (1, 2)]
        (d / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_html_has_metric_picker_x_axes_and_samples(sweep_dir, tmp_path):
    """Without a browser: every logged metric is in the page's data, the x-axes are there per group, and
    the samples section sets both groups' completions of one prompt in one row (escaped)."""
    write_samples(sweep_dir)
    runs = [compare.load_run_dir(d) for d in compare.find_run_dirs([sweep_dir])]
    compare.build_report(runs, tmp_path)
    page = (tmp_path / "report.html").read_text()
    data = json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S).group(1))
    assert data["metrics"] == ["eval/arithmetic/accuracy", "policy/clip_frac", "policy/entropy", "policy/kl_ref",
                               "response_length/mean", "reward/mean"]
    assert 'id="picker"' in page and 'id="xaxis"' in page
    # samples seen = step x prompts_per_step x group_size: the fixture's configs have neither -> no such axis
    assert data["xmap"]["samples"] == {}
    assert "<h2 id='samples'>Samples</h2>" in page
    row = re.search(r"<tr data-step='4'><td>4</td><td class='c'>4\+1=</td>(.*?)</tr>", page, re.S).group(1)
    assert "grpo-4-1-a" in row and "dapo-4-1-a" in row and "grpo-4-1-&lt;b&gt;" in row and "[reward –" in row


def test_x_axes_by_hand(sweep_dir):
    runs = [compare.load_run_dir(d) for d in sorted(sweep_dir.glob("[01]_grpo_*"))]
    runs[0].cfg.update({"data.prompts_per_step": 4, "algo.group_size": 8})
    runs[1].cfg.update({"data.prompts_per_step": 4, "algo.group_size": 8})
    for r, dt in zip(runs, (1.0, 3.0)):
        for row in r.rows[1:]:
            row["perf/step_s"] = dt
    x = compare.x_axes({"grpo": runs})
    assert x["samples"]["grpo"] == {0: 0.0, 1: 32.0, 2: 64.0, 3: 96.0, 4: 128.0}
    assert x["wall"]["grpo"] == {0: 0.0, 1: 2.0, 2: 4.0, 3: 6.0, 4: 8.0}   # mean of 1 s and 3 s per step


def test_dashboard_picker_and_samples_in_headless_chromium(sweep_dir, tmp_path):
    """The view of a URL: two picked metrics against samples seen; KL has no data for dapo (β = 0) and
    the panel says so; the picker lists every logged metric with the picked ones ticked."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's `chromium` is not installed (.ci/run installs it with apt-get where it can)")
    write_samples(sweep_dir)
    runs = [compare.load_run_dir(d) for d in compare.find_run_dirs([sweep_dir])]
    for r in runs:
        r.cfg.update({"data.prompts_per_step": 2, "algo.group_size": 4})
    out = tmp_path / "report"
    compare.build_report(runs, out)
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--log-level=0",
             "--virtual-time-budget=5000", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom"]
    url = (out / "report.html").as_uri() + "#metrics=reward/mean,policy/kl_ref&x=samples"
    p = subprocess.run(flags + [url], capture_output=True, text=True, timeout=90)
    root = re.search(r"<html[^>]*>", p.stdout).group(0)
    assert 'data-rendered="2"' in root and "data-js-errors" not in root, (root, p.stderr[-2000:])
    assert "Uncaught" not in p.stderr
    boxes = re.findall(r'<div class="panel" data-key="([^"]+)">(.*?)<div class="tip"', p.stdout, re.S)
    assert [k for k, _ in boxes] == ["reward/mean", "policy/kl_ref"]   # in the URL's order
    kl = dict(boxes)["policy/kl_ref"]
    assert re.search(r'<div class="nodata">no data for dapo \(not logged: algo.beta = 0, no reference model\)</div>',
                     kl), kl
    assert '<div class="nodata"></div>' in dict(boxes)["reward/mean"]
    assert ">samples seen</text>" in p.stdout                           # the x-axis label
    ticked = re.findall(r'<input type="checkbox" value="([^"]+)"', p.stdout)
    assert len(ticked) == 6                                               # every logged metric
    assert "<h2 id=\"samples\">Samples</h2>" in p.stdout and "dapo-2-1-a" in p.stdout and "grpo-2-1-a" in p.stdout


def test_stats_table_and_axis_switch_in_headless_chromium(sweep_dir, tmp_path):
    """The statistics tables (CI columns, verdict), a script switching the x-axis to response tokens and
    ticking "individual seeds": evaluations as points with binomial-SE error bars, the seeds' points,
    the on-policy note under the clip-fraction panel."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's `chromium` is not installed (.ci/run installs it with apt-get where it can)")
    runs = [compare.load_run_dir(d) for d in compare.find_run_dirs([sweep_dir])]
    for r in runs:
        r.cfg.update({"data.prompts_per_step": 2, "algo.group_size": 4, "data.eval_size": 100,
                      "trainer.update_epochs": 1, "trainer.mini_batch_size": None})
    out = tmp_path / "report"
    compare.build_report(runs, out)
    page = out / "switched.html"
    page.write_text((out / "report.html").read_text().replace("</body>", """<script>
var x = document.getElementById("xaxis"); x.value = "tokens"; x.dispatchEvent(new Event("change"));
document.getElementById("runs").click();
</script></body>"""))
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--log-level=0",
             "--virtual-time-budget=5000", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom"]
    p = subprocess.run(flags + [page.as_uri()], capture_output=True, text=True, timeout=90)
    dom = p.stdout
    root = re.search(r"<html[^>]*>", dom).group(0)
    assert 'data-rendered="6"' in root and "data-js-errors" not in root, (root, p.stderr[-2000:])
    # the x-axis choice offers what the runs have (no perf/step_s here: no wall-clock) and was switched
    assert re.findall(r'<option value="(\w+)"', dom) == ["step", "samples", "tokens"]
    assert dom.count(">response tokens</text>") == 6
    # eval: 3 evaluations x 2 groups as points with error bars, and each of the 4 seeds' 3 points with theirs
    assert dom.count('class="evalpt"') == 6 and dom.count('class="seedpt"') == 12 and dom.count('class="errbar"') == 18
    clip = re.search(r'<div class="panel" data-key="policy/clip_frac">.*?<div class="nodata">([^<]*)</div>', dom, re.S)
    assert clip.group(1).startswith("grpo: all 0: the update is strictly on-policy"), clip.group(1)
    for th in ("<th>95% CI</th>", "<th>eval n</th>", "<th>binomial SE (per run)</th>", "<th>Δ vs grpo</th>",
               "<th>95% CI of Δ</th>", "<th>p</th>", "<th>verdict</th>"):
        assert th in dom, th
    # final accuracy, dapo (0.4, 0.4) vs grpo (0.6, 0.8): Δ = -0.3; resampling 2 seeds gives grpo means 0.6,
    # 0.7 or 0.8, so the CI of Δ is [-0.4, -0.2]: it excludes 0, but Welch's test (df = 1, t = -0.3 / 0.1 = -3,
    # p = 1 - (2/π) atan 3 = 0.205) does not reject: not distinguishable, and 2 seeds are warned about
    row = re.search(r"<tr><td>final eval/arithmetic/accuracy</td><td>dapo</td><td>-0.300</td>(.*?)</tr>", dom).group(1)
    assert "<td>[-0.400, -0.200]</td><td>-3.00 (1.0)</td><td>0.205</td><td>not distinguishable with 2 seeds</td>" in row
    assert "warning: grpo: only 2 seeds" in dom


@pytest.mark.parametrize("name", ["algo_ablation", "kl_ablation", "pref_ablation", "lr_beta_optuna", "dapo_ablation"])
@pytest.mark.slow
def test_study_sweeps_compose(name):
    """The local studies (the cluster launchers' files are tested with them in test_scale.py)."""
    sweeps = REPO / "sweeps"
    hcfg = _compose_raw([], name, str(sweeps), hydra=True)
    assert str(hcfg.hydra.mode) == "RunMode.MULTIRUN"
    assert hcfg.hydra.callbacks.rlx_sweep._target_ == "rlx.sweep.SweepCallback"
    assert "joblib" in hcfg.hydra.launcher._target_                 # local parallel jobs
    params = {k: str(v) for k, v in hcfg.hydra.sweeper.params.items()}
    _check_overrides([f"{k}={v}" for k, v in params.items()])       # every algo it names exists
    validate(_compose_raw(_jobs([], params)[0], name, str(sweeps)))


def test_sweep_naming_and_threads():
    hc = OmegaConf.create({"sweep": {"dir": "outputs/sweeps/algo_ablation/2026-08-30_12-00-00"},
                           "job": {"config_name": "algo_ablation"}, "launcher": {"n_jobs": 2}})
    assert sweep_group(hc) == "algo_ablation@2026-08-30_12-00-00"
    hc.sweep.dir, hc.job.config_name = "outputs/multirun/2026-08-30/12-00-00", "config"
    assert sweep_group(hc) == "multirun@2026-08-30_12-00-00"
    cores = len(os.sched_getaffinity(0))
    assert threads_per_job(hc) == max(1, cores // 2)
    hc.launcher.n_jobs = -1                                           # joblib: all cores -> 1 thread each
    assert threads_per_job(hc) == 1


SWEEP = """
defaults:
  - config
  - override hydra/launcher: joblib
  - _self_
model:
  init: random
trainer:
  steps: 2
  eval_every: 0
  progress: false
data:
  prompts_per_step: 4
  eval_size: 50
  dev_size: 20
hydra:
  mode: MULTIRUN
  sweep:
    dir: {dir}
    subdir: ${{hydra.job.num}}_op${{data.max_operand}}
  sweeper:
    params:
      # max_operand 5 leaves 72 problems, fewer than twice eval_size + dev_size: the job raises at start
      data.max_operand: 99,98,97,5
  launcher:
    n_jobs: 4
"""


def _pids_with(needle: str) -> list[int]:
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmd and "-m rlx" in cmd:
            pids.append(int(pid))
    return pids


@pytest.mark.slow
def test_sweep_survives_a_raise_and_a_sigkill(tmp_path):
    """Job 3 raises (bad data config); job 2's training process is SIGKILLed as the OOM killer would;
    jobs 0 and 1 complete, and the report holds them and names the other two."""
    sweep = tmp_path / "sweep"
    (tmp_path / "study.yaml").write_text(SWEEP.format(dir=sweep))
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "rlx", "--config-dir", str(tmp_path), "--config-name", "study"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = False
    while proc.poll() is None and not killed:
        for pid in _pids_with(str(sweep / "2_op97")):
            os.kill(pid, signal.SIGKILL)
            killed = True
        time.sleep(0.05)
    out, err = proc.communicate(timeout=300)
    elapsed = time.perf_counter() - t0
    assert killed, err[-3000:]
    assert proc.returncode == 1, err[-3000:]                   # some job failed: the sweep says so
    assert f"report: python -m rlx.compare {sweep}" in err
    jobs = {j["dir"]: j for j in json.loads((sweep / "sweep_summary.json").read_text())["jobs"]}
    assert {d: j["status"] for d, j in jobs.items()} == {"0_op99": "completed", "1_op98": "completed",
                                                         "2_op97": "killed", "3_op5": "failed"}
    assert jobs["2_op97"]["signal"] == "SIGKILL"
    assert jobs["3_op5"]["reason"].startswith("ValueError") and "too few" in jobs["3_op5"]["reason"]
    job = OmegaConf.load(sweep / "0_op99" / "job.yaml")
    assert job.tracker.group == "study@sweep" and job.hardware.num_threads == max(1, len(os.sched_getaffinity(0)) // 4)
    for d in ("0_op99", "1_op98"):
        assert [json.loads(line)["step"] for line in (sweep / d / "metrics.jsonl").read_text().splitlines()] == [0, 1, 2]

    assert compare.main([str(sweep), "--by", "algo", "--out", str(tmp_path / "report")]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| grpo | 2 |" in md                                # the two completed jobs, one group
    assert "| 2_op97 | killed | killed by SIGKILL |" in md and "| 3_op5 | failed | ValueError" in md
    print(f"sweep with a raise and a SIGKILL: {elapsed:.1f} s wall")
