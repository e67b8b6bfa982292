"""End to end: the official anthropic SDK → claude_proxy → a strict fake OpenAI backend, all on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import time

import anthropic
import httpx
import pytest
from test_translate_request import CLAUDE_CODE_READ_SCHEMA

CLAUDE_TOOLS = [{"name": "Read", "description": "Read a file", "input_schema": CLAUDE_CODE_READ_SCHEMA,
                 "cache_control": {"type": "ephemeral"}},
                {"name": "Bash", "description": "Run a command", "input_schema": {
                    "$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
                    "properties": {"command": {"type": "string"}, "timeout": {"type": "number", "default": 120}},
                    "required": ["command"], "additionalProperties": False}},
                {"type": "web_search_20250305", "name": "web_search", "max_uses": 2}]


def client(proxy, key="client-key", **kw) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proxy.url, api_key=key, max_retries=0, timeout=20, **kw)


def ask(text, **kw):
    return {"model": "claude-sonnet-5", "max_tokens": 1024, "messages": [{"role": "user", "content": text}], **kw}


def test_create_and_stream_agree_and_client_key_is_forwarded(proxy, backend):
    c = client(proxy)
    made = c.messages.create(**ask("hello"))
    assert made.content[0].text == "Hello from fake-model! You said: hello"
    assert made.model == "claude-sonnet-5" and made.stop_reason == "end_turn"
    assert made.usage.input_tokens > 0 and made.usage.output_tokens > 0
    with c.messages.stream(**ask("hello")) as stream:
        streamed = stream.get_final_message()
    assert [b.model_dump() for b in streamed.content] == [b.model_dump() for b in made.content]
    assert streamed.stop_reason == made.stop_reason
    assert streamed.usage.input_tokens > 0  # real count from the backend, in message_delta
    assert backend.headers[0]["Authorization"] == "Bearer client-key"
    assert backend.requests[1]["stream"] is True and backend.requests[1]["stream_options"] == {"include_usage": True}
    assert backend.requests[0]["model"] == "fake-model"


def test_configured_key_replaces_the_clients(make_proxy, backend):
    backend.key = "sk-backend-secret"
    proxy = make_proxy(api_key="sk-backend-secret")
    assert client(proxy, key="whatever").messages.create(**ask("hi")).content[0].text.startswith("Hello")
    assert backend.headers[-1]["Authorization"] == "Bearer sk-backend-secret"


def test_old_sdk_generation_headers_x_api_key_and_version(proxy, backend):
    r = httpx.post(proxy.url + "/v1/messages?beta=true", json=ask("hi"),
                   headers={"x-api-key": "old-key", "anthropic-version": "2023-06-01",
                            "anthropic-beta": "interleaved-thinking-2025-05-14,unknown-beta"})
    assert r.status_code == 200 and r.json()["content"][0]["type"] == "text"
    assert r.headers["request-id"].startswith("req_")
    assert backend.headers[-1]["Authorization"] == "Bearer old-key"


@pytest.mark.parametrize("model", ["fake-model", "fake-gemini-2.5-pro", "fake-ollama"])
def test_parallel_tool_calls_stream_and_json(make_proxy, backend, model):
    proxy = make_proxy(model=model)
    c = client(proxy)
    prompt = 'Do both. TOOL_CALL:Read:{"file_path":"/tmp/a.txt"} TOOL_CALL:Bash:{"command":"ls -la"}'
    with c.messages.stream(**ask(prompt, tools=CLAUDE_TOOLS)) as stream:
        streamed = stream.get_final_message()
    made = c.messages.create(**ask(prompt, tools=CLAUDE_TOOLS))
    for msg in (streamed, made):
        assert [(b.type, b.name, b.input) for b in msg.content] == [
            ("tool_use", "Read", {"file_path": "/tmp/a.txt"}), ("tool_use", "Bash", {"command": "ls -la"})]
        assert msg.stop_reason == "tool_use"
    sent = backend.requests[-1]
    assert [t["function"]["name"] for t in sent["tools"]] == ["Read", "Bash", "web_search"]  # the proxy runs it
    assert "$schema" not in json.dumps(sent["tools"])  # the Gemini-strict fake would have answered 400


def test_full_tool_loop_with_results_images_and_system_turns(proxy, backend):
    c = client(proxy)
    first = c.messages.create(**ask('TOOL_CALL:Read:{"file_path":"/x"}', tools=CLAUDE_TOOLS))
    call = first.content[0]
    history = [
        {"role": "user", "content": 'TOOL_CALL:Read:{"file_path":"/x"}'},
        {"role": "system", "content": "# Environment\nYou are in /tmp"},
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": call.id, "cache_control": {"type": "ephemeral"}, "content": [
                {"type": "text", "text": "1\tThe secret word is PINEAPPLE-42."},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]},
            {"type": "text", "text": "What does it say?"}]},
    ]
    with c.messages.stream(model="claude-opus-4-8", max_tokens=64000, messages=history, tools=CLAUDE_TOOLS,
                           thinking={"type": "adaptive"}, output_config={"effort": "high"},
                           extra_body={"context_management": {"edits": [{"type": "clear_thinking_20251015"}]}},
                           ) as stream:
        final = stream.get_final_message()
    assert final.content[0].text == "Hello from fake-model! You said: What does it say? [saw 1 image(s)]"
    sent = backend.requests[-1]
    assert sent["messages"][3] == {"role": "tool", "tool_call_id": call.id, "content":
                                   "1\tThe secret word is PINEAPPLE-42.\n[image attached in the next message]"}
    assert [m["role"] for m in sent["messages"]] == ["user", "system", "assistant", "tool", "user"]
    assert sent["messages"][4]["content"][0]["type"] == "image_url"
    assert "context_management" not in sent and "thinking" not in sent


def test_reasoning_becomes_a_thinking_block_and_comes_back_as_reasoning_content(proxy, backend):
    c = client(proxy)
    with c.messages.stream(**ask('THINK: TOOL_CALL:Bash:{"command":"pwd"}', tools=CLAUDE_TOOLS)) as stream:
        msg = stream.get_final_message()
    assert [b.type for b in msg.content] == ["thinking", "tool_use"]
    assert msg.content[0].thinking == "Let me think about this carefully."
    history = [{"role": "user", "content": "go"},
               {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in msg.content]},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": msg.content[1].id,
                                             "content": "/home"}]}]
    c.messages.create(model="claude-sonnet-5", max_tokens=100, messages=history, tools=CLAUDE_TOOLS)
    assert backend.requests[-1]["messages"][1]["reasoning_content"] == "Let me think about this carefully."


def test_documents_and_url_images_are_accepted(proxy, backend):
    c = client(proxy)
    msg = c.messages.create(**ask([
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQK"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
        {"type": "text", "text": "Describe"}]))
    assert "[saw 1 image(s)]" in msg.content[0].text
    parts = backend.requests[-1]["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["file", "image_url", "text"]


def test_max_tokens_above_backend_limit_is_retried_once_then_learned(make_proxy, backend):
    proxy = make_proxy(model="fake-small")
    c = client(proxy)
    msg = c.messages.create(**ask("hi", max_tokens=64000))
    assert msg.content[0].text.startswith("Hello")
    assert [r["max_tokens"] for r in backend.requests] == [64000, 8192]
    with c.messages.stream(**ask("again", max_tokens=32000)) as stream:
        stream.get_final_message()
    assert backend.requests[-1]["max_tokens"] == 8192 and len(backend.requests) == 3


def test_max_tokens_flag_caps(make_proxy, backend):
    proxy = make_proxy(max_tokens=4096)
    client(proxy).messages.create(**ask("hi", max_tokens=64000))
    assert backend.requests[-1]["max_tokens"] == 4096


def test_tier_models_route(make_proxy, backend):
    proxy = make_proxy(model="fake-main", haiku_model="fake-fast")
    c = client(proxy)
    c.messages.create(**{**ask("a"), "model": "claude-haiku-4-5-20251001"})
    c.messages.create(**{**ask("b"), "model": "claude-opus-4-8"})
    c.messages.create(**{**ask("c"), "model": "fake-custom"})
    assert [r["model"] for r in backend.requests] == ["fake-fast", "fake-main", "fake-custom"]


@pytest.mark.parametrize("model,exc,status,fragment", [
    ("unknown-model", anthropic.NotFoundError, 404, "does not exist"),
    ("status-400-x", anthropic.BadRequestError, 400, "Injected failure 400"),
    ("status-403-x", anthropic.PermissionDeniedError, 403, "Injected failure 403"),
    ("status-429-x", anthropic.RateLimitError, 429, "Injected failure 429"),
    ("status-500-x", anthropic.InternalServerError, 500, "Injected failure 500"),
    ("status-503-x", anthropic.InternalServerError, 503, "Injected failure 503"),
    ("html-x", anthropic.InternalServerError, 502, "502 Bad Gateway"),
])
@pytest.mark.parametrize("stream", [False, True])
def test_backend_errors_reach_the_client_in_anthropic_shape(make_proxy, backend, model, exc, status, fragment,
                                                            stream):
    proxy = make_proxy(model=model)
    with pytest.raises(exc) as info:
        if stream:
            with client(proxy).messages.stream(**ask("hi")) as s:
                s.get_final_message()
        else:
            client(proxy).messages.create(**ask("hi"))
    assert info.value.status_code == status
    assert fragment in info.value.message
    assert info.value.body["type"] == "error" and info.value.body["error"]["type"]
    retried = status in (429, 500, 502, 503)
    assert len(backend.requests) == (2 if retried else 1)  # retries=1 in these tests


def test_backend_auth_failure_never_echoes_the_key(make_proxy, backend):
    canary = "sk-canary-0123456789abcdef"
    backend.key = "sk-the-right-one"
    proxy = make_proxy(api_key=canary)
    with pytest.raises(anthropic.AuthenticationError) as info:
        client(proxy).messages.create(**ask("hi"))
    assert "Incorrect API key" in info.value.message
    assert canary not in json.dumps(info.value.body) and canary not in info.value.message


def test_unreachable_backend_is_a_prompt_502(make_proxy):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens here
    proxy = make_proxy(url=f"http://127.0.0.1:{port}/v1", retries=0)
    start = time.monotonic()
    with pytest.raises(anthropic.InternalServerError) as info:
        client(proxy).messages.create(**ask("hi"))
    assert time.monotonic() - start < 5
    assert info.value.status_code == 502 and f"127.0.0.1:{port}" in info.value.message
    assert info.value.body["error"]["type"] == "api_error"


def test_stream_cut_upstream_raises_in_the_sdk_never_a_normal_end(make_proxy):
    proxy = make_proxy(model="cut-model")
    with pytest.raises(anthropic.APIStatusError) as info, client(proxy).messages.stream(
            **ask("tell me a long story please")) as s:
        s.get_final_message()
    assert info.value.body["error"]["type"] == "api_error"
    raw = httpx.post(proxy.url + "/v1/messages", json=ask("tell me a long story please", stream=True)).text
    assert "event: error" in raw and "message_stop" not in raw


def test_stream_without_done_still_completes(make_proxy):
    proxy = make_proxy(model="nodone-model")
    with client(proxy).messages.stream(**ask("hi")) as s:
        assert s.get_final_message().content[0].text.startswith("Hello")


@pytest.mark.parametrize("body,fragment", [
    (b"{not json", "not valid JSON"),
    (b"", "empty"),
    (b"[1,2]", "JSON object"),
    (json.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}]}).encode(), "max_tokens"),
    (json.dumps({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}).encode(), "model"),
    (json.dumps({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "zzz"}]}]}).encode(),
     "zzz"),
    (json.dumps({"model": "m", "max_tokens": 5, "stream": "yes", "messages": []}).encode(), "messages"),
])
def test_bad_input_is_a_readable_400(proxy, backend, body, fragment):
    r = httpx.post(proxy.url + "/v1/messages", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400
    err = r.json()
    assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error"
    assert fragment in err["error"]["message"]
    assert backend.requests == []


def test_count_tokens_models_and_probe_endpoints(make_proxy):
    proxy = make_proxy(model="fake-main", haiku_model="fake-fast")
    c = client(proxy)
    small = c.messages.count_tokens(model="claude-sonnet-5", messages=[{"role": "user", "content": "hi"}])
    big = c.messages.count_tokens(model="claude-sonnet-5", messages=[{"role": "user", "content": "hi " * 2000}],
                                  tools=CLAUDE_TOOLS[:2], system="You are a helpful assistant.")
    assert 0 < small.input_tokens < big.input_tokens and big.input_tokens > 2000
    beta = c.beta.messages.count_tokens(model="claude-sonnet-5", messages=[{"role": "user", "content": "hi"}])
    assert beta.input_tokens == small.input_tokens
    models = c.models.list()
    ids = [m.id for m in models.data]
    assert "claude-haiku-4-5" in ids and "fake-main" in ids
    assert httpx.head(proxy.url + "/").status_code == 200
    assert httpx.get(proxy.url + "/").status_code == 200
    assert httpx.get(proxy.url + "/health").json()["status"] == "ok"
    r = httpx.post(proxy.url + "/api/event_logging/batch", json={})
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


def test_request_body_over_limit_is_413(make_proxy, backend):
    proxy = make_proxy(max_body=1024 * 1024)
    r = httpx.post(proxy.url + "/v1/messages", content=b"x" * (2 * 1024 * 1024),
                   headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["type"] == "request_too_large"


def test_large_image_body_is_accepted(proxy, backend):
    data = "A" * (30 * 1024 * 1024)  # under the 32 MiB default
    r = httpx.post(proxy.url + "/v1/messages", json=ask([
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}},
        {"type": "text", "text": "what is it"}]), timeout=30)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("stream", [False, True])
def test_gemini_3_thought_signatures_survive_the_tool_loop(make_proxy, backend, stream):
    """The fake rejects a tool-call turn without the signature it issued, as Gemini 3 does."""
    c = client(make_proxy(model="fake-gemini-3-pro"))
    prompt = 'TOOL_CALL:Read:{"file_path":"/a"} TOOL_CALL:Bash:{"command":"ls"}'
    if stream:
        with c.messages.stream(**ask(prompt, tools=CLAUDE_TOOLS)) as s:
            first = s.get_final_message()
    else:
        first = c.messages.create(**ask(prompt, tools=CLAUDE_TOOLS))
    assert [b.name for b in first.content] == ["Read", "Bash"]
    history = [{"role": "user", "content": prompt},
               {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": b.id, "content": f"out {b.name}"}
                                            for b in first.content]}]
    second = c.messages.create(model="claude-sonnet-5", max_tokens=100, messages=history, tools=CLAUDE_TOOLS)
    assert second.content[0].text == "Tool result received: out Read | out Bash"
    sent = backend.requests[-1]["messages"][1]["tool_calls"]
    assert all(call["extra_content"]["google"]["thought_signature"] == f"sig/{call['id']}+=" for call in sent)


@pytest.mark.parametrize("stream", [False, True])
def test_inline_think_tags_become_thinking(make_proxy, stream):
    c = client(make_proxy(model="deepseek-r1:14b"))
    if stream:
        with c.messages.stream(**ask("hi")) as s:
            msg = s.get_final_message()
    else:
        msg = c.messages.create(**ask("hi"))
    assert [b.type for b in msg.content] == ["thinking", "text"]
    assert msg.content[0].thinking.strip() == "Weighing the options."
    assert msg.content[1].text == "Hello from deepseek-r1:14b! You said: hi"


@pytest.mark.parametrize("model,dropped", [("fake-oldserver", "stream_options"), ("fake-gpt-4o", "reasoning_effort")])
def test_refused_optional_parameters_are_dropped_and_retried(make_proxy, backend, model, dropped):
    proxy = make_proxy(model=model, reasoning_effort="auto")
    with client(proxy).messages.stream(**ask("hi"), thinking={"type": "enabled", "budget_tokens": 2048}) as s:
        msg = s.get_final_message()
    assert msg.content[0].text.startswith(f"Hello from {model}")
    assert dropped in backend.requests[0] and dropped not in backend.requests[1] and len(backend.requests) == 2
    assert msg.usage.output_tokens > 0  # even without include_usage the stream reports output tokens
