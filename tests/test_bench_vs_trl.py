"""benchmarks/vs_trl.py runs as the GPU check runs it (eager and compiled rlx against TRL, several runs, the median
table), here on the CPU path with the 1M model and a few steps: the script a device run depends on is exercised. The
compiled rows trace with ``aot_eager`` (no code generation: inductor's cold compile would be most of the test; the
compiled path itself is checked with inductor by tests/test_compiled.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_vs_trl_runs_eager_and_compiled_rows_against_trl():
    cmd = [sys.executable, "benchmarks/vs_trl.py", "--workloads", "dpo-1m", "--variants", "trl_default", "--compile",
           "--compile-backend", "aot_eager", "--steps", "2", "--warmup", "1", "--runs", "2"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["device"] == "cpu" and len(result["rows"]) == 2
    for row in result["rows"]:
        assert row["workload"] == "dpo-1m" and row["trl"] == "trl_default" and row["n"] == 2
        assert row["trl_s"] > 0 and row["rlx_s"] > 0 and row["rlx_compiled_s"] > 0
        assert abs(row["ratio"] - row["rlx_s"] / row["trl_s"]) < 1e-12
    # the process compiles once: the first run's compiled trainer pays it, the second reuses the compiled code
    assert result["rows"][0]["compile_s"] > 0
    (med,) = result["medians"]
    assert med["runs"] == 2 and min(r["ratio"] for r in result["rows"]) <= med["ratio"] <= max(
        r["ratio"] for r in result["rows"])
    assert "| dpo-1m | 1 |" in proc.stdout and "compiled/TRL" in proc.stdout
