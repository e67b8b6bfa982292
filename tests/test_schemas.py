"""Every body the proxy sends is checked against the official request schemas, by the fake backends themselves.

``tests/fake_openai.py`` validates each request against ``tests/data/openai-chat-request.schema.json``:
CreateChatCompletionRequest and the 58 schemas it references, from OpenAI's own OpenAPI description
(github.com/openai/openai-openapi, openapi.json, MIT License), descriptions and examples removed, references
rewritten to ``#/$defs/``. ``tests/fake_anthropic.py`` validates each request against the request types the
official ``anthropic`` SDK declares (strict pydantic validation of ``MessageCreateParams``), on top of its own
checks of the nested content. So every test that goes through a fake backend, the Claude Code runs included, is
also a schema test; these tests show the checks bite.

To regenerate the OpenAI file from a newer openapi.json: take ``components.schemas.CreateChatCompletionRequest``,
follow every ``$ref`` to ``#/components/schemas/NAME`` transitively, put each under ``$defs`` with its
descriptions dropped, and set ``"$ref": "#/$defs/CreateChatCompletionRequest"``.
"""

from __future__ import annotations

import httpx
import pytest
from fake_anthropic import FakeAnthropic

import claude_proxy as cp


def post_openai(backend, body: dict) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{backend.port}/v1/chat/completions", json=body, timeout=10)


@pytest.mark.parametrize("body,where", [
    ({"model": "fake-model", "messages": [{"role": "user", "content": 5}]}, "messages[0]"),
    ({"model": "fake-model", "messages": [{"role": "user", "content": "x"}], "logprobs": "yes"}, "logprobs"),
    ({"model": "fake-model", "messages": [{"role": "user", "content": "x"}], "n": "two"}, "n"),
])
def test_the_fake_openai_backend_rejects_what_the_official_schema_rejects(backend, body, where):
    r = post_openai(backend, body)
    assert r.status_code == 400 and where in r.json()["error"]["message"], r.text


def test_a_translated_claude_code_request_passes_the_official_schema(backend):
    import json
    import os
    with open(os.path.join(os.path.dirname(cp.__file__), "bench", "data", "claude_code_request.json")) as fh:
        body = json.load(fh)
    payload = cp.anthropic_to_openai_request({**body, "stream": False}, "fake-model")
    r = post_openai(backend, payload)
    assert r.status_code == 200, r.text


def test_the_fake_anthropic_backend_checks_the_sdk_request_types(loop_thread):
    fake = FakeAnthropic()
    loop_thread.run(fake.start())
    try:
        body = {"model": "claude-x", "max_tokens": "100", "messages": [{"role": "user", "content": "hi"}]}
        r = httpx.post(f"http://127.0.0.1:{fake.port}/v1/messages", json=body, timeout=10,
                       headers={"anthropic-version": "2023-06-01", "x-api-key": "k"})
        assert r.status_code == 400 and "max_tokens" in r.text, r.text
        body = {"model": "claude-x", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}],
                "thinking": {"type": "enabled"}}
        r = httpx.post(f"http://127.0.0.1:{fake.port}/v1/messages", json=body, timeout=10,
                       headers={"anthropic-version": "2023-06-01", "x-api-key": "k"})
        assert r.status_code == 400 and "thinking" in r.text, r.text
    finally:
        loop_thread.run(fake.stop())
