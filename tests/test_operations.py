"""What the proxy tells its operator (issue #14): GET /metrics (parsed with prometheus_client's own parser),
GET /usage by backend, model and Claude Code session with costs, the statusline command for Claude Code, and
--log-format json. Counts are checked exactly after a known mix of requests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import anthropic
import httpx
import openai
import pytest
from conftest import free_port
from prometheus_client.parser import text_string_to_metric_families

import claude_proxy as cp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def metrics(proxy, **headers) -> dict:
    """{(sample name, frozenset(labels)): value} from /metrics."""
    text = httpx.get(proxy.url + "/metrics", headers=headers).text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_count_exactly_what_happened(make_proxy, backend):
    proxy = make_proxy(retries=1)
    client = anthropic.Anthropic(base_url=proxy.url, api_key="k", max_retries=0)
    ask = {"max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
    answers = [client.messages.create(model="claude-sonnet-5", **ask) for _ in range(2)]
    with client.messages.stream(model="claude-sonnet-5", **ask) as s:
        answers.append(s.get_final_message())
    openai.OpenAI(base_url=proxy.url + "/v1", api_key="k", max_retries=0).chat.completions.create(
        model="claude-haiku-4-5", messages=[{"role": "user", "content": "hi"}], max_tokens=20)
    with pytest.raises(anthropic.InternalServerError):
        client.messages.create(model="status-503-x", **ask)
    m = metrics(proxy)
    ok = frozenset({"door": "anthropic", "backend": "default", "model": "fake-model", "route": "--model",
                    "status": "200"}.items())
    assert m[("claude_proxy_requests_total", ok)] == 3
    assert m[("claude_proxy_requests_total", frozenset({**dict(ok), "door": "openai"}.items()))] == 1
    failed = frozenset({"door": "anthropic", "backend": "default", "model": "status-503-x", "route": "default",
                        "status": "503"}.items())
    assert m[("claude_proxy_requests_total", failed)] == 1
    assert m[("claude_proxy_retries_total", frozenset({"backend": "default"}.items()))] == 1
    inputs = m[("claude_proxy_tokens_total", frozenset({"backend": "default", "model": "fake-model",
                                                        "kind": "input"}.items()))]
    assert inputs >= sum(a.usage.input_tokens for a in answers)  # the three, plus the OpenAI client's
    durations = m[("claude_proxy_request_duration_seconds_count", frozenset({"door": "anthropic"}.items()))]
    assert durations == 4 and m[("claude_proxy_requests_in_flight", frozenset())] == 0


def test_metrics_and_usage_need_the_proxy_key(make_proxy):
    proxy = make_proxy(proxy_keys=("pk-ops-1",))
    assert httpx.get(proxy.url + "/metrics").status_code == 401
    assert httpx.get(proxy.url + "/usage").status_code == 401
    assert httpx.get(proxy.url + "/metrics", headers={"x-api-key": "pk-ops-1"}).status_code == 200
    assert "pk-ops-1" not in httpx.get(proxy.url + "/metrics", headers={"x-api-key": "pk-ops-1"}).text


PRICED = '''
[[backends]]
name = "priced"
url = "http://127.0.0.1:{port}/v1"
price_input = 2.0
price_output = 8.0
'''


def test_usage_by_model_and_by_session_with_costs(make_proxy, backend, tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(PRICED.format(port=backend.port))
    proxy = make_proxy(model="fake-model", **cp.load_config_file(str(path)))
    client = anthropic.Anthropic(base_url=proxy.url, api_key="k", max_retries=0)
    usage = []
    for session in ("s-one", "s-one", "s-two"):
        msg = client.messages.create(model="claude-sonnet-5", max_tokens=20, extra_headers={
            "X-Claude-Code-Session-Id": session}, messages=[{"role": "user", "content": f"hi {session}"}])
        usage.append(msg.usage)
    totals = httpx.get(proxy.url + "/usage").json()
    [by_model] = totals["by_model"]
    assert (by_model["backend"], by_model["model"], by_model["requests"], by_model["errors"]) == (
        "priced", "fake-model", 3, 0)
    one = totals["by_session"]["s-one"]
    assert one["input_tokens"] == usage[0].input_tokens + usage[1].input_tokens
    assert one["cost"] == pytest.approx(((usage[0].input_tokens + usage[1].input_tokens) * 2.0
                                         + (usage[0].output_tokens + usage[1].output_tokens) * 8.0) / 1e6)
    assert httpx.get(proxy.url + "/usage", params={"session": "s-two"}).json()["requests"] == 1


def statusline(base_url: str, stdin: str = '{"session_id": "s-one"}') -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    out = subprocess.run([sys.executable, os.path.join(ROOT, "claude_proxy.py"), "statusline", "--base-url",
                          base_url], input=stdin, capture_output=True, text=True, timeout=30, check=False)
    return out, time.monotonic() - started


def test_statusline_with_the_proxy_up_down_and_hanging(make_proxy, backend, loop_thread):
    proxy = make_proxy()
    anthropic.Anthropic(base_url=proxy.url, api_key="k", max_retries=0).messages.create(
        model="claude-sonnet-5", max_tokens=20, extra_headers={"X-Claude-Code-Session-Id": "s-one"},
        messages=[{"role": "user", "content": "hi"}])
    out, _ = statusline(proxy.url)
    assert out.returncode == 0 and out.stdout.startswith("claude_proxy · fake-model · ") and " in · " in out.stdout
    out, _ = statusline(proxy.url, '{"session_id": "unseen"}')
    assert out.returncode == 0 and "no requests yet" in out.stdout
    out, _ = statusline(f"http://127.0.0.1:{free_port()}")
    assert out.returncode == 0 and "✗ not reachable" in out.stdout

    import socket
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(1)  # accepts, never answers
    try:
        out, took = statusline(f"http://127.0.0.1:{hang.getsockname()[1]}")
    finally:
        hang.close()
    assert out.returncode == 0 and "✗" in out.stdout and took < 5  # 0.8 s for the proxy, plus Python's start


def test_setup_claude_writes_the_statusline_setting(tmp_path):
    settings = tmp_path / "settings.json"
    out = subprocess.run([sys.executable, os.path.join(ROOT, "claude_proxy.py"), "--port", "9911", "setup-claude",
                          "--statusline", "--settings", str(settings)], capture_output=True, text=True, timeout=30,
                         check=False)
    assert out.returncode == 0, out.stderr
    command = json.loads(settings.read_text())["statusLine"]
    assert command["type"] == "command" and command["command"].endswith("statusline --base-url http://127.0.0.1:9911")


def test_log_format_json_writes_one_object_per_line(backend, tmp_path):
    port = free_port()
    log = tmp_path / "proxy.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "claude_proxy.py"), "--url",
                                 f"127.0.0.1:{backend.port}/v1", "--model", "fake-model", "--port", str(port),
                                 "--log-format", "json"], stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        proc.stdout.readline()
        httpx.post(f"http://127.0.0.1:{port}/v1/messages", timeout=30, json={
            "model": "claude-sonnet-5", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]})
        end = time.monotonic() + 5
        while time.monotonic() < end and '"route"' not in log.read_text():
            time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    request = next(line for line in lines if line.get("path") == "/v1/messages")
    assert request["status"] == 200 and request["model"] == "fake-model" and request["route"] == "--model"
    assert request["level"] == "info" and isinstance(request["input_tokens"], int) and request["total_ms"] >= 0


def test_setup_claude_names_the_backend_models_in_claude_codes_picker(tmp_path):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "claude_proxy.py"), "--model", "deepseek-reasoner",
                          "--haiku-model", "deepseek-chat", "--context-window", "128000", "setup-claude", "--print"],
                         capture_output=True, text=True, timeout=30, check=False)
    env = dict(line.removeprefix("export ").split("=", 1) for line in out.stdout.splitlines())
    assert env["ANTHROPIC_DEFAULT_OPUS_MODEL"] == "claude-opus-4-1"  # a Claude id: the proxy still routes it
    assert env["ANTHROPIC_DEFAULT_OPUS_MODEL_NAME"] == "deepseek-reasoner"
    assert env["ANTHROPIC_DEFAULT_HAIKU_MODEL_NAME"] == "deepseek-chat"
    assert env["ANTHROPIC_DEFAULT_SONNET_MODEL_DESCRIPTION"] == \
        "'deepseek-reasoner · via claude_proxy (default) · 128k context'"
    claude = subprocess.run([sys.executable, os.path.join(ROOT, "claude_proxy.py"), "--backend", "anthropic",
                             "setup-claude", "--print"], capture_output=True, text=True, timeout=30, check=False)
    assert "MODEL_NAME" not in claude.stdout  # Claude itself keeps Claude Code's own names


def test_passed_through_streams_count_their_tokens(make_proxy, backend):
    """An OpenAI client of an OpenAI backend: bytes relayed as they came, the usage still read from the end."""
    proxy = make_proxy()
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="k", max_retries=0)
    chunks = list(client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "hi"}],
                                                 stream=True, stream_options={"include_usage": True}))
    usage = chunks[-1].usage
    m = metrics(proxy)
    labels = {"backend": "default", "model": "fake-model"}
    assert m[("claude_proxy_tokens_total", frozenset({**labels, "kind": "input"}.items()))] == usage.prompt_tokens
    assert m[("claude_proxy_tokens_total", frozenset({**labels, "kind": "output"}.items()))] == \
        usage.completion_tokens
