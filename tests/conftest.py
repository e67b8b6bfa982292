"""Shared harness: a background event loop running real servers on 127.0.0.1, and stream-grammar checks."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from typing import Any

import pytest
from aiohttp import web

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fake_openai import FakeOpenAI

import claude_proxy


class LoopThread:
    """One asyncio loop in a daemon thread; tests run coroutines on it and keep using sync SDK clients."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(autouse=True, scope="session")
def bounded_shrinking():
    """Hypothesis shrinks a failure for up to 300 s; a few seconds already give a readable example and keep a
    failing run short. The limit is an engine constant, not a setting: where a Hypothesis version has no such
    constant, its default stands."""
    from hypothesis.internal.conjecture import engine
    saved = getattr(engine, "MAX_SHRINKING_SECONDS", None)
    if saved is not None:
        engine.MAX_SHRINKING_SECONDS = 5
    yield
    if saved is not None:
        engine.MAX_SHRINKING_SECONDS = saved


@pytest.fixture(scope="session")
def loop_thread():
    lt = LoopThread()
    yield lt
    lt.stop()


@pytest.fixture
def backend(loop_thread):
    fake = FakeOpenAI()
    loop_thread.run(fake.start())
    yield fake
    loop_thread.run(fake.stop())


class ProxyServer:
    def __init__(self, loop_thread: LoopThread, config: claude_proxy.Config):
        self.loop_thread = loop_thread
        self.config = config
        self.app = claude_proxy.make_app(config)
        self.runner = web.AppRunner(self.app, handler_cancellation=True, access_log=None)

        async def start() -> int:
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            return self.runner.addresses[0][1]

        self.port = loop_thread.run(start())
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.loop_thread.run(self.runner.cleanup())


@pytest.fixture
def make_proxy(loop_thread, backend):
    servers: list[ProxyServer] = []

    def factory(**overrides: Any) -> ProxyServer:
        opts = {"url": f"http://127.0.0.1:{backend.port}/v1", "model": "fake-model", "retries": 1}
        opts.update(overrides)
        server = ProxyServer(loop_thread, claude_proxy.Config(**opts))
        servers.append(server)
        return server

    yield factory
    for s in servers:
        s.close()


@pytest.fixture
def proxy(make_proxy):
    return make_proxy()


# ---- the Anthropic stream grammar (protocols.md C and J) ----------------------------------------------

def assert_anthropic_grammar(events: list[tuple[str, dict]], expect_error: bool = False) -> None:
    """Fail unless ``events`` is a stream the official SDKs (Python and TS) accept, event for event."""
    assert events, "empty stream"
    for name, data in events:
        assert data["type"] == name, f"event name {name!r} does not match data.type {data['type']!r}"
    names = [e for e, _ in events]
    assert names[0] == "message_start", names
    assert names.count("message_start") == 1
    assert "usage" in events[0][1]["message"] and "input_tokens" in events[0][1]["message"]["usage"]
    if expect_error:
        assert names[-1] == "error", f"a broken stream must end in an error event, got {names[-3:]}"
        assert "message_stop" not in names, "a broken stream must never end normally"
        body = events[-1][1]["error"]
        assert body["type"] and body["message"]
        events = events[:-1]
    else:
        assert names[-1] == "message_stop", names[-3:]
        assert names[-2] == "message_delta"
        md = events[-2][1]
        assert md["delta"]["stop_reason"] in ("end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal",
                                              "pause_turn")
        assert isinstance(md["usage"]["output_tokens"], int)
        assert (md["delta"].get("stop_sequence") is not None) == (md["delta"]["stop_reason"] == "stop_sequence")
    open_index = None
    next_index = 0
    blocks: dict[int, dict] = {}
    json_bufs: dict[int, str] = {}
    for name, data in events[1:]:
        if name == "content_block_start":
            assert open_index is None, "a block started while another is open (TS SDK misattributes deltas)"
            assert data["index"] == next_index, f"index {data['index']} where {next_index} was due"
            block = data["content_block"]
            if block["type"] == "tool_use":
                assert block["input"] == {} and block["id"] and block["name"]
                import re
                assert re.match(r"^[a-zA-Z0-9_-]+$", block["id"]), block["id"]
            blocks[data["index"]] = block
            open_index = data["index"]
            next_index += 1
        elif name == "content_block_delta":
            assert data["index"] == open_index, "delta for a block that is not open"
            kind = blocks[open_index]["type"]
            dtype = data["delta"]["type"]
            allowed = {"text": {"text_delta", "citations_delta"}, "thinking": {"thinking_delta", "signature_delta"},
                       "tool_use": {"input_json_delta"}, "server_tool_use": {"input_json_delta"}}.get(kind, set())
            assert dtype in allowed, f"{dtype} inside a {kind} block"
            if dtype == "input_json_delta":
                json_bufs[open_index] = json_bufs.get(open_index, "") + data["delta"]["partial_json"]
        elif name == "content_block_stop":
            assert data["index"] == open_index
            open_index = None
        elif name in ("message_delta", "message_stop", "ping"):
            if name != "ping":
                assert open_index is None, f"{name} while block {open_index} is open"
        else:
            raise AssertionError(f"unexpected event {name}")
    if not expect_error:
        import json
        for idx, buf in json_bufs.items():
            assert isinstance(json.loads(buf), dict), f"tool input of block {idx} is not a JSON object: {buf!r}"


def accumulate_with_sdk(events: list[tuple[str, dict]]):
    """Run the events through the anthropic SDK's own accumulator; returns its final Message."""
    from anthropic.lib.streaming._messages import accumulate_event

    snapshot = None
    json_bufs: dict[int, bytes] = {}
    for name, data in events:
        if name in ("ping", "error"):
            continue
        snapshot = accumulate_event(event=data, current_snapshot=snapshot, json_bufs=json_bufs)
    return snapshot


def parse_sse_bytes(raw: bytes) -> list[tuple[str, dict]]:
    import json
    parser = claude_proxy.SSEParser()
    events = parser.feed(raw) + parser.close()
    return [(e.event, json.loads(e.data)) for e in events]


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, seconds: float = 10) -> None:
    """Until something accepts on 127.0.0.1:port (a proxy started as a subprocess)."""
    import socket
    import time
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listening on 127.0.0.1:{port} after {seconds}s")
