"""OpenAI request → Anthropic request, Anthropic response/stream → OpenAI: pure translator tests (issue #3)."""

from __future__ import annotations

import pytest

from claude_proxy import (
    AnthropicToOpenAIStream,
    ProxyError,
    anthropic_to_openai_response,
    claude_tool_names,
    openai_to_anthropic_request,
    openai_usage,
)


def translate(messages, **kw):
    return openai_to_anthropic_request({"model": "gpt-x", "messages": messages, **kw}, "claude-sonnet-4-5")


def test_system_and_developer_anywhere_are_hoisted_in_order():
    out = translate([{"role": "developer", "content": "A"}, {"role": "user", "content": "hi"},
                     {"role": "system", "content": [{"type": "text", "text": "B"}]},
                     {"role": "assistant", "content": "yo"}, {"role": "system", "content": "C"}])
    assert out["system"] == "A\nB\nC"
    assert [m["role"] for m in out["messages"]] == ["user", "assistant"]


def test_only_system_or_assistant_first_gets_a_user_turn():
    out = translate([{"role": "system", "content": "S"}])
    assert out["messages"] == [{"role": "user", "content": [{"type": "text", "text": "[Start a new chat]"}]}]
    out = translate([{"role": "assistant", "content": "Hi!"}, {"role": "user", "content": "yo"}])
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "user"]


def test_tool_results_grouped_first_and_orphans_and_missing_fixed():
    out = translate([
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "b", "type": "function", "function": {"name": "f", "arguments": "not json"}}]},
        {"role": "tool", "tool_call_id": "a", "content": "ra"},
        {"role": "user", "content": "and?"},
        {"role": "tool", "tool_call_id": "zzz", "content": "orphan"}])
    asst, usr = out["messages"][1], out["messages"][2]
    assert asst["content"][1]["input"] == {"_unparsed_arguments": "not json"}  # kept, never dropped
    assert [b["type"] for b in usr["content"]] == ["tool_result", "tool_result", "text", "text"]
    assert usr["content"][1] == {"type": "tool_result", "tool_use_id": "b", "content": "(no result)"}
    assert "orphan" in usr["content"][3]["text"]


def test_trailing_assistant_tool_calls_are_answered_and_prefill_stripped():
    out = translate([{"role": "user", "content": "go"}, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}])
    assert out["messages"][-1]["content"][0]["tool_use_id"] == "a"
    out = translate([{"role": "user", "content": "go"}, {"role": "assistant", "content": "   "}])
    assert [m["role"] for m in out["messages"]] == ["user"]


def test_tool_names_sanitized_and_mapped_back():
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "ns.tool", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "ns.tool"}}}
    out = openai_to_anthropic_request(body, "c")
    assert out["tools"][0]["name"] == "ns_tool" and out["tool_choice"] == {"type": "tool", "name": "ns_tool"}
    names = {v: k for k, v in claude_tool_names(body).items()}
    msg = {"id": "msg_1", "content": [{"type": "tool_use", "id": "toolu_1", "name": "ns_tool", "input": {"a": 1}}],
           "stop_reason": "tool_use", "usage": {"input_tokens": 5, "output_tokens": 2}}
    call = anthropic_to_openai_response(msg, "m", names)["choices"][0]["message"]["tool_calls"][0]
    assert call["function"] == {"name": "ns.tool", "arguments": '{"a":1}'}


def test_colliding_function_names_stay_apart_both_ways():
    """Issue #9 defect 5, OpenAI client → Anthropic backend."""
    fns = [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}} for n in ("ns.tool", "ns_tool")]
    body = {"model": "m", "tools": fns, "messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "ns.tool", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"}]}
    out = openai_to_anthropic_request(body, "c")
    sent = [t["name"] for t in out["tools"]]
    assert sent[1] == "ns_tool" and sent[0] != "ns_tool"
    assert out["messages"][1]["content"][0]["name"] == sent[0]
    names = {v: k for k, v in claude_tool_names(body).items()}
    msg = {"id": "msg_1", "content": [{"type": "tool_use", "id": "toolu_1", "name": n, "input": {}} for n in sent],
           "stop_reason": "tool_use", "usage": {"input_tokens": 5, "output_tokens": 2}}
    calls = anthropic_to_openai_response(msg, "m", names)["choices"][0]["message"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["ns.tool", "ns_tool"]


@pytest.mark.parametrize("choice,expected", [("none", {"type": "none"}), ("auto", {"type": "auto"}),
                                             ("required", {"type": "any"})])
def test_tool_choice(choice, expected):
    out = translate([{"role": "user", "content": "x"}], tool_choice=choice,
                    tools=[{"type": "function", "function": {"name": "f"}}])
    assert out["tool_choice"] == expected
    assert out["tools"][0]["input_schema"] == {"type": "object", "properties": {}}


def test_legacy_functions_and_sampling_rules():
    out = translate([{"role": "user", "content": "x"}], functions=[{"name": "f", "parameters": {"type": "object"}}],
                    function_call={"name": "f"}, temperature=0.4, top_p=0.5, max_tokens=100,
                    max_completion_tokens=200, stop="END", user="someone@example.com")
    assert out["tool_choice"] == {"type": "tool", "name": "f"}
    assert out["temperature"] == 0.4 and "top_p" not in out and out["max_tokens"] == 200
    assert out["stop_sequences"] == ["END"] and "metadata" not in out  # emails are not sent as user ids
    assert translate([{"role": "user", "content": "x"}], top_p=0.5)["top_p"] == 0.5


@pytest.mark.parametrize("body,fragment", [
    ({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}, "role"),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "video"}]}]}, "video"),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {
        "url": "data:image/tiff;base64,AAA"}}]}]}, "image/tiff"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 3}, "n=1"),
    ({"model": "m", "messages": [{"role": "tool", "content": "x"}]}, "tool_call_id"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": 5,
      "tools": [{"type": "function", "function": {"name": "f"}}]}, "tool_choice"),
])
def test_bad_openai_input_is_a_400(body, fragment):
    with pytest.raises(ProxyError) as info:
        openai_to_anthropic_request(body, "c")
    assert info.value.status == 400 and fragment in info.value.message


def test_usage_and_finish_mapping():
    assert openai_usage({"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 100,
                         "cache_creation_input_tokens": 20}) == {
        "prompt_tokens": 130, "completion_tokens": 5, "total_tokens": 135, "prompt_tokens_details": {"cached_tokens": 100}}
    for stop, finish in [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"),
                         ("refusal", "content_filter"), ("pause_turn", "stop")]:
        msg = {"id": "msg_1", "content": [{"type": "text", "text": "x"}], "stop_reason": stop, "usage": {}}
        assert anthropic_to_openai_response(msg, "m")["choices"][0]["finish_reason"] == finish


def events(*pairs):
    return [(name, {"type": name, **data}) for name, data in pairs]


STREAM = events(
    ("message_start", {"message": {"id": "msg_1", "usage": {"input_tokens": 10, "output_tokens": 1}}}),
    ("ping", {}),
    ("content_block_start", {"index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
    ("content_block_delta", {"index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}}),
    ("content_block_delta", {"index": 0, "delta": {"type": "signature_delta", "signature": "s"}}),
    ("content_block_stop", {"index": 0}),
    ("content_block_start", {"index": 1, "content_block": {"type": "text", "text": ""}}),
    ("content_block_delta", {"index": 1, "delta": {"type": "text_delta", "text": "Hi"}}),
    ("content_block_stop", {"index": 1}),
    ("content_block_start", {"index": 2, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f",
                                                           "input": {}}}),
    ("content_block_delta", {"index": 2, "delta": {"type": "input_json_delta", "partial_json": ""}}),
    ("content_block_delta", {"index": 2, "delta": {"type": "input_json_delta", "partial_json": '{"a":'}}),
    ("content_block_delta", {"index": 2, "delta": {"type": "input_json_delta", "partial_json": "1}"}}),
    ("content_block_stop", {"index": 2}),
    ("content_block_start", {"index": 3, "content_block": {"type": "tool_use", "id": "toolu_2", "name": "g",
                                                           "input": {}}}),
    ("content_block_stop", {"index": 3}),
    ("message_delta", {"delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 7}}),
    ("message_stop", {}))


def test_stream_translation_grammar():
    t = AnthropicToOpenAIStream("gpt-x", include_usage=True)
    out = []
    for name, data in STREAM:
        out += t.feed(name, data)
    assert t.done and out[-1] == "[DONE]"
    chunks = out[:-1]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert sum(1 for c in chunks if c["choices"] and "role" in c["choices"][0]["delta"]) == 1
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks if c["choices"]
             and "tool_calls" in c["choices"][0]["delta"]]
    assert [c["index"] for c in calls] == [0, 0, 0, 1]
    assert [c.get("id") for c in calls] == ["toolu_1", None, None, "toolu_2"]
    assert "".join(c["function"]["arguments"] for c in calls if c["index"] == 0) == '{"a":1}'
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 7
    assert len({c["id"] for c in chunks}) == 1


def test_stream_error_event_and_truncation():
    t = AnthropicToOpenAIStream("m")
    t.feed("message_start", {"type": "message_start", "message": {"usage": {}}})
    with pytest.raises(ProxyError) as info:
        t.feed("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    assert info.value.kind == "overloaded_error"
    failed = t.fail(info.value)
    assert failed == [{"error": {"message": "Overloaded", "type": "service_unavailable_error", "param": None,
                                 "code": "overloaded_error"}}, "[DONE]"]
    t2 = AnthropicToOpenAIStream("m")
    t2.feed("message_start", {"type": "message_start", "message": {"usage": {}}})
    assert "error" in t2.finish()[0]  # no message_delta/stop: cut off, never a fake finish
