"""Faults, load, disconnects and shutdown (issue #4): fake backends on 127.0.0.1 that hang, stall, trickle,
reset and fail; every wait bounded."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import signal
import socket
import subprocess
import sys
import time

import aiohttp
import anthropic
import httpx
import openai
import pytest
from conftest import assert_anthropic_grammar, parse_sse_bytes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ask(text="hi", model="claude-sonnet-5", **kw):
    return {"model": model, "max_tokens": 100, "messages": [{"role": "user", "content": text}], **kw}


def client(proxy, **kw):
    return anthropic.Anthropic(base_url=proxy.url, api_key="k", max_retries=0, timeout=30, **kw)


# ---- timeouts ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("stream", [False, True])
def test_backend_silent_before_first_byte_is_a_timely_504(make_proxy, backend, stream):
    proxy = make_proxy(model="hang-x", read_timeout=0.5, retries=2)
    start = time.monotonic()
    r = httpx.post(proxy.url + "/v1/messages", json=ask(stream=stream), timeout=10)
    took = time.monotonic() - start
    assert r.status_code == 504 and r.json()["error"]["type"] == "timeout_error", r.text
    assert "--read-timeout" in r.json()["error"]["message"]
    assert took < 3  # a read timeout is not retried: it would only wait again
    assert backend.calls["hang-x"] == 1


def test_backend_stalling_mid_stream_ends_in_error_event(make_proxy, backend):
    proxy = make_proxy(model="stall-x", read_timeout=0.5)
    start = time.monotonic()
    raw = httpx.post(proxy.url + "/v1/messages", json=ask("a long answer please", stream=True), timeout=10)
    events = parse_sse_bytes(raw.content)
    assert_anthropic_grammar(events, expect_error=True)
    assert events[-1][1]["error"]["type"] == "timeout_error" and time.monotonic() - start < 3


def test_connect_timeout_against_a_full_backlog(make_proxy):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(8):  # fill the accept queue; further SYNs are dropped and connect() hangs
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    time.sleep(0.1)
    try:
        proxy = make_proxy(url=f"http://127.0.0.1:{port}/v1", connect_timeout=0.5, retries=1)
        start = time.monotonic()
        r = httpx.post(proxy.url + "/v1/messages", json=ask(), timeout=15)
        took = time.monotonic() - start
        assert r.status_code == 504 and "--connect-timeout" in r.json()["error"]["message"], r.text
        assert 0.9 < took < 6  # two attempts of 0.5 s plus a short backoff
    finally:
        for s in fillers:
            s.close()
        listener.close()


def test_healthy_slow_stream_is_not_cut(make_proxy):
    proxy = make_proxy(model="trickle-0.15", read_timeout=0.5)  # total ~3 s, each gap below the timeout
    with client(proxy).messages.stream(**ask("x" * 30)) as s:
        msg = s.get_final_message()
    assert msg.stop_reason == "end_turn" and msg.content[0].text.startswith("Hello from trickle")


# ---- retries ------------------------------------------------------------------------------------------

def test_5xx_retried_until_success(make_proxy, backend):
    proxy = make_proxy(model="flaky-2", retries=2)
    assert client(proxy).messages.create(**ask()).content[0].text.startswith("Hello")
    assert backend.calls["flaky-2"] == 3


def test_retry_after_honoured(make_proxy, backend):
    proxy = make_proxy(model="ratelimited-1", retries=1)
    start = time.monotonic()
    client(proxy).messages.create(**ask())
    assert time.monotonic() - start >= 0.95 and backend.calls["ratelimited-1"] == 2


def test_long_retry_after_is_passed_to_the_client_at_once(make_proxy, backend):
    proxy = make_proxy(model="ratelimited-120", retries=2)
    start = time.monotonic()
    with pytest.raises(anthropic.RateLimitError) as info:
        client(proxy).messages.create(**ask())
    assert time.monotonic() - start < 2
    assert info.value.response.headers["retry-after"] == "120" and backend.calls["ratelimited-120"] == 1


def test_connection_reset_is_retried_then_reported(make_proxy, backend):
    proxy = make_proxy(model="reset-x", retries=1)
    with pytest.raises(anthropic.InternalServerError) as info:
        client(proxy).messages.create(**ask())
    assert info.value.status_code == 502 and backend.calls["reset-x"] == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
def test_client_errors_are_never_retried(make_proxy, backend, status):
    proxy = make_proxy(model=f"status-{status}-x", retries=2)
    r = httpx.post(proxy.url + "/v1/messages", json=ask())
    assert r.status_code == (400 if status == 422 else status)
    assert backend.calls[f"status-{status}-x"] == 1


def test_no_retry_once_the_answer_started(make_proxy, backend):
    proxy = make_proxy(model="cut-x", retries=2)
    raw = httpx.post(proxy.url + "/v1/messages", json=ask("a long story", stream=True)).content
    assert_anthropic_grammar(parse_sse_bytes(raw), expect_error=True)
    assert backend.calls["cut-x"] == 1


# ---- client disconnects -----------------------------------------------------------------------------------

async def _abort_after(url: str, body: dict, read_first_chunk: bool, delay: float) -> float:
    async with aiohttp.ClientSession() as session:
        resp = await session.post(url, json=body)
        if read_first_chunk:
            await resp.content.readany()
        await asyncio.sleep(delay)
        resp.close()  # the client goes away
        return asyncio.get_running_loop().time()


@pytest.mark.parametrize("model,stream,first_chunk", [
    ("trickle-0.3", True, True),   # mid-stream
    ("hang-x", True, False),       # waiting for the first token
    ("hang-y", False, False),      # a JSON request
])
def test_client_disconnect_cancels_upstream_within_a_second(loop_thread, make_proxy, backend, model, stream,
                                                             first_chunk):
    proxy = make_proxy(model=model)
    tasks_before = loop_thread.run(_task_count())

    async def scenario():
        body = ask("a long story please " * 3, stream=stream)
        if first_chunk:
            return await _abort_after(proxy.url + "/v1/messages", body, True, 0.1)
        async with aiohttp.ClientSession() as session:
            task = asyncio.ensure_future(session.post(proxy.url + "/v1/messages", json=body))
            await asyncio.sleep(0.3)
            task.cancel()  # the client gives up before any answer
            gone = asyncio.get_running_loop().time()
            await asyncio.gather(task, return_exceptions=True)
        return gone

    gone = loop_thread.run(scenario())
    deadline = time.monotonic() + 3
    while not backend.aborts and time.monotonic() < deadline:
        time.sleep(0.02)
    assert backend.aborts, "the backend never saw the proxy go away"
    assert backend.aborts[0][1] - gone < 1.0
    time.sleep(0.2)
    state = proxy.app[__import__("claude_proxy").STATE_KEY]
    assert not state.inflight
    assert loop_thread.run(_task_count()) <= tasks_before + 1  # no leaked handler or keep-alive tasks


async def _task_count() -> int:
    await asyncio.sleep(0.05)
    return len([t for t in asyncio.all_tasks() if not t.done()])


# ---- keep-alive ---------------------------------------------------------------------------------------

def test_silent_backend_gets_anthropic_pings_and_the_sdk_is_unaffected(make_proxy):
    proxy = make_proxy(model="silent-1.0", ping_interval=0.2)
    raw = httpx.post(proxy.url + "/v1/messages", json=ask(stream=True), timeout=10).content
    events = parse_sse_bytes(raw)
    assert sum(1 for e, _ in events if e == "ping") >= 4
    assert_anthropic_grammar(events)
    with client(proxy).messages.stream(**ask()) as s:
        assert s.get_final_message().stop_reason == "end_turn"


def test_silent_backend_gets_sse_comments_on_the_openai_side(make_proxy):
    proxy = make_proxy(model="silent-1.0", ping_interval=0.2)
    body = {"model": "claude-x", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    raw = httpx.post(proxy.url + "/v1/chat/completions", json=body, timeout=10).text
    assert raw.count(": ping\n\n") >= 3
    chunks = list(openai.OpenAI(base_url=proxy.url + "/v1", api_key="k", max_retries=0)
                  .chat.completions.create(**body))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith("Hello")


# ---- load -----------------------------------------------------------------------------------------------

def test_hundreds_of_concurrent_streams_all_complete_and_a_hung_one_delays_none(loop_thread, make_proxy, backend):
    proxy = make_proxy(model="trickle-0.02")
    hung = make_proxy(model="hang-z")

    async def one(session, i):
        async with session.post(proxy.url + "/v1/messages", json=ask(f"request {i}", stream=True)) as r:
            return r.status, await r.read()

    async def scenario():
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            hang_task = asyncio.ensure_future(session.post(hung.url + "/v1/messages", json=ask(stream=True)))
            start = asyncio.get_running_loop().time()
            results = await asyncio.gather(*(one(session, i) for i in range(300)))
            took = asyncio.get_running_loop().time() - start
            hang_task.cancel()
            await asyncio.gather(hang_task, return_exceptions=True)
            return results, took

    results, took = loop_thread.run(scenario(), timeout=120)
    assert all(status == 200 for status, _ in results)
    for i, (_, raw) in enumerate(results):
        events = parse_sse_bytes(raw)
        assert_anthropic_grammar(events)
        text = "".join(d["delta"].get("text", "") for e, d in events if e == "content_block_delta")
        assert text.endswith(f"request {i}")  # every answer reached its own client
    assert took < 60


# ---- bad input, fuzzed -----------------------------------------------------------------------------------

def _mutations(seed: int, base: dict, count: int):
    import random
    rnd = random.Random(seed)
    junk = [None, 0, -1, 10**20, 1.5, float("nan"), "", "x" * 3, [], {}, [{}], {"type": "zzz"}, True,
            {"type": "text"}, {"type": "image", "source": {}}, [None], "\u0000", {"role": "user"}, [1], ["x"],
            {"properties": [1]}, {"$ref": 5}, {"type": ["string", 1]}, {"items": "x"}, {"text": 5},
            {"type": "document", "source": {"type": "content", "content": 5}}, {"type": "tool", "name": 5}]

    def paths(obj, prefix=()):
        yield prefix
        if isinstance(obj, dict):
            for k, v in obj.items():
                yield from paths(v, prefix + (k,))
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                yield from paths(v, prefix + (i,))

    all_paths = list(paths(base))
    for _ in range(count):
        body = json.loads(json.dumps(base))
        for _ in range(rnd.randint(1, 3)):
            path = rnd.choice(all_paths)
            if not path:
                continue
            target = body
            try:
                for p in path[:-1]:
                    target = target[p]
                if rnd.random() < 0.2 and isinstance(target, dict):
                    target.pop(path[-1], None)
                else:
                    target[path[-1]] = copy.deepcopy(rnd.choice(junk))
            except (KeyError, IndexError, TypeError):
                continue
        yield body


CLAUDE_CODE_LIKE = {
    "model": "claude-sonnet-5", "max_tokens": 64000, "stream": True,
    "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
    "tools": [{"name": "Read", "description": "Read", "input_schema": {
        "type": "object", "properties": {"file_path": {"type": "string"}}, "required": ["file_path"]}},
              {"name": "mcp.edit", "input_schema": {
                  "type": "object", "$defs": {"Edit": {"type": "object", "properties": {"old": {"type": "string"}}}},
                  "definitions": {"Pos": {"type": "integer"}},
                  "properties": {"edits": {"type": "array", "items": {"$ref": "#/$defs/Edit"}},
                                 "at": {"anyOf": [{"$ref": "#/definitions/Pos"}, {"type": "null"}]},
                                 "mode": {"allOf": [{"properties": {"x": {"type": "string"}}, "required": ["x"]}]}},
                  "required": ["edits"]}}],
    "tool_choice": {"type": "auto"}, "thinking": {"type": "adaptive"}, "metadata": {"user_id": "u"},
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "read it"}]},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": ""},
                                          {"type": "tool_use", "id": "toolu_1", "name": "Read",
                                           "input": {"file_path": "/x"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [
            {"type": "text", "text": "data"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}},
            {"type": "search_result", "title": "t", "source": "s", "content": [{"type": "text", "text": "r"}]}]},
            {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": "d"}]}},
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "AA=="}},
            {"type": "text", "text": "go on"}]}]}

OPENAI_LIKE = {
    "model": "claude-x", "stream": False, "max_tokens": 100, "temperature": 0.5, "stop": ["x"],
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}},
              {"type": "function", "function": {"name": "g.h", "parameters": {
                  "type": "object", "properties": {"a": {"type": "array", "items": {"$ref": "#/$defs/A"}}},
                  "$defs": {"A": {"type": "string"}}, "required": ["a"]}}}],
    "tool_choice": {"type": "function", "function": {"name": "f"}},
    "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": {
        "type": "object", "properties": {"v": {"anyOf": [{"type": "string"}, {"type": "integer"}]}}}}},
    "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": [
        {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,AA=="}},
        {"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "r"}]}


def _post_mutations(loop_thread, url: str, seed: int, base: dict, count: int) -> list[tuple[int, bytes, str]]:
    """POST ``count`` seeded mutations of ``base``; (status, body head, request head) for each."""
    async def run():
        out = []
        async with aiohttp.ClientSession() as session:
            for body in _mutations(seed, base, count):
                data = json.dumps(body, allow_nan=True)
                async with session.post(url, data=data, headers={"content-type": "application/json"}) as r:
                    out.append((r.status, (await r.read())[:300], data[:300]))
        return out
    return loop_thread.run(run(), timeout=120)


def test_fuzzed_anthropic_bodies_never_5xx(loop_thread, make_proxy, backend):
    proxy = make_proxy()
    for status, raw, data in _post_mutations(loop_thread, proxy.url + "/v1/messages", 1234, CLAUDE_CODE_LIKE, 300):
        assert status < 500, (status, raw, data)
        if status >= 400:
            err = json.loads(raw)
            assert err["type"] == "error" and err["error"]["message"]


def test_deeply_nested_input_is_translated_or_refused_never_a_500(make_proxy, backend):
    """orjson stops at 255 levels where the standard library goes on: the proxy must not care which it has."""
    deep: dict = {}
    cur = deep
    for _ in range(300):
        cur["a"] = {}
        cur = cur["a"]
    body = {"model": "claude-x", "max_tokens": 10, "messages": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": deep}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]}]}
    r = httpx.post(make_proxy().url + "/v1/messages", content=json.dumps(body), timeout=20,
                   headers={"content-type": "application/json"})
    assert r.status_code in (200, 400), r.text


@pytest.mark.parametrize("door,body,field", [
    ("anthropic", {"tools": [{"name": "t", "input_schema": {"type": "object", "definitions": [1]}}]},
     "tools.0.input_schema.definitions"),
    ("anthropic", {"tools": [{"name": "t", "input_schema": {"type": "object", "allOf": [{"properties": [1]}]}}]},
     "tools.0.input_schema.allOf.0.properties"),
    ("anthropic", {"messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "content", "content": 5}}]}]}, "messages.0.content.0.source.content"),
    ("anthropic", {"messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "base64", "media_type": 5, "data": "AA=="}}]}]},
     "messages.0.content.0.source.media_type"),
    ("anthropic", {"messages": [{"role": "user", "content": [
        {"type": "search_result", "title": "t", "source": "s", "content": [{"type": "text", "text": 5}]}]}]},
     "messages.0.content.0.content.0.text"),
    ("openai", {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": "x"}}},
     "response_format.json_schema.schema"),
    ("openai", {"stream": True, "stream_options": "yes"}, "stream_options"),
    ("openai", {"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"items": "x"}}}}}]}, "tools[0].function.parameters.properties.a.items"),
])
def test_malformed_client_bodies_are_400s_naming_the_field_and_not_retried(make_proxy, loop_thread_claude_backend,
                                                                          door, body, field):
    """Issue #9 defect 3: these were 500s, and 500s carry x-should-retry: true."""
    if door == "anthropic":
        proxy, path = make_proxy(), "/v1/messages"
        body = {"model": "claude-x", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], **body}
    else:
        proxy = make_proxy(backend="anthropic", url=f"127.0.0.1:{loop_thread_claude_backend.port}", api_key="k")
        path, body = "/v1/chat/completions", {"model": "claude-x", "messages": [{"role": "user", "content": "hi"}],
                                              **body}
    r = httpx.post(proxy.url + path, json=body, timeout=10)
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert message.startswith(field + ":"), message
    assert r.headers["x-should-retry"] == "false"


def test_fuzzed_openai_bodies_never_5xx(loop_thread, make_proxy, loop_thread_claude_backend):
    proxy = make_proxy(backend="anthropic", url=f"127.0.0.1:{loop_thread_claude_backend.port}", api_key="k")
    for status, raw, data in _post_mutations(loop_thread, proxy.url + "/v1/chat/completions", 99, OPENAI_LIKE, 300):
        assert status < 500, (status, raw, data)
        if status >= 400:
            assert json.loads(raw)["error"]["message"]


@pytest.fixture
def loop_thread_claude_backend(loop_thread):
    from fake_anthropic import FakeAnthropic
    fake = FakeAnthropic(key="k")
    loop_thread.run(fake.start())
    yield fake
    loop_thread.run(fake.stop())


def test_translators_raise_only_400s_under_hypothesis():
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    import claude_proxy as cp

    leaf = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=False),
                     st.text(max_size=8), st.sampled_from(["user", "assistant", "system", "tool", "text", "image",
                                                           "tool_use", "tool_result", "function", "object", "document",
                                                           "search_result", "content", "base64", "json_schema",
                                                           "#/$defs/A", "array", "string"]))
    value = st.recursive(leaf, lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(["type", "role", "content", "text", "source", "id", "name", "input",
                                         "tool_use_id", "tool_calls", "function", "arguments", "image_url", "url",
                                         "data", "media_type", "tool_call_id", "is_error", "input_schema",
                                         "parameters", "properties", "$defs", "definitions", "$ref", "allOf", "anyOf",
                                         "items", "required", "title", "file", "file_data", "schema", "json_schema",
                                         "response_format"]), inner, max_size=5)),
        max_leaves=25)

    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
    @given(messages=value, tools=value, extra=value, fmt=value)
    def check(messages, tools, extra, fmt):
        for fn, body in ((cp.anthropic_to_openai_request,
                          {"model": "m", "max_tokens": 10, "messages": messages, "tools": tools, "tool_choice": extra}),
                         (cp.openai_to_anthropic_request,
                          {"model": "m", "messages": messages, "tools": tools, "tool_choice": extra,
                           "response_format": fmt})):
            try:
                fn(body, "backend-model")
            except cp.ProxyError as exc:
                assert exc.status == 400 and exc.message

    check()


# ---- graceful shutdown -----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_drains_finishing_streams_and_cuts_the_rest(loop_thread, backend):
    port = free_port()
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "claude_proxy.py"), "--url",
                             f"127.0.0.1:{backend.port}/v1", "--port", str(port), "--drain-timeout", "1.5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        proc.stdout.readline()
        url = f"http://127.0.0.1:{port}/v1/messages"

        async def scenario():
            async with aiohttp.ClientSession() as session:
                async def stream(model, text):
                    async with session.post(url, json=ask(text, model=model, stream=True)) as r:
                        return await r.read()
                short = asyncio.ensure_future(stream("trickle-0.05", "short answer"))  # ~1 s in all
                long = asyncio.ensure_future(stream("trickle-0.4", "a much longer answer than the other"))
                await asyncio.sleep(0.3)
                proc.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.3)
                try:
                    async with session.post(url, json=ask()) as r:
                        refused = r.status
                except aiohttp.ClientError:
                    refused = "refused"
                return await short, await long, refused

        short, long, refused = loop_thread.run(scenario(), timeout=30)
        assert refused in ("refused", 503)
        assert_anthropic_grammar(parse_sse_bytes(short))
        events = parse_sse_bytes(long)
        assert_anthropic_grammar(events, expect_error=True)
        assert "shutting down" in events[-1][1]["error"]["message"]
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
