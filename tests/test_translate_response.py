"""OpenAI response → Anthropic message, errors, max_tokens limits and token counting (no network)."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from claude_proxy import (
    ProxyError,
    count_request_tokens,
    error_from_backend,
    estimate_text_tokens,
    max_tokens_limit_from_error,
    openai_to_anthropic_response,
    scrub,
)


def completion(message: dict, finish: str = "stop", usage: dict | None = None, **choice_extra) -> dict:
    return {"id": "chatcmpl-abc.123", "object": "chat.completion", "created": 1, "model": "gpt",
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish,
                         **choice_extra}],
            "usage": usage if usage is not None else {"prompt_tokens": 120, "completion_tokens": 25,
                                                      "prompt_tokens_details": {"cached_tokens": 64}}}


def test_text_usage_and_cache_split():
    msg = openai_to_anthropic_response(completion({"content": "Hi"}), "claude-sonnet-4-5")
    assert msg["id"].startswith("msg_") and msg["model"] == "claude-sonnet-4-5"
    assert msg["content"] == [{"type": "text", "text": "Hi"}]
    assert msg["stop_reason"] == "end_turn" and msg["stop_sequence"] is None
    assert msg["usage"] == {"input_tokens": 56, "output_tokens": 25, "cache_read_input_tokens": 64,
                            "cache_creation_input_tokens": 0}


def test_reasoning_first_then_text_then_tools_and_tool_use_wins_over_stop():
    msg = openai_to_anthropic_response(completion({
        "content": "Let me check.", "reasoning_content": "thinking...",
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get", "arguments": '{"a":1}'}},
                       {"id": "call.2", "type": "function", "function": {"name": "short_x", "arguments": ""}}]}),
        "m", tool_names={"short_x": "mcp.long.name"})
    assert [b["type"] for b in msg["content"]] == ["thinking", "text", "tool_use", "tool_use"]
    assert msg["content"][0] == {"type": "thinking", "thinking": "thinking...", "signature": ""}
    assert msg["content"][2]["input"] == {"a": 1}
    assert msg["content"][3] == {"type": "tool_use", "id": "call_2", "name": "mcp.long.name", "input": {}}
    assert msg["stop_reason"] == "tool_use"  # backend said "stop"


def test_vllm_reasoning_field_and_truncated_arguments_are_repaired():
    msg = openai_to_anthropic_response(completion({
        "content": None, "reasoning": "r",
        "tool_calls": [{"function": {"name": "f", "arguments": '{"path": "/tmp/x", "n": [1, 2'}}]}, "length"), "m")
    assert msg["content"][0]["thinking"] == "r"
    assert msg["content"][1]["input"] == {"path": "/tmp/x", "n": [1, 2]}
    assert msg["content"][1]["id"].startswith("toolu_")


@pytest.mark.parametrize("finish,expected", [("length", "max_tokens"), ("content_filter", "refusal"),
                                             ("tool_calls", "end_turn"), (None, "end_turn")])
def test_finish_reasons(finish, expected):
    msg = openai_to_anthropic_response(completion({"content": "x"}, finish), "m")
    # "tool_calls" without any call is a backend lie; there is no tool_use block to answer
    assert msg["stop_reason"] == (expected if finish != "tool_calls" else "tool_use")


def test_stop_sequence_reported_when_backend_names_it():
    msg = openai_to_anthropic_response(completion({"content": "x"}, stop_reason="END"), "m", stop_sequences=["END"])
    assert msg["stop_reason"] == "stop_sequence" and msg["stop_sequence"] == "END"


def test_missing_usage_is_estimated_not_zero():
    msg = openai_to_anthropic_response(completion({"content": "hello world"}, usage={}), "m", input_estimate=42)
    assert msg["usage"]["input_tokens"] == 42  # an empty usage object counts as none
    msg = openai_to_anthropic_response({**completion({"content": "hello world"}), "usage": None}, "m",
                                       input_estimate=42)
    assert msg["usage"]["input_tokens"] == 42 and msg["usage"]["output_tokens"] > 0


def test_backend_error_payloads_in_200_and_no_choices_are_errors():
    with pytest.raises(ProxyError) as info:
        openai_to_anthropic_response({"error": {"message": "upstream exploded"}}, "m")
    assert "upstream exploded" in info.value.message and info.value.status == 502
    with pytest.raises(ProxyError):
        openai_to_anthropic_response({"choices": []}, "m")


@pytest.mark.parametrize("status,body,exp_status,exp_kind,fragment", [
    (400, '{"error":{"message":"bad thing","type":"invalid_request_error"}}', 400, "invalid_request_error", "bad thing"),
    (401, '{"error":{"message":"Incorrect API key provided"}}', 401, "authentication_error", "Incorrect API key"),
    (403, '{"error":"forbidden"}', 403, "permission_error", "forbidden"),
    (404, '{"error":{"message":"The model `x` does not exist"}}', 404, "not_found_error", "does not exist"),
    (413, 'too big', 413, "request_too_large", "too big"),
    (422, '{"detail":"unprocessable"}', 400, "invalid_request_error", "unprocessable"),
    (429, '{"error":{"message":"Rate limit reached"}}', 429, "rate_limit_error", "Rate limit"),
    (500, '{"error":{"message":"boom"}}', 500, "api_error", "boom"),
    (502, '<html><head><title>502 Bad Gateway</title></head></html>', 502, "api_error", "502 Bad Gateway"),
    (503, '', 503, "overloaded_error", "empty body"),
    (529, '{"message":"overloaded"}', 529, "overloaded_error", "overloaded"),
    (418, '[{"error":{"message":"teapot","code":418}}]', 418, "invalid_request_error", "teapot"),
])
def test_backend_errors_map_to_anthropic_statuses(status, body, exp_status, exp_kind, fragment):
    err = error_from_backend(status, body, {"retry-after": "7"}, "https://b/v1")
    assert (err.status, err.kind) == (exp_status, exp_kind)
    assert fragment in err.message and "https://b/v1" in err.message
    assert err.headers == {"retry-after": "7"}
    assert err.anthropic_body("req_1") == {"type": "error", "error": {"type": exp_kind, "message": err.message},
                                           "request_id": "req_1"}


def test_scrub_removes_keys():
    assert "sk-secret-canary-123" not in scrub("Incorrect API key provided: sk-secret-canary-123.",
                                                ["sk-secret-canary-123", None])


@pytest.mark.parametrize("message,requested,expected", [
    (("max_tokens is too large: 64000. This model supports at most 16384 completion tokens, whereas you provided "
     "64000."), 64000, 16384),
    ("Invalid max_tokens value, the valid range of max_tokens is [1, 8192]", 32000, 8192),
    (("`max_tokens` must be less than or equal to `32768`, the maximum value for `max_tokens` is less than the "
     "`context_window` for this model"), 64000, 32768),
    (("This model's maximum context length is 32768 tokens. However, you requested 66000 tokens (2000 in the "
     "messages, 64000 in the completion). Please reduce the length of the messages or completion."), 64000, 30768),
    ("max_tokens: 64000 > 8192, which is the maximum allowed number of output tokens for model-x", 64000, 8192),
    ("Invalid 'messages[1].content': string too long", 64000, None),
    ("max_tokens must be at most 100000", 64000, None),  # a limit above the request is no reason to retry
])
def test_max_tokens_limit_parsing(message, requested, expected):
    assert max_tokens_limit_from_error(message, requested) == expected


# ---- token counting against a real BPE tokenizer ------------------------------------------------------

DATA = os.path.join(os.path.dirname(__file__), "data")


@pytest.fixture(scope="module")
def bpe():
    from tokenizers import Tokenizer
    with gzip.open(os.path.join(DATA, "claude-legacy-tokenizer.json.gz"), "rt") as fh:
        return Tokenizer.from_str(fh.read())


PROSE = ("The proxy sits between people's tools and paid APIs, often on a shared server. It must keep working "
         "when the backend misbehaves, when clients go away, under load and under garbage input, and it must never "
         "leak a key or lose an answer silently. Users judge it by one thing first: whether their agent loop works "
         "unchanged on their model, and whether anything ever fails in a way they cannot read. ") * 8


def _samples() -> dict[str, str]:
    root = os.path.dirname(DATA)
    code = Path(os.path.dirname(root), "claude_proxy.py").read_text(encoding="utf-8")
    from test_translate_request import CLAUDE_CODE_READ_SCHEMA
    tools = json.dumps([{"name": f"Tool{i}", "description": "Reads a file from the local filesystem. " * 3,
                         "input_schema": CLAUDE_CODE_READ_SCHEMA} for i in range(20)])
    return {"prose": PROSE, "code": code[:40000], "json": tools, "pretty_json": json.dumps(json.loads(tools)[:4],
                                                                                           indent=2)}


@pytest.mark.parametrize("kind", ["prose", "code", "json", "pretty_json"])
def test_estimate_within_15_percent_of_bpe(bpe, kind):
    text = _samples()[kind]
    ref = len(bpe.encode(text).ids)
    est = estimate_text_tokens(text)
    assert abs(est - ref) / ref < 0.15, (kind, est, ref)


def test_count_request_tokens_scales_with_input_and_is_never_zero():
    small = count_request_tokens({"messages": [{"role": "user", "content": "hi"}]})
    big = count_request_tokens({"system": PROSE, "messages": [{"role": "user", "content": PROSE}],
                                "tools": [{"name": "t", "input_schema": {"type": "object"}}]})
    assert 1 <= small < 20 and big > 2 * estimate_text_tokens(PROSE)
    with_image = count_request_tokens({"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "x"}}]}]})
    assert with_image > 1000


def test_json_think_tags_and_signatures():
    msg = openai_to_anthropic_response(completion({"content": "<think>\nhmm\n</think>\n\nAnswer", "tool_calls": [
        {"id": "c1", "type": "function", "extra_content": {"google": {"thought_signature": "s/ig+"}},
         "function": {"name": "f", "arguments": "{}"}}]}), "m")
    assert msg["content"][0] == {"type": "thinking", "thinking": "hmm", "signature": ""}
    assert msg["content"][1] == {"type": "text", "text": "Answer"}
    assert msg["content"][2]["id"].startswith("c1__gts_")
    plain = openai_to_anthropic_response(completion({"content": "No <think> here"}), "m")
    assert plain["content"] == [{"type": "text", "text": "No <think> here"}]
