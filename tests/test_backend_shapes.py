"""Backend answers of the wrong shape, and failures after a stream has started (issue #9, defects 2 and 4).

A scripted backend on 127.0.0.1 sends exactly the bytes each test gives it; the clients are the official SDKs.
Once the first byte has gone to the client, every failure must flush what was translated and end the stream
with an error in the client's dialect; JSON answers of the wrong shape are 502s naming the backend.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import anthropic
import httpx
import openai
import pytest
from aiohttp import web
from fake_openai import LoopbackServer

import claude_proxy as cp

BAD_TOOL_NAME = {"choices": [{"index": 0, "delta": {"tool_calls": [
    {"index": 0, "id": "a", "function": {"name": ["x"]}}]}}]}  # the chunk from the issue


class Scripted(LoopbackServer):
    """Answers every POST with ``self.status``, ``self.content_type`` and ``self.parts``, each its own write."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.content_type = "text/event-stream"
        self.status = 200
        self.peers: list[tuple] = []  # the client address of each request: one per connection
        self.pause_before_end = 0.0  # a real server's last write (the chunked end) may come a moment later
        self.pause_before_parts = 0.0  # a model thinking before its first token

    async def answer(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.peers.append(request.transport.get_extra_info("peername"))
        resp = web.StreamResponse(status=self.status, headers={"Content-Type": self.content_type})
        await resp.prepare(request)
        await asyncio.sleep(self.pause_before_parts)
        for part in self.parts:
            await resp.write(part)
        await asyncio.sleep(self.pause_before_end)
        await resp.write_eof()
        return resp

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.answer)
        return app


@pytest.fixture
def scripted(loop_thread):
    server = Scripted()
    loop_thread.run(server.start())
    yield server
    loop_thread.run(server.stop())


def sse(*chunks: object) -> list[bytes]:
    return [b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks]


def chunk(delta: dict, finish: str | None = None) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def anthropic_client(proxy) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proxy.url, api_key="x", max_retries=0, timeout=10)


BODY = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}


def raw_stream(proxy, path: str, body: dict) -> bytes:
    return httpx.post(proxy.url + path, json={**body, "stream": True}, timeout=10).content


def test_a_tool_name_of_the_wrong_type_mid_stream_ends_in_an_error_event(make_proxy, scripted):
    scripted.parts = sse(chunk({"role": "assistant", "content": "Let me look."}), BAD_TOOL_NAME)
    proxy = make_proxy(url=f"http://127.0.0.1:{scripted.port}/v1")
    raw = raw_stream(proxy, "/v1/messages", BODY)
    assert b"HTTP/1.1" not in raw and b"500" not in raw
    events = [(e.event, json.loads(e.data)) for e in cp.SSEParser().feed(raw)]
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "ping", "content_block_start"] and names[-1] == "error"
    assert "message_stop" not in names
    assert "".join(d["delta"].get("text", "") for n, d in events if n == "content_block_delta") == "Let me look."
    message = events[-1][1]["error"]["message"]
    assert "function.name is a list" in message and "(backend default)" in message
    with pytest.raises(anthropic.APIStatusError) as info, anthropic_client(proxy).messages.stream(**BODY) as stream:
        for _ in stream:
            pass
    assert "function.name is a list" in str(info.value)


@pytest.mark.parametrize("body,what", [
    ([1], "the answer is a list"),
    ({"choices": {"0": {}}}, "choices is a table"),
    ({"choices": [{"message": {"content": None, "tool_calls": [
        {"id": "c", "function": {"name": 5, "arguments": "{}"}}]}, "finish_reason": "tool_calls"}]},
     "function.name is an integer"),
    ({"choices": [{"message": "hi"}]}, "choices[0].message is a string"),
    ({"choices": [{"message": {"content": {"text": "x"}}}]}, "content"),
])
def test_json_answers_of_the_wrong_shape_are_502s_naming_the_backend(make_proxy, scripted, body, what):
    scripted.content_type, scripted.parts = "application/json", [json.dumps(body).encode()]
    proxy = make_proxy(url=f"http://127.0.0.1:{scripted.port}/v1")
    r = httpx.post(proxy.url + "/v1/messages", json=BODY, timeout=10)
    assert r.status_code == 502, r.text
    message = r.json()["error"]["message"]
    assert what in message and "backend default" in message
    assert r.headers["x-should-retry"] == "false"


def test_tolerable_quirks_still_answer(make_proxy, scripted):
    """Arguments as an object (some servers) and usage counts as strings do not cost the user the answer."""
    body = {"choices": [{"message": {"content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "Read", "arguments": {"path": "/x"}}}]},
        "finish_reason": "tool_calls"}], "usage": {"prompt_tokens": "12", "completion_tokens": "3"}}
    scripted.content_type, scripted.parts = "application/json", [json.dumps(body).encode()]
    proxy = make_proxy(url=f"http://127.0.0.1:{scripted.port}/v1")
    msg = anthropic_client(proxy).messages.create(**BODY)
    assert msg.content[0].input == {"path": "/x"} and msg.stop_reason == "tool_use"
    assert msg.usage.output_tokens == cp.estimate_output_tokens(["Read", '{"path":"/x"}'])


def test_a_stream_request_answered_with_a_whole_json_body_is_replayed_as_a_stream(make_proxy, scripted):
    body = {"id": "chatcmpl-9", "choices": [{"index": 0, "finish_reason": "stop",
                                             "message": {"role": "assistant", "content": "whole"}}]}
    scripted.content_type, scripted.parts = "application/json", [json.dumps(body).encode()]
    proxy = make_proxy(url=f"http://127.0.0.1:{scripted.port}/v1")
    with anthropic_client(proxy).messages.stream(**BODY) as stream:
        message = stream.get_final_message()
    assert message.content[0].text == "whole" and message.stop_reason == "end_turn"
    scripted.parts = [b"[1]"]
    events = [e.event for e in cp.SSEParser().feed(raw_stream(proxy, "/v1/messages", BODY))]
    assert events == ["message_start", "ping", "error"]


ANTHROPIC_START = [(b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","type":"message",'
                   b'"role":"assistant","model":"c","content":[],"usage":{"input_tokens":3,"output_tokens":1}}}\n\n'),
                   (b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
                   b'"content_block":{"type":"text","text":""}}\n\n'),
                   (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
                   b'"delta":{"type":"text_delta","text":"Partial"}}\n\n')]


@pytest.mark.parametrize("bad", [
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":"0","delta":{"type":"text_delta"}}\n\n',
    (b'event: content_block_start\ndata: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use",'
    b'"id":"t","name":7,"input":{}}}\n\n'),
    b'event: content_block_delta\ndata: [1, 2]\n\n',
    b'event: content_block_delta\ndata: {not json\n\n',
])
def test_openai_clients_get_an_error_chunk_then_done_after_a_malformed_event(make_proxy, scripted, bad):
    scripted.parts = ANTHROPIC_START + [bad]
    proxy = make_proxy(backend="anthropic", url=f"127.0.0.1:{scripted.port}", api_key="k")
    body = {"model": "claude-x", "messages": [{"role": "user", "content": "hi"}]}
    raw = raw_stream(proxy, "/v1/chat/completions", body)
    frames = [f for f in raw.split(b"\n\n") if f.startswith(b"data: ")]
    assert frames[-1] == b"data: [DONE]" and b"error" in frames[-2] and b"Partial" in raw
    error = json.loads(frames[-2][6:])["error"]
    assert "malformed answer" in error["message"] and "(backend default)" in error["message"]
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="x", max_retries=0, timeout=10)
    with pytest.raises(openai.APIError, match="malformed answer"):
        for _ in client.chat.completions.create(**body, stream=True):
            pass


def test_a_bug_after_the_first_byte_still_ends_the_stream_properly_and_logs_once(make_proxy, scripted, monkeypatch,
                                                                               caplog):
    """Fault injection: the translator fails in a way nobody foresaw (a KeyError) after text went out."""
    scripted.parts = sse(chunk({"content": "Hello"}), chunk({"content": "boom"}), chunk({}, "stop"))
    original = cp.OpenAIToAnthropicStream._delta_events

    def faulty(self, delta):
        if delta.get("content") == "boom":
            raise KeyError("surprise")
        return original(self, delta)

    monkeypatch.setattr(cp.OpenAIToAnthropicStream, "_delta_events", faulty)
    proxy = make_proxy(url=f"http://127.0.0.1:{scripted.port}/v1")
    with caplog.at_level(logging.INFO, logger="claude_proxy"):
        raw = raw_stream(proxy, "/v1/messages", BODY)
    events = [(e.event, json.loads(e.data)) for e in cp.SSEParser().feed(raw)]
    assert [n for n, _ in events][-1] == "error" and b"HTTP/1.1" not in raw and b"Hello" in raw
    assert "could not translate the answer of backend default (KeyError)" in events[-1][1]["error"]["message"]
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and "surprise" in str(tracebacks[0].exc_info[1])


@pytest.mark.parametrize("door", ["anthropic", "openai"])
def test_finished_streams_give_their_backend_connection_back_to_the_pool(make_proxy, scripted, door):
    """The stream ends at [DONE] (or message_stop) before the chunked body does; reading that end lets the
    connection be reused, where closing it would cost a TCP and TLS handshake on every request."""
    if door == "anthropic":
        scripted.parts = sse(chunk({"content": "hi"}), chunk({}, "stop")) + [b"data: [DONE]\n\n"]
        proxy, path, body = make_proxy(url=f"http://127.0.0.1:{scripted.port}/v1"), "/v1/messages", BODY
    else:
        scripted.parts = ANTHROPIC_START + [
            b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n',
            (b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
             b'"usage":{"output_tokens":2}}\n\n'), b'event: message_stop\ndata: {"type":"message_stop"}\n\n']
        proxy = make_proxy(backend="anthropic", url=f"127.0.0.1:{scripted.port}", api_key="k")
        path, body = "/v1/chat/completions", {"model": "claude-x", "messages": [{"role": "user", "content": "hi"}]}
    scripted.pause_before_end = 0.05
    with httpx.Client(timeout=10) as client:  # keeps its connection, as the SDKs and Claude Code do
        for _ in range(3):
            assert b"error" not in client.post(proxy.url + path, json={**body, "stream": True}).content
            time.sleep(0.2)  # the client reads the answer; the proxy meanwhile reads the body's end
    assert len(scripted.peers) == 3 and len(set(scripted.peers)) == 1, scripted.peers


def test_message_start_comes_first_even_when_the_backend_is_slow_to_begin(make_proxy, scripted):
    """Keep-alive pings may only follow message_start: the Anthropic grammar starts with it."""
    scripted.parts = sse(chunk({"content": "late"}), chunk({}, "stop")) + [b"data: [DONE]\n\n"]
    scripted.pause_before_parts = 0.5
    proxy = make_proxy(url=f"http://127.0.0.1:{scripted.port}/v1", ping_interval=0.1)
    events = [e.event for e in cp.SSEParser().feed(raw_stream(proxy, "/v1/messages", BODY))]
    assert events[0] == "message_start" and events.count("ping") >= 3 and events[-1] == "message_stop", events
