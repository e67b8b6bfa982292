"""SIGHUP re-reads the config file (issue #12): new requests use the new backends and routes, a stream in
flight finishes on the old ones, key pools carry over, and a file with a mistake is refused with its FILE:LINE
while the running configuration stays. The proxy runs as a real process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
from conftest import assert_anthropic_grammar, free_port, parse_sse_bytes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = '''
[[backends]]
name = "local"
url = "http://127.0.0.1:{port}/v1"
api_keys = ["sk-reload-key-0001", "sk-reload-key-0002"]

[[routes]]
match = "*sonnet*"
backend = "local"
model = "{model}"
'''


def ask(url: str, stream: bool = False, text: str = "hi") -> httpx.Response:
    return httpx.post(url + "/v1/messages", timeout=30, json={
        "model": "claude-sonnet-5", "max_tokens": 50, "stream": stream,
        "messages": [{"role": "user", "content": text}]})


def wait_for(predicate, what: str, timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_sighup_reloads_for_new_requests_while_a_stream_finishes_on_the_old(backend, tmp_path):
    import threading
    path = tmp_path / "proxy.toml"
    path.write_text(CONFIG.format(port=backend.port, model="trickle-0.1"))
    port = free_port()
    log = tmp_path / "proxy.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "claude_proxy.py"), "--config", str(path),
                                 "--port", str(port)], stdout=subprocess.PIPE, stderr=err, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        proc.stdout.readline()
        wait_for(lambda: httpx.get(url + "/health").status_code == 200, "the proxy")
        in_flight: dict = {}
        streaming = threading.Thread(target=lambda: in_flight.update(r=ask(url, True, "a long story to tell")))
        streaming.start()
        wait_for(lambda: any(r["model"] == "trickle-0.1" for r in backend.requests), "the stream to start")
        path.write_text(CONFIG.format(port=backend.port, model="fake-model"))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reloaded: backends local" in log.read_text(), "the reload")
        assert ask(url).json()["content"][0]["text"].startswith("Hello from fake-model")  # the new route
        streaming.join(timeout=30)
        events = parse_sse_bytes(in_flight["r"].content)
        assert_anthropic_grammar(events)  # finished normally, on the old route
        assert "Hello from trickle-0.1" in "".join(d["delta"].get("text", "") for n, d in events
                                                   if n == "content_block_delta")
        keys = [h["Authorization"][7:] for h in backend.headers]
        assert keys == ["sk-reload-key-0001", "sk-reload-key-0002"]  # the pool's turn carried over the reload

        path.write_text(CONFIG.format(port=backend.port, model="fake-model") + "\n[[routes]]\nbackend = \"x\"\n")
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload refused" in log.read_text(), "the refusal")
        text = log.read_text()
        assert f"reload refused, the running configuration stays: {path}:12: [[routes]] needs match" in text
        assert ask(url).json()["content"][0]["text"].startswith("Hello from fake-model")  # still served
        assert "sk-reload-key" not in text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
