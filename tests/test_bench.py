"""The benchmark script keeps working (a short run, no peer). Speed itself is never asserted in tests."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import bench

SCENARIOS = ["small JSON", "small stream", "Claude Code 120 KB stream", "trickled stream",
             "trickled stream, pass-through"]


@pytest.mark.parametrize("no_wrk", ["0", "1"])
def test_bench_runs_end_to_end_without_errors(tmp_path, no_wrk):
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "bench.py"), "--duration", "0.5",
                           "--no-peer", "--streams", "50", "--json", str(out)], capture_output=True, text=True,
                          timeout=240, env={**os.environ, "BENCH_NO_WRK": no_wrk}, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(out.read_text())
    runs = results["runs"]
    expected = [f"{s} | {t}" for s in SCENARIOS for t in ("direct", "claude_proxy")]
    expected.remove("trickled stream, pass-through | direct")  # the same backend request as the translated one's
    assert sorted(runs) == sorted(expected)
    for name, run in runs.items():
        assert run["rps"] > 0 and run["errors"] == 0 and run["requests"] > 0, (name, run)
        assert run["cpu_ms_per_request"] > 0, (name, run)
    # the trickle is real: claude_proxy gets most frames in a read of their own (one write would be one read)
    for scenario in ("trickled stream", "trickled stream, pass-through"):
        counted = results["reads_per_stream"][scenario]
        assert counted["streams"] > 0 and counted["errors"] == 0, (scenario, counted)
        assert counted["reads_per_stream"] > results["frames_per_stream"] / 2, (scenario, counted)
    assert results["ratios"]["translated_over_passthrough_cpu"] > 0
    assert results["memory"]["claude_proxy"]["streams"] == 50
    assert "added latency at concurrency 1" in proc.stdout
    assert "translated ÷ pass-through" in proc.stdout


def test_pass_through_goes_to_the_openai_door_and_skips_proxies_without_one():
    proxy = bench.Target({"anthropic": ("http://p/v1/messages", {}), "openai": ("http://p/v1/chat/completions", {})},
                         1, 1)
    peer = bench.Target({"anthropic": ("http://c/v1/messages", {})}, 2, 2)
    direct = bench.Target({"openai": ("http://b/v1/chat/completions", {})}, 3, 3)
    translated = bench.Scenario("t", {"anthropic": True}, {"openai": True})
    passthrough = bench.Scenario("p", None, {"openai": True}, direct=False)
    assert translated.request("claude_proxy", proxy) == ("http://p/v1/messages", {}, {"anthropic": True})
    assert translated.request("direct", direct) == ("http://b/v1/chat/completions", {}, {"openai": True})
    assert passthrough.request("claude_proxy", proxy) == ("http://p/v1/chat/completions", {}, {"openai": True})
    assert passthrough.request("claude-code-router", peer) is None
    assert passthrough.request("direct", direct) is None


def test_cpu_ratios():
    runs = {"trickled stream | claude_proxy": {"cpu_ms_per_request": 3.0},
            "trickled stream | claude-code-router": {"cpu_ms_per_request": 12.0},
            "trickled stream, pass-through | claude_proxy": {"cpu_ms_per_request": 2.0},
            "small JSON | claude_proxy": {"cpu_ms_per_request": 0.5},
            "small JSON | claude-code-router": {"cpu_ms_per_request": 1.0}}
    assert bench.ratios(runs) == {"translated_over_passthrough_cpu": 1.5,
                                  "peer_over_proxy_cpu": {"trickled stream": 4.0, "small JSON": 2.0}}


def test_cpu_seconds_counts_the_work_of_a_server_process():
    spin = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\ninput()"
    busy = subprocess.Popen([sys.executable, "-c", spin], stdin=subprocess.PIPE, start_new_session=True)
    try:
        deadline = bench.time.monotonic() + 10
        while bench.cpu_seconds(busy.pid) < 0.25 and bench.time.monotonic() < deadline:
            bench.time.sleep(0.05)
        assert 0.25 <= bench.cpu_seconds(busy.pid) < 5
        assert bench.rss_mb(busy.pid) > 1
    finally:
        busy.communicate(b"\n", timeout=10)
