"""Security (issue #4): proxy keys, keys never leaking, CORS, Host checks, bind warnings."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "claude_proxy.py")
BODY = {"model": "claude-sonnet-5", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
CHAT = {"model": "claude-x", "messages": [{"role": "user", "content": "hi"}]}


def test_proxy_keys_required_compared_and_never_forwarded(make_proxy, backend):
    proxy = make_proxy(proxy_keys=("pk-one,pk-two",), api_key="sk-backend-key")
    for headers in ({}, {"x-api-key": "wrong"}, {"Authorization": "Bearer pk-on"}):
        r = httpx.post(proxy.url + "/v1/messages", json=BODY, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    r = httpx.post(proxy.url + "/v1/chat/completions", json=CHAT)
    assert r.status_code == 401 and r.json()["error"]["code"] == "authentication_error"  # OpenAI-shaped
    assert backend.requests == []
    assert httpx.post(proxy.url + "/v1/messages", json=BODY, headers={"x-api-key": "pk-two"}).status_code == 200
    assert httpx.post(proxy.url + "/v1/messages", json=BODY,
                      headers={"Authorization": "Bearer pk-one"}).status_code == 200
    assert {h["Authorization"] for h in backend.headers} == {"Bearer sk-backend-key"}
    assert httpx.head(proxy.url + "/").status_code == 200 and httpx.get(proxy.url + "/health").status_code == 200


def test_proxy_key_without_backend_key_sends_no_key_upstream(make_proxy, backend):
    proxy = make_proxy(proxy_keys=("pk-only",))
    assert httpx.post(proxy.url + "/v1/messages", json=BODY, headers={"x-api-key": "pk-only"}).status_code == 200
    assert "Authorization" not in backend.headers[-1]


def test_cors_off_by_default_allowlist_and_wildcard(make_proxy):
    evil = {"Origin": "http://evil.example"}
    plain = make_proxy()
    for method in ("OPTIONS", "POST"):
        r = httpx.request(method, plain.url + "/v1/messages", json=BODY, headers=evil)
        assert "access-control-allow-origin" not in r.headers
    allow = make_proxy(cors_origins=("https://app.example",))
    r = httpx.options(allow.url + "/v1/messages", headers={"Origin": "https://app.example",
                                                             "Access-Control-Request-Method": "POST"})
    assert r.status_code == 204 and r.headers["access-control-allow-origin"] == "https://app.example"
    assert "x-api-key" in r.headers["access-control-allow-headers"]
    r = httpx.post(allow.url + "/v1/messages", json=BODY, headers={"Origin": "https://app.example"})
    assert r.headers["access-control-allow-origin"] == "https://app.example" and r.status_code == 200
    assert "access-control-allow-origin" not in httpx.post(allow.url + "/v1/messages", json=BODY,
                                                           headers=evil).headers
    star = make_proxy(cors_origins=("*",))
    r = httpx.post(star.url + "/v1/messages", json=BODY, headers=evil)
    assert r.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in r.headers


def test_loopback_bind_refuses_foreign_host_headers(make_proxy):
    proxy = make_proxy()
    r = httpx.post(proxy.url + "/v1/messages", json=BODY, headers={"Host": "evil.example"})
    assert r.status_code == 403 and "DNS rebinding" in r.json()["error"]["message"]
    for host in (f"localhost:{proxy.port}", f"127.0.0.1:{proxy.port}", f"[::1]:{proxy.port}"):
        assert httpx.post(proxy.url + "/v1/messages", json=BODY, headers={"Host": host}).status_code == 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str], port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, SCRIPT, "--port", str(port), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError(proc.communicate()[1])


def test_public_bind_without_proxy_key_warns():
    port = free_port()
    proc = start(["--host", "0.0.0.0", "--api-key", "sk-x"], port)
    proc.terminate()
    _, err = proc.communicate(timeout=10)
    assert "without --proxy-key" in err and "your backend key" in err


CANARY_BACKEND = "sk-canary-backend-5d41402abc4b2a76"
CANARY_PROXY = "pk-canary-proxy-7d793037a0760186"
CANARY_CLIENT = "sk-canary-client-9e107d9d372bb682"


def test_canary_keys_never_leak_on_any_error_path_at_debug_level(backend):
    dead = free_port()
    outputs: list[str] = []
    setups = [
        # configured backend key + proxy key
        (["--url", f"127.0.0.1:{backend.port}/v1", "--api-key", CANARY_BACKEND, "--proxy-key", CANARY_PROXY],
         {"x-api-key": CANARY_PROXY}),
        # no keys configured: the client's own key is forwarded
        (["--url", f"127.0.0.1:{backend.port}/v1"], {"Authorization": f"Bearer {CANARY_CLIENT}"}),
        # unreachable backend
        (["--url", f"127.0.0.1:{dead}/v1", "--api-key", CANARY_BACKEND, "--retries", "0"],
         {"x-api-key": CANARY_CLIENT}),
    ]
    for args, headers in setups:
        port = free_port()
        proc = start([*args, "--log-level", "debug"], port)
        base = f"http://127.0.0.1:{port}"
        try:
            for model in ("echokey-x", "status-500-x", "html-x", "cut-x", "unknown-x", "fake-model"):
                for stream in (False, True):
                    r = httpx.post(base + "/v1/messages", json={**BODY, "model": model, "stream": stream},
                                   headers={**headers, "anthropic-version": "2023-06-01"}, timeout=20)
                    outputs.append(r.text + str(dict(r.headers)))
                r = httpx.post(base + "/v1/chat/completions", json={**CHAT, "model": model}, headers=headers)
                outputs.append(r.text + str(dict(r.headers)))
            for extra in ({"x-api-key": CANARY_CLIENT}, {"Authorization": f"Bearer {CANARY_CLIENT}x"}):
                r = httpx.post(base + "/v1/messages", content=b"{bad json", headers=extra)
                outputs.append(r.text)
                r = httpx.get(base + "/v1/nothing-here", headers=extra)
                outputs.append(r.text)
        finally:
            proc.terminate()
            out, err = proc.communicate(timeout=10)
            outputs += [out, err]
    joined = "\n".join(outputs)
    assert "Incorrect API key provided" in joined  # the echo path really ran
    assert "DEBUG" in joined
    for canary in (CANARY_BACKEND, CANARY_PROXY, CANARY_CLIENT):
        assert canary not in joined, canary
