"""Property-based fuzzing of everything the proxy reads from a backend: what an OpenAI-compatible or Anthropic
backend answers (whole or streamed), right-shaped, wrong-typed and cut off.

Part 1 drives the translators and the SSE parser directly; part 2 runs the real proxy in-process against a
scripted backend on 127.0.0.1 and uses the official ``anthropic`` and ``openai`` SDKs as clients. The contract
in both: a backend's garbage is the backend's fault, reported as a 502 (or an in-band error event once a stream
is under way); it never becomes a 500, a Python exception, a hang, or a stream an SDK cannot parse.

Examples are derandomized (the same on every run) and bounded; a failure is shrunk to the smallest change to a
well-formed answer that still breaks the proxy.
"""

from __future__ import annotations

import asyncio
import json
import socket
from datetime import timedelta
from typing import Any

import anthropic
import openai
import pytest
from anthropic.types import (
    CitationsDelta,
    InputJSONDelta,
    Message,
    RawContentBlockDeltaEvent,
    RawContentBlockStartEvent,
    RawContentBlockStopEvent,
    RawMessageDeltaEvent,
    RawMessageStartEvent,
    RawMessageStopEvent,
    RedactedThinkingBlock,
    ServerToolUseBlock,
    SignatureDelta,
    TextBlock,
    TextDelta,
    ThinkingBlock,
    ThinkingDelta,
    ToolSearchToolResultBlock,
    ToolUseBlock,
    WebSearchToolResultBlock,
)
from conftest import (
    ProxyServer,
    accumulate_with_sdk,
    assert_anthropic_grammar,
    parse_sse_bytes,
)
from fake_openai import LoopbackServer
from fuzz_strategies import (
    anthropic_event_script,
    anthropic_message_or_junk,
    byte_pieces,
    openai_chunk_script,
    openai_completion_or_junk,
    sse_encode,
    sse_event_list,
)
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import ValidationError

import claude_proxy as cp

# One failure per test, shrunk (report_multiple_bugs=False): looking for more and shrinking each could take
# minutes; the failures are fixed one at a time anyway.
PURE = settings(max_examples=300, deadline=timedelta(seconds=2), derandomize=True, database=None,
                report_multiple_bugs=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# Over HTTP every wait is bounded by the clients' own 5 s timeouts; the deadline only stops a runaway example.
# No shrinking over HTTP (it would take minutes): part 1 shrinks the same inputs against the same translators.
E2E = settings(max_examples=60, deadline=timedelta(seconds=30), derandomize=True, database=None,
               phases=[Phase.explicit, Phase.generate],
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])




TOOL_NAME_MAPS = st.sampled_from([None, {}, {"Read": "Read"}, {"mcp__srv__tool": "mcp.srv.tool"}])
BLOCK_TYPES = {"text": TextBlock, "thinking": ThinkingBlock, "redacted_thinking": RedactedThinkingBlock,
               "tool_use": ToolUseBlock, "server_tool_use": ServerToolUseBlock,
               "web_search_tool_result": WebSearchToolResultBlock, "tool_search_tool_result": ToolSearchToolResultBlock}
DELTA_TYPES = {"text_delta": TextDelta, "thinking_delta": ThinkingDelta, "signature_delta": SignatureDelta,
               "input_json_delta": InputJSONDelta, "citations_delta": CitationsDelta}
EVENT_TYPES = {"message_start": RawMessageStartEvent, "message_delta": RawMessageDeltaEvent,
               "message_stop": RawMessageStopEvent, "content_block_start": RawContentBlockStartEvent,
               "content_block_delta": RawContentBlockDeltaEvent, "content_block_stop": RawContentBlockStopEvent}


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate(model: Any, value: Any, where: str) -> None:
    """``model.model_validate(value)``, failing with the first few problems only (a union's errors run long)."""
    try:
        model.model_validate(value)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e['input']!r:.80})"
                             for e in exc.errors()[:3])
        raise AssertionError(f"{where} is not a valid {model.__name__}: {problems}\n{value!r:.600}") from None


def validate_block(block: Any, where: str) -> None:
    assert isinstance(block, dict) and block.get("type") in BLOCK_TYPES, f"{where}: {block!r:.300}"
    validate(BLOCK_TYPES[block["type"]], block, where)


# ---- what a valid answer is ---------------------------------------------------------------------------------

def check_anthropic_message(msg: Any) -> None:
    """A JSON Message the anthropic SDK accepts with strict validation; tool inputs are objects, usage is ints."""
    assert isinstance(msg, dict), msg
    json.dumps(msg)
    for i, block in enumerate(msg.get("content") or []):
        validate_block(block, f"content[{i}]")
    validate(Message, msg, "the message")
    for block in msg["content"]:
        if block["type"] == "tool_use":
            assert isinstance(block["input"], dict), f"tool_use input is not an object: {block!r}"
    for key, value in msg["usage"].items():
        if value is not None and key.endswith("_tokens"):
            assert is_int(value), f"usage.{key} is {value!r}, not an int"


def check_anthropic_events(events: list[tuple[str, Any]]) -> bool:
    """The event stream the proxy produced: the grammar of conftest, each event valid for the SDK's own type
    (pydantic, strict about field types), usage counts ints; when it ended normally, the SDK's accumulator takes
    it. Returns whether it ended in an error event."""
    assert events and all(isinstance(d, dict) for _, d in events), events
    failed = events[-1][0] == "error"
    assert_anthropic_grammar(events, expect_error=failed)
    for name, data in events:
        if name == "content_block_start":
            validate_block(data.get("content_block"), "content_block_start")
        if name == "content_block_delta":
            delta = data.get("delta")
            assert isinstance(delta, dict) and delta.get("type") in DELTA_TYPES, data
            validate(DELTA_TYPES[delta["type"]], delta, "content_block_delta")
        if name in EVENT_TYPES:
            validate(EVENT_TYPES[name], data, name)
        elif name == "error":
            assert isinstance(data["error"]["type"], str) and isinstance(data["error"]["message"], str), data
        usage = data.get("usage") or (data.get("message") or {}).get("usage") or {}
        for key, value in usage.items():
            if value is not None and key.endswith("_tokens"):
                assert is_int(value), f"{name}: usage.{key} is {value!r}, not an int"
    if not failed:
        final = accumulate_with_sdk(events)
        for block in final.content:
            if block.type == "tool_use":
                assert isinstance(block.input, dict), block
    return failed


def check_chat_completion(resp: Any) -> None:
    """A chat.completion the openai SDK accepts, with int usage and tool arguments that are a JSON object."""
    assert isinstance(resp, dict), resp
    json.dumps(resp)
    validate(ChatCompletion, resp, "the completion")
    assert is_int(resp["created"])
    for key, value in (resp.get("usage") or {}).items():
        if key.endswith("_tokens"):
            assert is_int(value), f"usage.{key} is {value!r}, not an int"
    for choice in resp["choices"]:
        for call in choice["message"].get("tool_calls") or []:
            assert isinstance(call["id"], str) and call["id"], call
            assert isinstance(call["function"]["name"], str) and call["function"]["name"], call
            args = json.loads(call["function"]["arguments"])
            assert isinstance(args, dict), f"tool arguments are not a JSON object: {call!r}"


def check_openai_chunks(chunks: list[Any]) -> bool:
    """The chunks an OpenAI-dialect stream carried: every one a valid chat.completion.chunk except a final
    ``{"error": ...}`` (and a "[DONE]" right after it); the end is "[DONE]" after a finish_reason, or the error;
    nothing after either. When it ended normally the openai SDK's own stream accumulator takes it. Returns
    whether it ended in an error."""
    assert chunks, "empty stream"
    if len(chunks) >= 2 and chunks[-1] == "[DONE]" and isinstance(chunks[-2], dict) and "error" in chunks[-2]:
        chunks = chunks[:-1]  # an error chunk may be followed by [DONE]: the SDK raises at the error either way
    last = chunks[-1]
    failed = isinstance(last, dict) and "error" in last
    assert failed or last == "[DONE]", f"the stream ended with {last!r}, not [DONE] or an error"
    if failed:
        assert isinstance(last["error"].get("message"), str) and last["error"]["message"], last
    body = chunks[:-1]
    state = ChatCompletionStreamState()
    finished = False
    for c in body:
        assert c != "[DONE]" and not (isinstance(c, dict) and "error" in c), f"{c!r} before the end"
        validate(ChatCompletionChunk, c, "a chunk")
        parsed = ChatCompletionChunk.model_validate(c)
        assert is_int(c["created"])
        for key, value in (c.get("usage") or {}).items():
            if key.endswith("_tokens"):
                assert is_int(value), f"usage.{key} is {value!r}, not an int"
        for choice in c["choices"]:
            finished |= choice.get("finish_reason") is not None
            for call in choice["delta"].get("tool_calls") or []:
                assert is_int(call["index"]), call
                if "id" in call:
                    assert isinstance(call["id"], str) and call["id"], call
                fn = call.get("function") or {}
                if "name" in fn:
                    assert isinstance(fn["name"], str) and fn["name"], call
                if "arguments" in fn:
                    assert isinstance(fn["arguments"], str), call
        state.handle_chunk(parsed)
    if not failed:
        assert finished, "a stream ended with [DONE] but no chunk carried a finish_reason"
        final = state.current_completion_snapshot  # get_final_completion() refuses "length" and "content_filter"
        for call in final.choices[0].message.tool_calls or []:
            assert isinstance(call.id, str) and call.id and call.function.name, call
    return failed


# =============================================================================================================
# Part 1: the translators and the SSE parser, no HTTP
# =============================================================================================================

def check_openai_to_anthropic(resp: Any, tool_names: Any = None, stop_sequences: Any = None,
                              input_estimate: int = 0) -> dict | None:
    """The Message for a backend's JSON answer, or None when the proxy refused it with a 502."""
    try:
        result = cp.openai_to_anthropic_response(resp, "claude-x", tool_names, stop_sequences, input_estimate)
    except cp.ProxyError as exc:
        assert exc.status == 502 and exc.message, (exc.status, exc.message)
        return None
    check_anthropic_message(result)
    return result


def check_anthropic_to_openai(msg: Any, tool_names: Any = None, json_tool: bool = False) -> None:
    try:
        result = cp.anthropic_to_openai_response(msg, "gpt-x", tool_names, json_tool)
    except cp.ProxyError as exc:
        assert exc.status == 502 and exc.message, (exc.status, exc.message)
        return
    check_chat_completion(result)


def run_openai_to_anthropic(chunks: list[Any], saw_done: bool, tool_names: Any = None,
                            stop_sequences: Any = None) -> list[tuple[str, Any]]:
    """What ``stream_messages`` does with the chunks of one stream: only ProxyError may escape ``feed``."""
    t = cp.OpenAIToAnthropicStream("claude-x", 10, tool_names, stop_sequences)
    events = t.start()
    try:
        for ch in chunks:
            events += t.feed(ch)
        events += t.finish(saw_done)
    except cp.ProxyError as exc:
        events += t.fail(exc)
    return events


def run_anthropic_to_openai(events: list[tuple[str | None, Any]], include_usage: bool = False,
                            tool_names: Any = None, json_tool: bool = False) -> list[Any]:
    """What ``stream_chat_completions`` does with the events of one stream: only ProxyError may escape."""
    t = cp.AnthropicToOpenAIStream("gpt-x", include_usage, tool_names, json_tool)
    out: list[Any] = []
    try:
        for name, data in events:
            if name == "ping":
                continue
            out += t.feed(name, data)
            if t.done:
                break
        out += t.finish()
    except cp.ProxyError as exc:
        out += t.fail(exc)
    return out


@PURE
@given(resp=openai_completion_or_junk(), tool_names=TOOL_NAME_MAPS,
       stop_sequences=st.sampled_from([None, [], ["STOP"]]), input_estimate=st.integers(0, 1000))
def test_openai_to_anthropic_response_is_a_message_or_502(resp, tool_names, stop_sequences, input_estimate):
    check_openai_to_anthropic(resp, tool_names, stop_sequences, input_estimate)


@PURE
@given(msg=anthropic_message_or_junk(), tool_names=TOOL_NAME_MAPS, json_tool=st.booleans())
def test_anthropic_to_openai_response_is_a_completion_or_502(msg, tool_names, json_tool):
    check_anthropic_to_openai(msg, tool_names, json_tool)


@PURE
@given(chunks=openai_chunk_script(), saw_done=st.booleans(), tool_names=TOOL_NAME_MAPS,
       stop_sequences=st.sampled_from([None, ["STOP"]]))
def test_openai_stream_translator_keeps_the_anthropic_grammar(chunks, saw_done, tool_names, stop_sequences):
    check_anthropic_events(run_openai_to_anthropic(chunks, saw_done, tool_names, stop_sequences))


@PURE
@given(events=anthropic_event_script(), include_usage=st.booleans(), tool_names=TOOL_NAME_MAPS,
       json_tool=st.booleans())
def test_anthropic_stream_translator_gives_valid_chunks(events, include_usage, tool_names, json_tool):
    check_openai_chunks(run_anthropic_to_openai(events, include_usage, tool_names, json_tool))


@settings(PURE, max_examples=500)
@given(data=st.data(), events=sse_event_list())
def test_sse_parser_gives_back_exactly_the_events(data, events):
    raw = data.draw(sse_encode(events))
    pieces = data.draw(byte_pieces(raw))
    parser = cp.SSEParser()
    got = []
    for piece in pieces:
        got += parser.feed(piece)
    got += parser.close()
    assert [(e.event, e.data) for e in got] == events, raw


# ---- named shapes of garbage, each on its own (a failure here needs no shrinking) -------------------------

def _completion(message: Any = None, **extra: Any) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"} if message is None else message,
                         "finish_reason": "stop"}], **extra}


def _call(name: Any = "Read", arguments: Any = "{}") -> dict:
    return _completion({"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": name, "arguments": arguments}}]})


OPENAI_GARBAGE = {
    "tool_name_a_list": _call(["x"]), "tool_name_a_number": _call(7), "tool_name_an_object": _call({"n": "x"}),
    "arguments_an_object": _call(arguments={"path": "/x"}), "arguments_a_list": _call(arguments=[1, 2]),
    "arguments_a_number": _call(arguments=5), "arguments_truncated": _call(arguments='{"path": "/x'),
    "function_a_string": _completion({"role": "assistant", "tool_calls": [{"id": "c", "function": "Read"}]}),
    "tool_calls_a_number": _completion({"role": "assistant", "content": "hi", "tool_calls": 2.5}),
    "legacy_function_call_name_an_object": _completion({"role": "assistant", "function_call": {
        "name": {}, "arguments": "{}"}}),
    "choices_not_a_list": {"id": "x", "choices": {"0": {"message": {"content": "hi"}}}},
    "choices_empty": _completion() | {"choices": []},
    "usage_strings": _completion(usage={"prompt_tokens": "12", "completion_tokens": "3"}),
    "usage_none": _completion(usage={"prompt_tokens": None, "completion_tokens": None}),
    "usage_floats": _completion(usage={"prompt_tokens": 12.5, "completion_tokens": 3.5}),
    "usage_negative": _completion(usage={"prompt_tokens": -5, "completion_tokens": -1}),
    "usage_infinite": _completion(usage={"prompt_tokens": float("inf"), "completion_tokens": 1}),
    "usage_cached_a_list": _completion(usage={"prompt_tokens": 5, "completion_tokens": 1,
                                              "prompt_tokens_details": {"cached_tokens": [1]}}),
    "usage_in_the_choice_a_string": {**_completion(), "choices": [{"message": {"content": "hi"}, "usage": "x"}]},
    "message_a_list": _completion([{"role": "assistant", "content": "hi"}]),
    "message_a_string": _completion("hi"),
    "content_a_dict": _completion({"role": "assistant", "content": {"text": "hi"}}),
    "reasoning_a_number": _completion({"role": "assistant", "content": "hi", "reasoning_content": 7}),
    "finish_reason_a_list": {**_completion(), "choices": [{"message": {"content": "hi"}, "finish_reason": ["stop"]}]},
    "finish_reason_an_object": {**_completion(), "choices": [{"message": {"content": "hi"}, "finish_reason": {}}]},
    "body_a_list": [_completion()], "body_an_empty_list": [], "body_a_string": "hello", "body_a_number": 42,
    "body_null": None,
}


@pytest.mark.parametrize("resp", OPENAI_GARBAGE.values(), ids=OPENAI_GARBAGE.keys())
def test_openai_garbage_examples(resp):
    check_openai_to_anthropic(resp, None, ["STOP"], 10)


def _message(content: Any, **extra: Any) -> dict:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "content": content,
            "stop_reason": "end_turn", "stop_sequence": None, "usage": {"input_tokens": 3, "output_tokens": 2},
            **extra}


ANTHROPIC_GARBAGE = {
    "tool_name_a_list": (_message([{"type": "tool_use", "id": "t", "name": ["x"], "input": {}}]), False),
    "tool_name_empty": (_message([{"type": "tool_use", "id": "t", "name": "", "input": {}}]), False),
    "tool_id_a_list": (_message([{"type": "tool_use", "id": ["t"], "name": "Read", "input": {}}]), False),
    "tool_id_empty": (_message([{"type": "tool_use", "id": "", "name": "Read", "input": {}}]), False),
    "tool_input_a_list": (_message([{"type": "tool_use", "id": "t", "name": "Read", "input": [1]}]), False),
    "json_tool_input_a_list": (_message([{"type": "tool_use", "id": "t", "name": "json_response",
                                          "input": ["value"]}]), True),
    "json_tool_input_a_string": (_message([{"type": "tool_use", "id": "t", "name": "json_response",
                                            "input": "value"}]), True),
    "text_null": (_message([{"type": "text", "text": None}]), False),
    "thinking_a_list": (_message([{"type": "thinking", "thinking": ["x"], "signature": "s"}]), False),
    "stop_reason_a_list": (_message([], stop_reason=["end_turn"]), False),
    "usage_strings": (_message([], usage={"input_tokens": "3", "output_tokens": "2"}), False),
    "usage_floats": (_message([], usage={"input_tokens": 2.5, "output_tokens": 1}), False),
    "usage_a_list": (_message([], usage={"input_tokens": [3], "output_tokens": 1}), False),
    "content_a_dict": (_message({"type": "text", "text": "hi"}), False),
    "body_a_list": ([_message([])], False), "body_a_string": ("hello", False), "body_a_number": (42, False),
}


@pytest.mark.parametrize("msg,json_tool", ANTHROPIC_GARBAGE.values(), ids=ANTHROPIC_GARBAGE.keys())
def test_anthropic_garbage_examples(msg, json_tool):
    check_anthropic_to_openai(msg, {"mcp__srv__tool": "mcp.srv.tool"}, json_tool)


def _chunk(delta: Any, finish: Any = None, **extra: Any) -> dict:
    return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}


OPENAI_STREAM_GARBAGE = {
    "tool_name_a_list": [{"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "a", "function": {"name": ["x"]}}]}}]}],
    "tool_arguments_a_list": [_chunk({"tool_calls": [{"index": 0, "id": "a", "function": {
        "name": "Read", "arguments": ["{}"]}}]}), _chunk({}, "tool_calls")],
    "tool_index_a_list": [_chunk({"tool_calls": [{"index": [0], "id": "a", "function": {
        "name": "Read", "arguments": "{}"}}]}), _chunk({}, "tool_calls")],
    "tool_call_a_string": [_chunk({"tool_calls": ["Read"]}), _chunk({}, "tool_calls")],
    "tool_arguments_truncated": [_chunk({"tool_calls": [{"index": 0, "id": "a", "function": {
        "name": "Read", "arguments": '{"path": "/x'}}]}), _chunk({}, "tool_calls")],
    "whole_tool_call_sent_twice": [_chunk({"tool_calls": [{"index": 0, "id": "a", "function": {
        "name": "Read", "arguments": "{}"}}]})] * 2 + [_chunk({}, "tool_calls")],
    "usage_strings": [_chunk({"content": "hi"}, "stop", usage={"prompt_tokens": "7", "completion_tokens": "2"})],
    "usage_floats": [_chunk({"content": "hi"}, "stop", usage={"prompt_tokens": 7.5, "completion_tokens": 2.5})],
    "usage_cached_a_list": [_chunk({"content": "hi"}, "stop", usage={
        "prompt_tokens": 7, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": [1]}})],
    "finish_reason_a_list": [_chunk({"content": "hi"}, ["stop"])],
    "delta_a_list": [_chunk([{"content": "hi"}], "stop")],
    "content_a_dict": [_chunk({"content": {"text": "hi"}}, "stop")],
    "chunk_a_list": [[_chunk({"content": "hi"})], _chunk({}, "stop")],
}


@pytest.mark.parametrize("chunks", OPENAI_STREAM_GARBAGE.values(), ids=OPENAI_STREAM_GARBAGE.keys())
def test_openai_stream_garbage_examples(chunks):
    check_anthropic_events(run_openai_to_anthropic(chunks, True))


def _start() -> tuple[str, dict]:
    return ("message_start", {"type": "message_start", "message": _message([]) | {"stop_reason": None}})


_END = [("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"output_tokens": 2}}), ("message_stop", {"type": "message_stop"})]
ANTHROPIC_STREAM_GARBAGE = {
    "error_data_a_list": [_start(), ("error", ["overloaded"])],
    "error_type_an_object": [_start(), ("error", {"type": "error", "error": {"type": {"x": 1}, "message": "x"}})],
    "message_a_list": [("message_start", {"type": "message_start", "message": [1]}), *_END],
    "message_usage_a_number": [("message_start", {"type": "message_start", "message": {"usage": 5}}), *_END],
    "tool_name_a_list": [_start(), ("content_block_start", {"type": "content_block_start", "index": 0,
                                                            "content_block": {"type": "tool_use", "id": "t",
                                                                              "name": ["x"], "input": {}}}), *_END],
    "tool_id_null": [_start(), ("content_block_start", {"type": "content_block_start", "index": 0,
                                                        "content_block": {"type": "tool_use", "id": None,
                                                                          "name": "Read", "input": {}}}), *_END],
    "tool_id_empty": [_start(), ("content_block_start", {"type": "content_block_start", "index": 0,
                                                         "content_block": {"type": "tool_use", "id": "",
                                                                           "name": "Read", "input": {}}}), *_END],
    "index_an_object": [_start(), ("content_block_start", {"type": "content_block_start", "index": {},
                                                           "content_block": {"type": "text", "text": ""}}), *_END],
    "content_block_a_number": [_start(), ("content_block_start", {"type": "content_block_start", "index": 0,
                                                                  "content_block": 5}), *_END],
    "text_a_number": [_start(), ("content_block_start", {"type": "content_block_start", "index": 0,
                                                         "content_block": {"type": "text", "text": ""}}),
                      ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                               "delta": {"type": "text_delta", "text": 5}}), *_END],
    "partial_json_a_list": [_start(), ("content_block_start", {"type": "content_block_start", "index": 0,
                                                               "content_block": {"type": "tool_use", "id": "t",
                                                                                 "name": "Read", "input": {}}}),
                            ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                     "delta": {"type": "input_json_delta", "partial_json": ["{}"]}}),
                            *_END],
    "delta_a_list": [_start(), ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": [1]}),
                     *_END],
    "usage_strings": [_start(), ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                                   "usage": {"output_tokens": "2", "input_tokens": "3"}}),
                      ("message_stop", {"type": "message_stop"})],
    "message_delta_a_list": [_start(), ("message_delta", []), ("message_stop", {"type": "message_stop"})],
    "event_data_null": [_start(), ("content_block_start", None), *_END],
}


@pytest.mark.parametrize("events", ANTHROPIC_STREAM_GARBAGE.values(), ids=ANTHROPIC_STREAM_GARBAGE.keys())
def test_anthropic_stream_garbage_examples(events):
    check_openai_chunks(run_anthropic_to_openai(events, True))


# =============================================================================================================
# Part 2: over HTTP, the real proxy between a scripted backend and the official SDKs
# =============================================================================================================

class ScriptedBackend(LoopbackServer):
    """Answers every POST (``/v1/chat/completions`` and ``/v1/messages``) with the bytes the test scripted: a
    content type, the body in pieces written separately, then a clean end or the connection dropped mid-body."""

    def __init__(self) -> None:
        self.content_type = "text/event-stream"
        self.pieces: list[bytes] = []
        self.abort = False
        self.content_length = False
        self.port = 0

    def script(self, content_type: str, pieces: list[bytes], abort: bool = False,
               content_length: bool = False) -> None:
        self.content_type, self.pieces, self.abort, self.content_length = content_type, pieces, abort, content_length

    def app(self) -> Any:
        from aiohttp import web
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.handle)
        app.router.add_post("/v1/messages", self.handle)
        return app

    async def handle(self, request: Any) -> Any:
        from aiohttp import web
        await request.read()
        pieces, abort = list(self.pieces), self.abort
        resp = web.StreamResponse(status=200, headers={"Content-Type": self.content_type})
        if self.content_length and not abort:
            resp.content_length = sum(len(p) for p in pieces)
        await resp.prepare(request)
        try:
            for piece in pieces:
                await resp.write(piece)
                await asyncio.sleep(0.002)  # separate network reads on the proxy's side
            if abort:
                if request.transport is not None:
                    request.transport.close()  # no terminating chunk: the proxy sees the body break off
                return resp
            await resp.write_eof()
        except ConnectionError:  # the proxy stopped reading (it may, once it has decided the answer is broken)
            pass
        return resp


class FuzzServers:
    def __init__(self, loop_thread: Any) -> None:
        self.loop_thread = loop_thread
        self.backend = ScriptedBackend()
        loop_thread.run(self.backend.start())
        url = f"http://127.0.0.1:{self.backend.port}/v1"
        # retries=0: one request per example, so the backend's script is consumed exactly once
        self.anthropic_front = ProxyServer(loop_thread, cp.Config(url=url, model="fake-model", retries=0,
                                                                  read_timeout=3))
        self.openai_front = ProxyServer(loop_thread, cp.Config(url=url, backend="anthropic", api_key="k",
                                                               model="fake-model", retries=0, read_timeout=3))
        self.anthropic = anthropic.Anthropic(base_url=self.anthropic_front.url, api_key="k", max_retries=0,
                                             timeout=5, _strict_response_validation=True)
        self.openai = openai.OpenAI(base_url=self.openai_front.url + "/v1", api_key="k", max_retries=0, timeout=5,
                                    _strict_response_validation=True)

    def close(self) -> None:
        self.anthropic.close()
        self.openai.close()
        self.anthropic_front.close()
        self.openai_front.close()
        self.loop_thread.run(self.backend.stop())


@pytest.fixture(scope="module")
def servers(loop_thread):
    s = FuzzServers(loop_thread)
    yield s
    s.close()


ANTHROPIC_REQUEST = {"model": "claude-fuzz", "max_tokens": 100, "stop_sequences": ["STOP"],
                     "messages": [{"role": "user", "content": "hi"}],
                     "tools": [{"name": "Read", "input_schema": {"type": "object"}},
                               {"name": "mcp.srv.tool", "input_schema": {"type": "object"}}]}
OPENAI_REQUEST = {"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}],
                  "tools": [{"type": "function", "function": {"name": "Read", "parameters": {"type": "object"}}}]}
ANTHROPIC_HEADERS = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
OPENAI_HEADERS = {"Authorization": "Bearer k"}
SSE_TYPES = st.sampled_from(["text/event-stream", "text/event-stream; charset=utf-8"])


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


@st.composite
def openai_backend_stream(draw: Any) -> dict:
    """What an OpenAI-compatible backend answers to ``stream: true``: SSE chunks in random framing and pieces,
    ended by [DONE], by a bare end of body, or by a dropped connection (possibly mid-event); sometimes a line that
    is not JSON; sometimes a JSON body instead of a stream."""
    ending = draw(st.sampled_from(["done", "eof", "abort", "not_json", "json_instead"]))
    if ending == "json_instead":
        return {"content_type": "application/json", "pieces": draw(byte_pieces(
            dumps(draw(openai_completion_or_junk())).encode(), 4)), "abort": False, "ending": ending}
    events = [(None, dumps(c)) for c in draw(openai_chunk_script())]
    if ending == "done":
        events.append((None, "[DONE]"))
    if ending == "not_json":
        events.insert(draw(st.integers(0, len(events))), (None, draw(st.sampled_from(["{not json", "hello", "{"]))))
    raw = draw(sse_encode(events, terminate_last=ending != "abort"))
    if ending == "abort" and raw:
        raw = raw[:draw(st.integers(0, len(raw)))]
    return {"content_type": draw(SSE_TYPES), "pieces": draw(byte_pieces(raw, 6)), "abort": ending == "abort",
            "ending": ending}


@st.composite
def openai_backend_json(draw: Any) -> dict:
    """What an OpenAI-compatible backend answers to a JSON request: a completion (mutated) or any JSON, sometimes
    cut off mid-body, sometimes an SSE stream instead."""
    kind = draw(st.sampled_from(["json", "json", "truncated", "sse_instead"]))
    if kind == "sse_instead":
        raw = draw(sse_encode([(None, dumps(c)) for c in draw(openai_chunk_script())] + [(None, "[DONE]")]))
        return {"content_type": "text/event-stream", "pieces": [raw], "abort": False}
    raw = dumps(draw(openai_completion_or_junk())).encode()
    if kind == "truncated":
        return {"content_type": "application/json", "pieces": [raw[:draw(st.integers(0, len(raw) - 1))]],
                "abort": True}
    return {"content_type": "application/json", "pieces": draw(byte_pieces(raw, 4)), "abort": False,
            "content_length": draw(st.booleans())}


@st.composite
def anthropic_backend_stream(draw: Any) -> dict:
    """What an Anthropic backend answers to ``stream: true``: its events (well-formed and mutated), ``event:``
    lines sometimes missing, random framing and pieces, a clean end or a dropped connection, sometimes a data
    line that is not JSON, sometimes a JSON Message instead of a stream."""
    ending = draw(st.sampled_from(["eof", "eof", "abort", "not_json", "json_instead"]))
    if ending == "json_instead":
        return {"content_type": "application/json", "pieces": [dumps(draw(anthropic_message_or_junk())).encode()],
                "abort": False}
    keep_names = draw(st.booleans())
    events = [(name if keep_names or name == "ping" else None, dumps(data))
              for name, data in draw(anthropic_event_script())]
    if ending == "not_json":
        events.insert(draw(st.integers(0, len(events))), ("content_block_delta", "{not json"))
    raw = draw(sse_encode(events, terminate_last=ending != "abort"))
    if ending == "abort" and raw:
        raw = raw[:draw(st.integers(0, len(raw)))]
    # Once message_stop went through, the proxy may stop reading: what is cut after it does not matter.
    return {"content_type": draw(SSE_TYPES), "pieces": draw(byte_pieces(raw, 6)), "abort": ending == "abort",
            "cut_before_the_end": ending == "abort" and b"message_stop" not in raw}


@st.composite
def anthropic_backend_json(draw: Any) -> dict:
    kind = draw(st.sampled_from(["json", "json", "truncated"]))
    raw = dumps(draw(anthropic_message_or_junk())).encode()
    if kind == "truncated":
        return {"content_type": "application/json", "pieces": [raw[:draw(st.integers(0, len(raw) - 1))]],
                "abort": True}
    return {"content_type": "application/json", "pieces": draw(byte_pieces(raw, 4)), "abort": False,
            "content_length": draw(st.booleans())}


def _script(servers: FuzzServers, answer: dict) -> None:
    servers.backend.script(answer["content_type"], answer["pieces"], answer["abort"],
                           answer.get("content_length", False))


def raw_post(url: str, path: str, payload: dict, headers: dict[str, str]) -> tuple[int, bytes]:
    """POST over a plain socket, reading until the proxy closes: (status, de-chunked body). Fails on a response
    that is not well-formed HTTP: a second status line inside the body (what an exception after the stream
    started used to produce), a body cut off without its last chunk, or silence (5 s)."""
    port = int(url.rsplit(":", 1)[1])
    data = json.dumps(payload).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n")
    raw = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head.encode() + data)
        while chunk := sock.recv(65536):
            raw += chunk
    head_bytes, _, body = raw.partition(b"\r\n\r\n")
    status = int(head_bytes.split(b" ", 2)[1])
    at = body.find(b"HTTP/1.1")
    assert at < 0, f"a second HTTP response inside the body: {body[max(0, at - 300):at + 200]!r}"
    if b"transfer-encoding: chunked" not in head_bytes.lower():
        return status, body
    out, i = b"", 0
    while True:
        j = body.find(b"\r\n", i)
        assert j >= 0, f"the response ended without its last chunk: ...{body[-300:]!r}"
        size = int(body[i:j].split(b";")[0], 16)
        if size == 0:
            return status, out
        out += body[j + 2:j + 2 + size]
        i = j + 2 + size + 2


def _openai_stream_chunks(raw: bytes) -> list[Any]:
    parser = cp.SSEParser()
    events = parser.feed(raw) + parser.close()
    return ["[DONE]" if e.data == "[DONE]" else json.loads(e.data) for e in events]


@E2E
@given(answer=openai_backend_stream(), helper=st.booleans())
def test_anthropic_sdk_streams_through_a_fuzzed_openai_backend(servers, answer, helper):
    _script(servers, answer)
    status, body = raw_post(servers.anthropic_front.url, "/v1/messages", {**ANTHROPIC_REQUEST, "stream": True},
                            ANTHROPIC_HEADERS)
    assert status == 200, (status, body[:500])
    events = parse_sse_bytes(body)
    failed = check_anthropic_events(events)
    if answer["ending"] in ("abort", "not_json"):
        assert failed, "a stream that broke off or carried garbage ended as if whole"

    _script(servers, answer)
    try:
        if helper:
            with servers.anthropic.messages.stream(**ANTHROPIC_REQUEST) as stream:
                for _ in stream:
                    pass
                message = stream.get_final_message()
        else:
            got = list(servers.anthropic.messages.create(**ANTHROPIC_REQUEST, stream=True))
    except anthropic.APIStatusError as exc:  # not APIConnectionError/APITimeoutError/APIResponseValidationError
        assert failed, f"the SDK raised {exc!r} on a stream that ended normally"
        assert exc.body == events[-1][1], (exc.body, events[-1][1])
    else:
        assert not failed, "the SDK accepted a stream that ended in an error event"
        if helper:
            assert message.stop_reason == events[-2][1]["delta"]["stop_reason"]
            assert len(message.content) == sum(1 for name, _ in events if name == "content_block_start")
        else:
            assert [e.type for e in got] == [name for name, _ in events if name != "ping"]


@E2E
@given(body=openai_completion_or_junk(), content_length=st.booleans())
def test_anthropic_sdk_stream_answered_with_json_by_a_fuzzed_openai_backend(servers, body, content_length):
    """A backend that ignores ``stream: true`` answers one JSON completion; the proxy must still give the client a
    stream the SDK accepts: the answer, or an error event."""
    answer = {"content_type": "application/json", "pieces": [dumps(body).encode()], "abort": False,
              "content_length": content_length}
    _script(servers, answer)
    status, raw = raw_post(servers.anthropic_front.url, "/v1/messages", {**ANTHROPIC_REQUEST, "stream": True},
                           ANTHROPIC_HEADERS)
    assert status == 200, (status, raw[:500])
    events = parse_sse_bytes(raw)
    failed = check_anthropic_events(events)
    _script(servers, answer)
    try:
        with servers.anthropic.messages.stream(**ANTHROPIC_REQUEST) as stream:
            message = stream.get_final_message()
    except anthropic.APIStatusError as exc:
        assert failed and exc.body == events[-1][1], (exc.body, events[-1])
    else:
        assert not failed and len(message.content) == sum(1 for n, _ in events if n == "content_block_start")


@E2E
@given(answer=openai_backend_json())
def test_anthropic_sdk_json_through_a_fuzzed_openai_backend(servers, answer):
    _script(servers, answer)
    status, body = raw_post(servers.anthropic_front.url, "/v1/messages", ANTHROPIC_REQUEST, ANTHROPIC_HEADERS)
    if status == 200:
        check_anthropic_message(json.loads(body))
    else:
        assert status == 502, (status, body[:500])
        err = json.loads(body)
        assert err["type"] == "error" and "backend" in err["error"]["message"], err

    _script(servers, answer)
    try:
        message = servers.anthropic.messages.create(**ANTHROPIC_REQUEST)
    except anthropic.APIStatusError as exc:
        assert exc.status_code == 502 and "backend" in exc.message, exc
        assert status == 502
    else:
        assert status == 200 and message.type == "message"


@E2E
@given(answer=anthropic_backend_stream(), include_usage=st.booleans())
def test_openai_sdk_streams_through_a_fuzzed_anthropic_backend(servers, answer, include_usage):
    request = {**OPENAI_REQUEST, "stream_options": {"include_usage": True}} if include_usage else OPENAI_REQUEST
    _script(servers, answer)
    status, body = raw_post(servers.openai_front.url, "/v1/chat/completions", {**request, "stream": True},
                            OPENAI_HEADERS)
    assert status == 200, (status, body[:500])
    chunks = _openai_stream_chunks(body)
    failed = check_openai_chunks(chunks)
    if answer.get("cut_before_the_end"):
        assert failed, "a stream that broke off ended as if whole"

    _script(servers, answer)
    try:
        got = list(servers.openai.chat.completions.create(**request, stream=True))
    except openai.APIError as exc:
        if type(exc) is not openai.APIError:  # a status, connection, timeout or validation error
            raise
        assert failed, f"the SDK raised {exc!r} on a stream that ended normally"
        error = next(c for c in reversed(chunks) if isinstance(c, dict) and "error" in c)
        assert exc.message == error["error"]["message"]
    else:
        assert not failed, "the SDK accepted a stream that ended in an error chunk"
        assert any(c.choices and c.choices[0].finish_reason for c in got)


@E2E
@given(answer=anthropic_backend_json())
def test_openai_sdk_json_through_a_fuzzed_anthropic_backend(servers, answer):
    _script(servers, answer)
    status, body = raw_post(servers.openai_front.url, "/v1/chat/completions", OPENAI_REQUEST, OPENAI_HEADERS)
    if status == 200:
        check_chat_completion(json.loads(body))
    else:
        assert status == 502, (status, body[:500])
        assert "backend" in json.loads(body)["error"]["message"], body[:500]

    _script(servers, answer)
    try:
        completion = servers.openai.chat.completions.create(**OPENAI_REQUEST)
    except openai.APIStatusError as exc:
        assert exc.status_code == 502 and "backend" in exc.message, exc
        assert status == 502
    else:
        assert status == 200 and completion.object == "chat.completion"
