"""The benchmark script keeps working (a short run, no peer). Speed itself is never asserted in tests."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


import pytest


@pytest.mark.parametrize("no_wrk", ["0", "1"])
def test_bench_runs_end_to_end_without_errors(tmp_path, no_wrk):
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "bench.py"), "--duration", "0.5",
                           "--no-peer", "--streams", "50", "--json", str(out)], capture_output=True, text=True,
                          timeout=180, env={**os.environ, "BENCH_NO_WRK": no_wrk})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(out.read_text())
    assert len(results["runs"]) == 6  # three scenarios, direct and claude_proxy
    for name, run in results["runs"].items():
        assert run["rps"] > 0 and run["errors"] == 0, (name, run)
    assert results["memory"]["claude_proxy"]["streams"] == 50
    assert "added latency at concurrency 1" in proc.stdout
