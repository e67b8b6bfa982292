"""The command line as a user runs it: python claude_proxy.py ... in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import anthropic
import pytest
from conftest import free_port, wait_for_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "claude_proxy.py")


def test_help_explains_flags_env_and_examples():
    out = subprocess.run([sys.executable, SCRIPT, "--help"], capture_output=True, text=True, timeout=30,
                         check=False)
    assert out.returncode == 0
    for needle in ("--url", "--api-key", "--model", "--haiku-model", "--sonnet-model", "--opus-model", "--host",
                   "--port", "--max-tokens", "--log-level", "CLAUDE_PROXY_URL", "OPENAI_BASE_URL", "OPENAI_API_KEY",
                   "api.deepseek.com/v1", "ANTHROPIC_BASE_URL", "http://localhost:11434/v1"):
        assert needle in out.stdout, needle


def test_bad_flag_values_are_clear_errors():
    out = subprocess.run([sys.executable, SCRIPT, "--url", "ftp://x"], capture_output=True, text=True, timeout=30,
                         check=False)
    assert out.returncode == 2 and "http(s)://" in out.stderr


@pytest.fixture
def served(backend):
    """The proxy started from the environment only, as a user would with CLAUDE_PROXY_* / OPENAI_* variables."""
    port = free_port()
    key = "sk-envkey-0123456789abcdefXYZ9"
    backend.key = key
    env = {**os.environ, "OPENAI_BASE_URL": f"127.0.0.1:{backend.port}/v1", "OPENAI_API_KEY": key,
           "CLAUDE_PROXY_MODEL": "fake-env", "CLAUDE_PROXY_PORT": str(port), "CLAUDE_PROXY_LOG_LEVEL": "debug"}
    proc = subprocess.Popen([sys.executable, SCRIPT], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    first = proc.stdout.readline()
    wait_for_port(port)
    yield proc, port, key, first
    proc.terminate()
    proc.wait(10)


def test_starts_from_environment_prints_setup_and_hides_key(served, backend):
    proc, port, key, first = served
    assert f"listening on http://127.0.0.1:{port}" in first
    assert f"http://127.0.0.1:{backend.port}/v1/chat/completions" in first and "fake-env" in first
    assert key not in first and "sk-…XYZ9" in first
    lines = [proc.stdout.readline(), proc.stdout.readline()]
    assert lines[0].strip() == f"export ANTHROPIC_BASE_URL=http://127.0.0.1:{port}"
    assert lines[1].strip().startswith("export ANTHROPIC_API_KEY=")
    c = anthropic.Anthropic(base_url=f"http://127.0.0.1:{port}", api_key="anything", max_retries=0)
    msg = c.messages.create(model="claude-opus-4-8", max_tokens=50, messages=[{"role": "user", "content": "hi"}])
    assert msg.content[0].text.startswith("Hello from fake-env!")
    assert backend.headers[-1]["Authorization"] == f"Bearer {key}"
    proc.terminate()
    _, err = proc.communicate(timeout=10)
    assert "anthropic→openai:default claude-opus-4-8→fake-env route=--model json 200" in err  # one line per request
    assert key not in err  # not even at debug level


def test_workers_share_one_port_and_stop_on_sigterm(backend):
    import signal as _signal
    port = free_port()
    proc = subprocess.Popen([sys.executable, SCRIPT, "--url", f"127.0.0.1:{backend.port}/v1", "--port", str(port),
                             "--workers", "2", "--model", "fake-model"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert "listening on" in proc.stdout.readline()
        wait_for_port(port)
        time.sleep(0.3)  # let the second worker bind too
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(proc.pid)], capture_output=True, text=True, check=False).stdout
        assert len(out.split()) == 2
        c = anthropic.Anthropic(base_url=f"http://127.0.0.1:{port}", api_key="k", max_retries=0)
        for _ in range(6):
            assert c.messages.create(model="claude-x", max_tokens=20, messages=[
                {"role": "user", "content": "hi"}]).content[0].text.startswith("Hello from fake-model")
        proc.send_signal(_signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
