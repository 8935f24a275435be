"""Trackers against the real things: an `mlflow server` on 127.0.0.1 read back over its REST API, a
W&B offline run read back from its own log file, an unreachable tracking URI, and canary secrets."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import FAST, read_metrics, run_cli
from omegaconf import OmegaConf

import rlx
from rlx.track import meta

CANARY_WANDB = "rlx-canary-wandb-5f0c2e9a7d41"
CANARY_MLFLOW = "rlx-canary-mlflow-b83e61d0c2aa"
RUN = ["trainer.steps=3", "data.prompts_per_step=4", "hardware.num_threads=1", *FAST]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, **query) -> dict:
    with urllib.request.urlopen(f"{url}?{urllib.parse.urlencode(query)}", timeout=30) as r:
        return json.loads(r.read())


@contextlib.contextmanager
def serve(mlflow_args: list[str], root: Path):
    """``python -m mlflow <args> --host 127.0.0.1 --port <free>`` in its own process group (setsid), until
    /health answers; yields the URL; stopped by the group id in a finally."""
    port = free_port()
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_DISABLE_TELEMETRY="true")
    log = open(root / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", *mlflow_args, "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "1"], stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                            cwd=root)   # mlflow's relative defaults (./mlartifacts) land there, not in the repo
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None and time.time() < deadline, (root / "server.log").read_text()[-3000:]
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on 127.0.0.1 with a SQLite store and proxied artifacts."""
    root = tmp_path_factory.mktemp("mlflow_server")
    with serve(["server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
                "--artifacts-destination", str(root / "artifacts")], root) as url:
        yield url, root


@pytest.fixture(scope="module")
def server_run(mlflow_server, tmp_path_factory):
    """One run with tracker=all against the server, with canary secrets in the environment."""
    url, _ = mlflow_server
    run_dir = tmp_path_factory.mktemp("server_run")
    env = {"WANDB_API_KEY": CANARY_WANDB, "MLFLOW_TRACKING_TOKEN": CANARY_MLFLOW}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        proc = run_cli(["tracker=all", f"tracker.mlflow.tracking_uri={url}", "tracker.group=rlx-test",
                        "trainer.log_samples_every=2", *RUN], run_dir=run_dir)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return run_dir, proc


@pytest.mark.slow
def test_mlflow_server_holds_the_jsonl_metrics(mlflow_server, server_run):
    url, root = mlflow_server
    run_dir, _ = server_run
    rows = read_metrics(run_dir)
    run_id = json.loads((run_dir / "mlflow_run.json").read_text())["run_id"]
    run = get_json(f"{url}/api/2.0/mlflow/runs/get", run_id=run_id)["run"]
    assert run["info"]["status"] == "FINISHED"
    exp = get_json(f"{url}/api/2.0/mlflow/experiments/get", experiment_id=run["info"]["experiment_id"])
    assert exp["experiment"]["name"] == "rlx-test"          # the group
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    cfg = OmegaConf.load(run_dir / "config.yaml")
    assert {k: tags[k] for k in ("algo", "model", "data", "seed")} == {"algo": "grpo", "model": "tiny",
                                                                       "data": "arithmetic", "seed": "0"}
    assert tags["config_hash"] == meta.config_hash(cfg)
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["algo.beta"] == "0.04" and params["trainer.steps"] == "3" and params["data.prompts_per_step"] == "4"
    # every key of metrics.jsonl, every step, the same value (exact: both are float64)
    keys = sorted({k for r in rows for k in r if k != "step"})
    for key in keys:
        hist = get_json(f"{url}/api/2.0/mlflow/metrics/get-history", run_id=run_id, metric_key=key)["metrics"]
        assert sorted((m["step"], m["value"]) for m in hist) == [(r["step"], r[key]) for r in rows if key in r], key
    # one log-batch request per logged step, plus one per 100 params (MLflow's limit per batch)
    log = (root / "server.log").read_text()
    assert log.count("/runs/log-batch") == len(rows) + math.ceil(len(meta.flat_params(cfg)) / 100)
    arts = get_json(f"{url}/api/2.0/mlflow/artifacts/list", run_id=run_id)
    assert {f["path"] for f in arts.get("files", [])} >= {"config.yaml", "summary.json", "run_info.json",
                                                          "samples.jsonl"}
    # the sampled completions (trainer.log_samples_every=2: step 2), the same bytes as the run dir's file
    local = (run_dir / "samples.jsonl").read_text()
    assert [json.loads(ln)["step"] for ln in local.splitlines()] == [2] * 4    # 4 prompts per step
    [stored] = [p for p in (root / "artifacts").rglob("samples.jsonl") if run_id in str(p)]
    assert stored.read_text() == local


def wandb_records(path: Path):
    """The records of a W&B offline run file: LevelDB-log framing (7-byte header ':W&B', 0xBEE1, 0;
    32 KiB blocks of [crc32 u32, length u16, type u8] chunks, FULL=1 FIRST=2 MIDDLE=3 LAST=4)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert struct.unpack("<4sHB", data[:7]) == (b":W&B", 0xBEE1, 0)
    pos, buf = 7, b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if left < 7 or (length == 0 and kind == 0):
            pos += left  # block trailer padding
            continue
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            yield rec


@pytest.mark.slow
def test_wandb_offline_run_holds_the_history(server_run):
    run_dir, _ = server_run
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1, list((run_dir / "wandb").iterdir())
    recs = list(wandb_records(next(offline[0].glob("run-*.wandb"))))
    history = []
    for r in recs:
        if r.WhichOneof("record_type") == "history":
            row = {("/".join(i.nested_key) if i.nested_key else i.key): json.loads(i.value_json) for i in r.history.item}
            history.append({k: v for k, v in row.items() if not k.startswith("_")} | {"step": row["_step"]})
    tables = [(h["step"], {k[len("samples/"):]: h.pop(k) for k in list(h) if k.startswith("samples/")})
              for h in history if "samples/_type" in h]
    assert history == read_metrics(run_dir)
    # the sampled completions as a W&B table at step 2: one row per completion of samples.jsonl
    assert [(step, t["_type"]) for step, t in tables] == [(2, "table-file")]
    table = json.loads((offline[0] / "files" / tables[0][1]["path"]).read_text())
    samples = [json.loads(ln) for ln in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert table["columns"][:4] == ["step", "prompt", "completion", "reward"]
    assert [r[1:4] for r in table["data"]] == [[s["prompt"], c, s["rewards"][i]] for s in samples
                                               for i, c in enumerate(s["completions"])]
    run = next(r.run for r in recs if r.WhichOneof("record_type") == "run")
    assert run.run_group == "rlx-test" and "algo:grpo" in list(run.tags)
    files = offline[0] / "files"
    assert {"rlx_config.yaml", "rlx_summary.json", "rlx_run_info.json"} <= {p.name for p in files.iterdir()}


@pytest.mark.slow
def test_canary_secrets_are_written_nowhere(mlflow_server, server_run):
    _, root = mlflow_server
    run_dir, proc = server_run
    wandb_dirs = [Path(os.environ[k]) for k in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR")]
    files = [p for d in [run_dir, root / "artifacts", *wandb_dirs] if d.exists() for p in d.rglob("*") if p.is_file()]
    files.append(root / "mlflow.db")  # the server's store: params, tags, metrics
    assert len(files) > 20 and any(p.suffix == ".wandb" for p in files)
    for canary in (CANARY_WANDB, CANARY_MLFLOW):
        leaked = [str(p) for p in files if canary.encode() in p.read_bytes()]
        assert not leaked, f"{canary} written to {leaked}"
        assert canary not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_unreachable_tracking_uri_changes_nothing(server_run, tmp_path):
    """A closed loopback port: the run completes, says so once, and its metrics equal the tracked run's."""
    run_dir, _ = server_run
    dead = f"http://127.0.0.1:{free_port()}"
    t0 = time.perf_counter()
    proc = run_cli(["tracker=mlflow", f"tracker.mlflow.tracking_uri={dead}", *RUN], run_dir=tmp_path)
    assert proc.stderr.count("tracker 'mlflow' could not start") == 1, proc.stderr[-2000:]
    assert not (tmp_path / "mlflow_run.json").exists()

    def strip(rows):
        return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in rows]

    assert strip(read_metrics(tmp_path)) == strip(read_metrics(run_dir))
    assert (tmp_path / "summary.json").exists()
    print(f"unreachable-URI run: {time.perf_counter() - t0:.1f} s wall (includes python start-up)")


@pytest.mark.slow
def test_wandb_online_outage_falls_back_to_offline(tmp_path, monkeypatch):
    """Logged in (a key) but the W&B host refuses connections: init gives up after init_timeout_s, the
    run logs offline instead, and completes."""
    monkeypatch.setenv("WANDB_API_KEY", CANARY_WANDB + "0" * (40 - len(CANARY_WANDB)))
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.delenv("WANDB_MODE")
    proc = run_cli(["tracker=wandb", "tracker.wandb.init_timeout_s=2", "trainer.steps=1", "data.prompts_per_step=4",
                    "hardware.num_threads=1", *FAST], run_dir=tmp_path)
    assert proc.stderr.count("online init failed") == 1 and "logging offline instead" in proc.stderr
    assert len(list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))) == 1
    assert [r["step"] for r in read_metrics(tmp_path)] == [0, 1]


def test_redaction_by_hand(monkeypatch):
    monkeypatch.setenv("SOME_API_KEY", "abcdefgh12345")   # secret-named, 13 chars: its value is redacted
    monkeypatch.setenv("OTHER_TOKEN", "short")            # under 8 chars: left alone (would mask too much)
    cfg = OmegaConf.create({"a": {"api_key": "zzz", "path": "/x/abcdefgh12345/y", "max_new_tokens": 4},
                            "uri": "http://user:pw@host:5000/p"})
    assert meta.flat_params(cfg) == {"a.api_key": "***", "a.path": "/x/***/y", "a.max_new_tokens": "4",
                                     "uri": "http://***@host:5000/p"}


def test_config_hash_groups_seeds():
    a, b = rlx.compose(["seed=0"]), rlx.compose(["seed=1"])
    c = rlx.compose(["seed=0", "algo.beta=0.1"])
    assert meta.config_hash(a) == meta.config_hash(b) != meta.config_hash(c)
    assert meta.config_hash(rlx.compose(["seed=0", "tracker=wandb"])) == meta.config_hash(a)


def test_credentials_in_tracking_uri_are_refused():
    with pytest.raises(rlx.ConfigError, match="tracking_uri"):
        rlx.compose(["tracker=mlflow", "tracker.mlflow.tracking_uri=https://me:s3cret@mlflow.example.com"])


@pytest.mark.slow
def test_compare_reads_an_mlflow_experiment(mlflow_server, server_run, tmp_path):
    from rlx.report import compare

    url, _ = mlflow_server
    runs = compare.load_mlflow(url, "rlx-test")
    assert len(runs) == 1 and runs[0].status == "completed"
    run_dir, _ = server_run
    jsonl = read_metrics(run_dir)
    assert runs[0].series("reward/mean") == ([r["step"] for r in jsonl if "reward/mean" in r],
                                             [r["reward/mean"] for r in jsonl if "reward/mean" in r])
    compare.build_report(runs, tmp_path)
    assert (tmp_path / "report.html").exists() and (tmp_path / "report.png").stat().st_size > 10_000



# ---------------------------------------------------------------- where each tracker wrote


@pytest.mark.slow
def test_each_tracker_says_where_it_wrote_on_stderr_and_in_console_log(mlflow_server, server_run):
    url, _ = mlflow_server
    run_dir, proc = server_run
    info = json.loads((run_dir / "mlflow_run.json").read_text())
    run_id, exp_id = info["run_id"], info["experiment_id"]
    [offline] = (run_dir / "wandb").glob("offline-run-*")
    lines = [f"[rlx] mlflow: run {run_id} in experiment 'rlx-test' (id {exp_id}); "
             f"view: {url}/#/experiments/{exp_id}/runs/{run_id}",
             f"[rlx] wandb: offline run in {offline}; upload: wandb sync {offline}"]
    log = (run_dir / "console.log").read_text().splitlines()
    for line in lines:
        assert proc.stderr.splitlines().count(line) == 1 and log.count(line) == 1, (line, proc.stderr[-3000:])
    assert get_json(f"{url}/api/2.0/mlflow/runs/get", run_id=run_id)["run"]["info"]["experiment_id"] == exp_id


def rlx_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("[rlx]")]


def _tracked(cfg, run_dir: Path):
    """A tracked run without training: start the trackers, log a step, close, upload, finish."""
    from rlx.track import Trackers

    run_dir.mkdir(exist_ok=True)
    trackers = Trackers(cfg, run_dir)
    trackers.log({"reward/mean": 0.5}, 1)
    trackers.close()
    (run_dir / "summary.json").write_text(json.dumps({"final": {"eval/x/accuracy": 0.5}}))
    trackers.log_artifacts(run_dir, {"final": {"eval/x/accuracy": 0.5}})


@pytest.mark.slow
def test_a_local_mlflow_store_prints_the_mlflow_ui_command_that_serves_the_run(tmp_path, capsys):
    db = tmp_path / "m.db"
    _tracked(rlx.compose(["tracker=mlflow", f"tracker.mlflow.tracking_uri=sqlite:///{db}"]), tmp_path / "run")
    info = json.loads((tmp_path / "run" / "mlflow_run.json").read_text())
    line = (f"[rlx] mlflow: run {info['run_id']} in experiment 'default' (id {info['experiment_id']}); "
            f"view: mlflow ui --backend-store-uri sqlite:///{db}")
    assert rlx_lines(capsys.readouterr().err) == [line]                  # (mlflow logs its own lines too)
    assert (tmp_path / "run" / "console.log").read_text().splitlines() == [line]
    # the command as printed (plus a port) serves this run
    args = shlex.split(line.split("view: ", 1)[1])
    assert args[:2] == ["mlflow", "ui"]
    with serve(args[1:], tmp_path) as url:
        run = get_json(f"{url}/api/2.0/mlflow/runs/get", run_id=info["run_id"])["run"]
    assert run["info"]["status"] == "FINISHED"
    assert [(m["key"], m["value"]) for m in run["data"]["metrics"]] == [("reward/mean", 0.5)]


def test_a_file_store_and_relative_paths_are_named_so_mlflow_ui_opens_them_from_anywhere(tmp_path, monkeypatch,
                                                                                        capsys):
    from mlflow.tracking import MlflowClient

    from rlx.track.mlflow import local_store, view_line

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")    # mlflow 3 refuses a file store without it
    _tracked(rlx.compose(["tracker=mlflow", "tracker.mlflow.tracking_uri=mlruns"]), tmp_path / "run")
    run_id = json.loads((tmp_path / "run" / "mlflow_run.json").read_text())["run_id"]
    store = (tmp_path / "mlruns").as_uri()
    [line] = rlx_lines(capsys.readouterr().err)
    assert line.startswith(f"[rlx] mlflow: run {run_id} in experiment 'default'")
    assert line.endswith(f"; view: MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri {store}")
    assert MlflowClient(tracking_uri=store).get_run(run_id).info.status == "FINISHED"
    assert local_store("sqlite:///rel/m.db") == f"sqlite:///{tmp_path}/rel/m.db"
    assert local_store("sqlite:////abs/m.db") == "sqlite:////abs/m.db"
    assert local_store("databricks") is None and local_store("https://mlflow.example.com") is None
    assert view_line("https://u:pw@mlflow.example.com/", "g", "3", "r1") == \
        "[rlx] mlflow: run r1 in experiment 'g' (id 3); view: https://***@mlflow.example.com/#/experiments/3/runs/r1"
    assert view_line("databricks", "g", "3", "r1") == "[rlx] mlflow: run r1 in experiment 'g' (id 3) at databricks"
    spaced = view_line(f"sqlite:///{tmp_path}/a b/m.db", "g", "3", "r1")
    assert shlex.split(spaced.split("view: ")[1])[-1] == f"sqlite:///{tmp_path}/a b/m.db"   # quoted for the shell


def test_a_wandb_offline_run_prints_its_dir_and_the_sync_command(tmp_path, capsys):
    _tracked(rlx.compose(["tracker=wandb"]), tmp_path)
    [offline] = (tmp_path / "wandb").glob("offline-run-*")
    line = f"[rlx] wandb: offline run in {offline}; upload: wandb sync {offline}"
    assert rlx_lines(capsys.readouterr().err) == [line]
    assert (tmp_path / "console.log").read_text().splitlines() == [line]
    # `wandb sync <dir>` takes that dir (--dry-run: what it would upload, without the network)
    args = shlex.split(line.split("upload: ", 1)[1])
    wandb_cli = str(Path(sys.executable).with_name("wandb"))
    out = subprocess.run([wandb_cli, *args[1:2], "--dry-run", *args[2:]], capture_output=True, text=True, timeout=120)
    run_id = offline.name.rsplit("-", 1)[1]
    assert out.returncode == 0 and run_id in out.stdout + out.stderr, out.stdout + out.stderr


def test_an_online_wandb_run_prints_its_url():
    from types import SimpleNamespace

    from rlx.track.wandb import WandbTracker

    t = WandbTracker.__new__(WandbTracker)
    t.mode, t.run = "online", SimpleNamespace(offline=False, url="https://wandb.ai/me/rlx/runs/abc123")
    assert t.where() == "[rlx] wandb: run https://wandb.ai/me/rlx/runs/abc123"
    t.mode = "disabled"
    assert t.where().startswith("[rlx] wandb: disabled")
