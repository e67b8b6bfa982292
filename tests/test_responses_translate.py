"""The Responses dialect's pure translators (issue #13): Anthropic Messages ↔ OpenAI Responses, through the hub.
The request must be what the real API accepts (stateless, strict: false tools, max_output_tokens ≥ 16, reasoning
items replayed without status); answers and streams must be what the anthropic SDK accepts."""

from __future__ import annotations

import json

import pytest
from conftest import accumulate_with_sdk, assert_anthropic_grammar

import claude_proxy as cp

SCHEMA = {"type": "object", "properties": {"file_path": {"type": "string"}, "limit": {"type": "integer"}},
          "required": ["file_path"]}


def request(**kw) -> dict:
    return {"model": "claude-sonnet-5", "max_tokens": 8, **kw}


def test_a_conversation_becomes_stateless_responses_input():
    thinking = {"type": "thinking", "thinking": "Plan: read it.", "signature": "cprs1.rs_abc.ENC+/=="}
    body = request(system="You are Claude Code.", tools=[{"name": "Read", "input_schema": SCHEMA}], messages=[
        {"role": "user", "content": [{"type": "text", "text": "read /x"}, {"type": "image", "source": {
            "type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]},
        {"role": "assistant", "content": [thinking, {"type": "text", "text": "Reading."},
                                          {"type": "tool_use", "id": "call_1", "name": "Read",
                                           "input": {"file_path": "/x"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "hello"}]},
        {"role": "system", "content": "Plan mode is on."},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "x", "signature": "EqQBCkYI..."}]}])
    out = cp.anthropic_to_responses_request(body, "gpt-5.1")
    assert out["store"] is False and out["include"] == ["reasoning.encrypted_content"]
    assert out["instructions"] == "You are Claude Code." and out["max_output_tokens"] == 16
    assert out["tools"] == [{"type": "function", "name": "Read", "parameters": SCHEMA, "strict": False}]
    assert out["input"] == [
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "read /x"},
            {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "auto"}]},
        {"type": "reasoning", "id": "rs_abc", "encrypted_content": "ENC+/==",
         "summary": [{"type": "summary_text", "text": "Plan: read it."}]},  # no status: the API refuses one
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Reading."}]},
        {"type": "function_call", "call_id": "call_1", "name": "Read", "arguments": '{"file_path":"/x"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "hello"},
        {"type": "message", "role": "developer", "content": "Plan mode is on."}]  # Claude's own thinking: dropped


def test_choices_effort_and_server_tools():
    body = request(tools=[{"name": "Read", "input_schema": SCHEMA}, {"type": "web_search_20250305",
                                                                    "name": "web_search"}],
                   tool_choice={"type": "tool", "name": "Read", "disable_parallel_tool_use": True},
                   thinking={"type": "enabled", "budget_tokens": 8000}, max_tokens=20000, stream=True,
                   messages=[{"role": "user", "content": "hi"}])
    out = cp.anthropic_to_responses_request(body, "o4-mini", reasoning_effort="auto")
    assert [t["name"] for t in out["tools"]] == ["Read"]  # the proxy runs web search on Chat backends only
    assert out["tool_choice"] == {"type": "function", "name": "Read"} and out["parallel_tool_calls"] is False
    assert out["reasoning"] == {"effort": "medium", "summary": "auto"} and out["stream"] is True
    assert "reasoning" not in cp.anthropic_to_responses_request(body, "gpt-4.1")  # --reasoning-effort off


RESPONSE = {"id": "resp_1", "object": "response", "status": "completed", "output": [
    {"type": "reasoning", "id": "rs_9", "summary": [{"type": "summary_text", "text": "First."},
                                                    {"type": "summary_text", "text": "Then."}],
     "encrypted_content": "gAAAA-enc"},
    {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
     "content": [{"type": "output_text", "text": "Let me read it.", "annotations": []}]},
    {"type": "function_call", "id": "fc_1", "call_id": "call_7", "name": "Read",
     "arguments": '{"file_path": "/x"}', "status": "completed"}],
    "usage": {"input_tokens": 120, "input_tokens_details": {"cached_tokens": 100}, "output_tokens": 30,
              "output_tokens_details": {"reasoning_tokens": 12}, "total_tokens": 150}}


def test_an_answer_becomes_a_message_whose_thinking_carries_the_reasoning_item():
    msg = cp.responses_to_anthropic_response(RESPONSE, "claude-sonnet-5")
    assert msg["content"] == [
        {"type": "thinking", "thinking": "First.\n\nThen.", "signature": "cprs1.rs_9.gAAAA-enc"},
        {"type": "text", "text": "Let me read it."},
        {"type": "tool_use", "id": "call_7", "name": "Read", "input": {"file_path": "/x"}}]
    assert msg["stop_reason"] == "tool_use"
    assert msg["usage"] == {"input_tokens": 20, "output_tokens": 30, "cache_read_input_tokens": 100,
                            "cache_creation_input_tokens": 0}
    # and it goes back as it came: the next request replays the same item
    back = cp.anthropic_to_responses_request(request(messages=[
        {"role": "user", "content": "go"}, {"role": "assistant", "content": msg["content"]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_7", "content": "ok"}]}]), "m")
    assert back["input"][1] == {"type": "reasoning", "id": "rs_9", "encrypted_content": "gAAAA-enc",
                                "summary": [{"type": "summary_text", "text": "First.\n\nThen."}]}


def test_incomplete_and_failed_answers():
    cut = {**RESPONSE, "status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}}
    assert cp.responses_to_anthropic_response(cut, "m")["stop_reason"] == "max_tokens"
    failed = {**RESPONSE, "status": "failed", "error": {"code": "server_error", "message": "The model crashed."}}
    with pytest.raises(cp.ProxyError, match="The model crashed"):
        cp.responses_to_anthropic_response(failed, "m")
    with pytest.raises(cp.ProxyError, match="no output list"):
        cp.responses_to_anthropic_response({"id": "x"}, "m")


def stream_events(response: dict, partial_added: bool = True) -> list[cp.SSEEvent]:
    """The real event grammar for ``response``; ``output_item.added`` carries no encrypted content."""
    events: list[dict] = [{"type": "response.created", "response": {**response, "status": "in_progress",
                                                                     "output": []}},
                          {"type": "response.in_progress", "response": {**response, "output": []}}]
    for i, item in enumerate(response["output"]):
        added = {**item, "encrypted_content": None} if partial_added else item
        events.append({"type": "response.output_item.added", "output_index": i, "item": added})
        if item["type"] == "reasoning":
            for j, part in enumerate(item["summary"]):
                events.append({"type": "response.reasoning_summary_part.added", "output_index": i,
                               "summary_index": j, "part": {"type": "summary_text", "text": ""}})
                for piece in (part["text"][:3], part["text"][3:]):
                    events.append({"type": "response.reasoning_summary_text.delta", "output_index": i,
                                   "summary_index": j, "delta": piece})
        elif item["type"] == "message":
            text = item["content"][0]["text"]
            for piece in (text[:5], text[5:]):
                events.append({"type": "response.output_text.delta", "output_index": i, "content_index": 0,
                               "delta": piece})
        else:
            events.append({"type": "response.function_call_arguments.delta", "output_index": i,
                           "delta": item["arguments"][:4]})
        events.append({"type": "response.output_item.done", "output_index": i, "item": item})
    events.append({"type": "response.completed", "response": response})
    return [cp.SSEEvent(e["type"], json.dumps({**e, "sequence_number": n})) for n, e in enumerate(events)]


def run(translator: cp.ResponsesToAnthropicStream, events: list[cp.SSEEvent], end: bool = False) -> list:
    out = translator.start()
    for e in events:
        out += translator.receive(e)
    return out + (translator.end() if end else [])


def test_a_stream_translates_event_for_event_and_matches_the_json_answer():
    events = run(cp.ResponsesToAnthropicStream("claude-sonnet-5", 10), stream_events(RESPONSE))
    assert_anthropic_grammar(events)
    streamed = accumulate_with_sdk(events)
    whole = cp.responses_to_anthropic_response(RESPONSE, "claude-sonnet-5")
    assert [b.model_dump(exclude_none=True) for b in streamed.content] == whole["content"]
    assert streamed.stop_reason == "tool_use" and streamed.usage.output_tokens == 30


def test_a_cut_or_failed_stream_ends_in_an_error_event():
    cut = run(cp.ResponsesToAnthropicStream("m"), stream_events(RESPONSE)[:-1], end=True)
    assert_anthropic_grammar(cut, expect_error=True)
    assert "no response.completed" in cut[-1][1]["error"]["message"]
    failed = cp.ResponsesToAnthropicStream("m")
    with pytest.raises(cp.ProxyError, match="rate limited"):
        run(failed, [cp.SSEEvent("response.failed", json.dumps({"type": "response.failed", "response": {
            "status": "failed", "error": {"code": "rate_limit_exceeded", "message": "You are rate limited."}}}))])
