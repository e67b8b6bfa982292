"""Routing across backends, the config file, URL routing, setup-claude, check and the log line (issue #6)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap

import anthropic
import httpx
import openai
import pytest
from fake_anthropic import FakeAnthropic
from fake_openai import FakeOpenAI

import claude_proxy as cp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "claude_proxy.py")
BODY = {"max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}


def write(tmp_path, text: str) -> str:
    path = tmp_path / "proxy.toml"
    path.write_text(textwrap.dedent(text))
    return str(path)


# ---- the config file ------------------------------------------------------------------------------------

def test_config_file_loads_backends_routes_and_server(tmp_path, monkeypatch):
    monkeypatch.setenv("FAST_KEY", "sk-fast")
    opts = cp.load_config_file(write(tmp_path, """
        [server]
        port = 9999
        proxy_keys = ["pk-1"]

        [[backends]]
        name = "deepseek"
        url = "api.deepseek.com/v1"
        api_key = "sk-deep"
        max_tokens = 8192
        headers = { "X-Title" = "claude_proxy" }

        [[backends]]
        name = "fast"
        url = "127.0.0.1:8000/v1"
        api_key_env = "FAST_KEY"

        [[backends]]
        name = "claude"
        url = "api.anthropic.com"
        backend = "anthropic"

        [[routes]]
        match = "*haiku*"
        backend = "fast"
        model = "small"
        fallbacks = ["deepseek:deepseek-chat", "claude"]

        [[routes]]
        match = "*"
        backend = "deepseek"
        model = "deepseek-chat"
    """))
    config = cp.Config(**opts)
    assert config.port == 9999 and config.proxy_keys == ("pk-1",)
    fast = config.routing.backends["fast"]
    assert (fast.url, fast.api_key) == ("http://127.0.0.1:8000/v1", "sk-fast")
    assert config.routing.backends["deepseek"].headers == (("X-Title", "claude_proxy"),)
    assert config.routing.backends["claude"].endpoint == "https://api.anthropic.com/v1/messages"
    cands = config.routing.candidates("claude-haiku-4-5-20251001")
    assert [(b.name, m) for b, m in cands] == [("fast", "small"), ("deepseek", "deepseek-chat"),
                                               ("claude", "claude-haiku-4-5-20251001")]
    assert config.routing.candidates("claude-opus-4-8")[0][0].name == "deepseek"
    assert config.routing.primary.name == "deepseek"  # the first backend replaces the flags' default
    assert ("small", config.routing.backends["fast"], "small") in config.routing.mapped_models()


@pytest.mark.parametrize("text,fragment,line", [
    ("[[backends]]\nname = 'a'\nurl = 'x.example'\napi_kye = 'k'\n", "unknown key 'api_kye'", 4),
    ("[[backends]]\nname = 'a'\nurl = 'x.example'\n\n[[routes]]\nmatch = '*'\nbackend = 'b'\n",
     "names backend 'b', which is not defined", 7),
    ("[[routes]]\nmatch = '*'\nbackend = 'default'\nfallbacks = ['nope:m']\n", "fallback 'nope:m'", 4),
    ("[[backends]]\nname = 'a'\nurl = 'x.example'\napi_key_env = 'SURELY_UNSET_VAR_123'\n",
     "SURELY_UNSET_VAR_123 is not set", 4),
    ("[server]\nprot = 1\n", "unknown key 'prot' in [server]", 2),
    ("colour = 'blue'\n", "unknown key 'colour'", 1),
    ("[[backends]]\nname = 'a'\n", "needs a url", 1),
    ("[[backends]\nname = 'a'\n", "line 1", None),
])
def test_config_file_mistakes_name_their_line(tmp_path, text, fragment, line):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(cp.ConfigFileError) as info:
        cp.load_config_file(str(path))
    assert fragment in str(info.value)
    if line is not None:
        assert f"bad.toml:{line}:" in str(info.value)


def test_startup_fails_fast_on_a_bad_config_file(tmp_path):
    path = write(tmp_path, "[[routes]]\nmatch = '*haiku*'\nbackend = 'groq'\n")
    out = subprocess.run([sys.executable, SCRIPT, "--config", path], capture_output=True, text=True, timeout=30,
                         check=False)
    assert out.returncode != 0
    assert "proxy.toml:3: route '*haiku*' names backend 'groq', which is not defined" in out.stderr


def test_flags_are_routes_and_override_the_file():
    file_routes = (cp.Route("*", "default", "file-model"),)
    config = cp.Config(model="flag-model", haiku_model="flag-haiku", routes=file_routes)
    assert config.routing.backend_model("claude-haiku-4-5") == "flag-haiku"
    assert config.routing.backend_model("claude-sonnet-5") == "flag-model"
    assert config.routing.backend_model("gpt-x") == "file-model"


# ---- routing end to end -----------------------------------------------------------------------------------

@pytest.fixture
def two_backends(loop_thread):
    a, b = FakeOpenAI(), FakeOpenAI()
    c = FakeAnthropic(key="sk-ant")
    for fake in (a, b, c):
        loop_thread.run(fake.start())
    yield a, b, c
    for fake in (a, b, c):
        loop_thread.run(fake.stop())


@pytest.fixture
def routed(loop_thread, two_backends):
    from conftest import ProxyServer
    a, b, c = two_backends
    backends = (cp.Backend("a", f"http://127.0.0.1:{a.port}/v1", "sk-a", headers=(("X-Title", "claude_proxy"),),
                           max_tokens=1000),
                cp.Backend("b", f"http://127.0.0.1:{b.port}/v1", "sk-b"),
                cp.Backend("claude", f"http://127.0.0.1:{c.port}", "sk-ant", "anthropic"))
    routes = (cp.Route("*haiku*", "a", "fast-model"),
              cp.Route("*sonnet*", "a", "status-503-x", (("b", "fake-fallback"),)),
              cp.Route("*opus*", "claude", "status-529-x", (("a", "fake-model"),)),
              cp.Route("*bad*", "a", "status-400-x", (("b", None),)),
              cp.Route("*native*", "claude", "claude-sonnet-5"),
              cp.Route("*", "b", None))
    server = ProxyServer(loop_thread, cp.Config(backends=backends, routes=routes, default_backend="b", retries=0))
    yield server
    server.close()


def test_routes_pick_backends_and_models(routed, two_backends):
    a, b, c = two_backends
    client = anthropic.Anthropic(base_url=routed.url, api_key="client", max_retries=0)
    msg = client.messages.create(model="claude-haiku-4-5", **{**BODY, "max_tokens": 8000})
    assert msg.content[0].text.startswith("Hello from fast-model")
    assert a.requests[-1]["max_tokens"] == 1000  # the backend's own cap
    assert a.headers[-1]["X-Title"] == "claude_proxy" and a.headers[-1]["Authorization"] == "Bearer sk-a"
    msg = client.messages.create(model="my-model", **BODY)
    assert msg.content[0].text.startswith("Hello from my-model") and b.headers[-1]["Authorization"] == "Bearer sk-b"
    native = client.messages.create(model="claude-native-1", **BODY)  # an Anthropic backend: passed through
    assert native.content[0].text.startswith("Hello from claude-sonnet-5")
    assert c.headers[-1]["x-api-key"] == "sk-ant"
    ids = [m.id for m in openai.OpenAI(base_url=routed.url + "/v1", api_key="x").models.list()]
    assert {"fast-model", "fake-fallback", "claude-sonnet-5"} <= set(ids)


@pytest.mark.parametrize("stream", [False, True])
def test_fallback_on_5xx_before_the_first_byte(routed, two_backends, stream):
    a, b, _ = two_backends
    client = anthropic.Anthropic(base_url=routed.url, api_key="client", max_retries=0)
    if stream:
        with client.messages.stream(model="claude-sonnet-5", **BODY) as s:
            msg = s.get_final_message()
    else:
        msg = client.messages.create(model="claude-sonnet-5", **BODY)
    assert msg.content[0].text.startswith("Hello from fake-fallback")
    assert a.calls["status-503-x"] == 1 and b.requests[-1]["model"] == "fake-fallback"


def test_fallback_across_dialects(routed, two_backends):
    a, _, c = two_backends
    msg = anthropic.Anthropic(base_url=routed.url, api_key="x", max_retries=0).messages.create(
        model="claude-opus-4-8", **BODY)
    assert c.requests[-1]["model"] == "status-529-x"  # the Anthropic backend was tried first
    assert msg.content[0].text.startswith("Hello from fake-model") and a.requests[-1]["model"] == "fake-model"
    r = openai.OpenAI(base_url=routed.url + "/v1", api_key="x", max_retries=0).chat.completions.create(
        model="claude-opus-4-8", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content.startswith("Hello from fake-model")  # OpenAI client, same fallback


def test_no_fallback_on_a_client_error(routed, two_backends):
    _, b, _ = two_backends
    with pytest.raises(anthropic.BadRequestError):
        anthropic.Anthropic(base_url=routed.url, api_key="x", max_retries=0).messages.create(
            model="claude-bad", **BODY)
    assert b.requests == []


# ---- URL routing --------------------------------------------------------------------------------------------

def test_url_routing_is_off_by_default(make_proxy, backend):
    proxy = make_proxy(api_key="sk-canary-configured-0001")
    r = httpx.post(f"{proxy.url}/http/127.0.0.1:{backend.port}/v1/fake-x/v1/messages",
                   json={"model": "claude-x", **BODY})
    assert r.status_code == 404 and "--allow-url-routing" in r.json()["error"]["message"]
    assert backend.requests == []


def test_url_routing_allowlist_and_keys(loop_thread, make_proxy, backend):
    other = FakeOpenAI()
    loop_thread.run(other.start())
    try:
        canary = "sk-canary-configured-0001"
        proxy = make_proxy(api_key=canary, allow_url_routing=("127.0.0.1",))
        # a host the operator allowed but did not configure a key for: only the client's own key goes there
        r = httpx.post(f"{proxy.url}/http/127.0.0.1:{other.port}/v1/fake-routed/v1/messages?beta=true",
                       json={"model": "claude-sonnet-5", **BODY}, headers={"x-api-key": "client-own-key"})
        assert r.status_code == 200 and r.json()["content"][0]["text"].startswith("Hello from fake-routed")
        assert other.headers[-1]["Authorization"] == "Bearer client-own-key"
        assert canary not in json.dumps(other.headers)
        # the exact URL the key was configured for may have it
        r = httpx.post(f"{proxy.url}/http/127.0.0.1:{backend.port}/v1/fake-own/v1/messages",
                       json={"model": "claude-sonnet-5", **BODY}, headers={"x-api-key": "client-own-key"})
        assert r.status_code == 200 and backend.headers[-1]["Authorization"] == f"Bearer {canary}"
        r = httpx.post(f"{proxy.url}/http/127.0.0.1:{other.port}/v1/fake-routed/v1/messages/count_tokens",
                       json={"model": "claude-sonnet-5", "messages": BODY["messages"]})
        assert r.json()["input_tokens"] > 0
        # hosts not listed are refused before any connection
        before = len(other.requests) + len(backend.requests)
        for host in ("169.254.169.254", "evil.example", "localhost"):
            r = httpx.post(f"{proxy.url}/https/{host}/v1/m/v1/messages", json={"model": "x", **BODY})
            assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
        assert len(other.requests) + len(backend.requests) == before
    finally:
        loop_thread.run(other.stop())


# ---- setup-claude -----------------------------------------------------------------------------------------

def run_cli(args, home, path_env="/usr/bin:/bin", **kw):
    env = {"HOME": str(home), "PATH": path_env}
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=30, env=env,
                          check=False, **kw)


def test_setup_claude_merges_backs_up_and_keeps_other_settings(tmp_path):
    settings = tmp_path / ".claude" / "settings.json"
    settings.parent.mkdir()
    original = {"theme": "dark", "permissions": {"allow": ["Bash(ls:*)"]}, "env": {"FOO": "1",
                                                                                   "ANTHROPIC_BASE_URL": "old"}}
    settings.write_text(json.dumps(original))
    out = run_cli(["--port", "9123", "--proxy-key", "pk-team", "setup-claude", "--claude-model", "deepseek-chat"],
                  tmp_path)
    assert out.returncode == 0, out.stderr
    data = json.loads(settings.read_text())
    assert data["theme"] == "dark" and data["permissions"] == original["permissions"]
    assert data["env"] == {"FOO": "1", "ANTHROPIC_BASE_URL": "http://127.0.0.1:9123", "ANTHROPIC_API_KEY": "pk-team",
                           "ANTHROPIC_MODEL": "deepseek-chat"}
    backups = list(settings.parent.glob("settings.json.bak-*"))
    assert len(backups) == 1 and json.loads(backups[0].read_text()) == original
    assert oct(settings.stat().st_mode & 0o777) == "0o600"
    assert "npm install -g @anthropic-ai/claude-code" in out.stdout  # no claude on this PATH


def test_setup_claude_creates_the_file_and_print_only_prints(tmp_path):
    out = run_cli(["setup-claude", "--print", "--base-url", "http://gpu-box:8082/", "--key", "k'1"], tmp_path)
    assert out.stdout.splitlines() == ["export ANTHROPIC_BASE_URL=http://gpu-box:8082",
                                       "export ANTHROPIC_API_KEY='k'\"'\"'1'"]
    assert not (tmp_path / ".claude").exists()
    out = run_cli(["setup-claude"], tmp_path)
    data = json.loads((tmp_path / ".claude" / "settings.json").read_text())
    assert data == {"env": {"ANTHROPIC_BASE_URL": "http://127.0.0.1:8082", "ANTHROPIC_API_KEY": "claude_proxy"}}


def test_setup_claude_leaves_an_unreadable_file_alone(tmp_path):
    settings = tmp_path / ".claude" / "settings.json"
    settings.parent.mkdir()
    settings.write_text("{ not json")
    out = run_cli(["setup-claude"], tmp_path)
    assert out.returncode == 1 and "nothing was changed" in out.stderr
    assert settings.read_text() == "{ not json" and not list(settings.parent.glob("*.bak-*"))


# ---- check ------------------------------------------------------------------------------------------------------

def test_check_a_good_proxy(make_proxy, tmp_path):
    proxy = make_proxy()
    out = run_cli(["check", "--base-url", proxy.url], tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "JSON   HTTP 200" in out.stdout and "stream HTTP 200" in out.stdout and "first byte" in out.stdout
    assert "Hello from fake-model" in out.stdout and out.stdout.rstrip().endswith("as a stream.")


def test_check_the_backend_in_process_from_flags(backend, tmp_path):
    out = run_cli(["--url", f"127.0.0.1:{backend.port}/v1", "--model", "fake-model", "check"], tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "checking backend default" in out.stdout and "claude-sonnet-4-5 → fake-model" in out.stdout


@pytest.mark.parametrize("setup,expect", [
    ("badkey", "the backend rejected the key"),
    ("unknown", "does not know this model"),
    ("down", "could not be reached"),
    ("noproxy", "is the proxy running"),
])
def test_check_explains_failures(backend, tmp_path, setup, expect):
    backend.key = "sk-right"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    args = {"badkey": ["--url", f"127.0.0.1:{backend.port}/v1", "--api-key", "sk-wrong", "--model", "fake-model",
                       "check"],
            "unknown": ["--url", f"127.0.0.1:{backend.port}/v1", "--api-key", "sk-right", "--model", "unknown-m",
                        "check"],
            "down": ["--url", f"127.0.0.1:{dead}/v1", "--retries", "0", "check"],
            "noproxy": ["check", "--base-url", f"http://127.0.0.1:{dead}"]}[setup]
    out = run_cli(args, tmp_path)
    assert out.returncode == 1, out.stdout
    assert expect in out.stdout and "FAILED" in out.stdout
    assert "sk-wrong" not in out.stdout


# ---- logs -------------------------------------------------------------------------------------------------------

def test_one_log_line_per_request_and_debug_bodies(backend, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, SCRIPT, "--url", f"127.0.0.1:{backend.port}/v1", "--model",
                             "fake-model", "--port", str(port), "--log-level", "debug"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        proc.stdout.readline()
        big = "A" * 5000
        r = httpx.post(f"http://127.0.0.1:{port}/v1/messages", json={
            "model": "claude-sonnet-5", "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": big}},
                {"type": "text", "text": "hi"}]}]}, headers={"x-api-key": "sk-client-secret-key-77"})
        rid = r.headers["request-id"]
        r2 = httpx.post(f"http://127.0.0.1:{port}/v1/messages", json={"model": "claude-haiku-4-5", **BODY})
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    line = next(l for l in err.splitlines() if rid in l and " INFO " in l)
    assert re.search(rf"{rid} anthropic→openai:default claude-sonnet-5→fake-model route=--model stream 200 in=\d+ out=\d+ "
                     r"ttfb=\d+ms total=\d+ms", line), line
    line2 = next(l for l in err.splitlines() if r2.headers["request-id"] in l and " INFO " in l)
    assert "claude-haiku-4-5→fake-model route=--model json 200" in line2
    assert "sk-client-secret-key-77" not in err and big not in err
    assert re.search(r"DEBUG .*← POST /v1/messages body=.*AAAA…", err)  # bodies at debug, base64 cut short
    assert "DEBUG → POST http://127.0.0.1" in err
