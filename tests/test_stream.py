"""OpenAI chunk streams → Anthropic events, fed recorded chunk sequences of each backend quirk.

Every translated stream is checked against the Anthropic grammar and then run through the anthropic SDK's own
accumulator, so "accepted by the SDK" is tested, not assumed. SSE parsing is tested byte-split.
"""

from __future__ import annotations

import json

import pytest
from conftest import accumulate_with_sdk, assert_anthropic_grammar, parse_sse_bytes

from claude_proxy import (
    OpenAIToAnthropicStream,
    ProxyError,
    SSEParser,
    ThinkTagSplitter,
    ToolCallAssembler,
    completion_as_chunk,
    estimate_text_tokens,
    sse_frames,
)


def c(delta=None, finish=None, usage=None, choices=True, **extra):
    """One chat.completion.chunk."""
    chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m", **extra}
    chunk["choices"] = [{"index": 0, "delta": delta or {}, "finish_reason": finish}] if choices else []
    if usage is not None:
        chunk["usage"] = usage
    return chunk


def run(chunks, saw_done=True, **kw):
    t = OpenAIToAnthropicStream("claude-sonnet-4-5", input_tokens=kw.pop("input_tokens", 11), **kw)
    events = t.start()
    try:
        for ch in chunks:
            events += t.feed(ch)
        events += t.finish(saw_done)
    except ProxyError as exc:
        events += t.fail(exc)
    return events


def final(events):
    assert_anthropic_grammar(events)
    # and the SSE bytes round-trip through our parser unchanged
    assert parse_sse_bytes(sse_frames(events)) == events
    return accumulate_with_sdk(events)


USAGE = {"prompt_tokens": 100, "completion_tokens": 20, "prompt_tokens_details": {"cached_tokens": 30}}


def test_plain_text_openai():
    msg = final(run([c({"role": "assistant", "content": ""}), c({"content": "Hel"}), c({"content": "lo"}),
                     c({}, "stop"), c(choices=False, usage=USAGE)]))
    assert msg.content[0].text == "Hello"
    assert msg.stop_reason == "end_turn"
    assert (msg.usage.input_tokens, msg.usage.output_tokens, msg.usage.cache_read_input_tokens) == (70, 20, 30)


def test_message_start_carries_the_estimate():
    events = run([c({"content": "x"}, "stop")], input_tokens=1234)
    assert events[0][1]["message"]["usage"]["input_tokens"] == 1234


def test_reasoning_then_text_then_parallel_tools_streamed_incrementally():
    chunks = [
        c({"role": "assistant", "reasoning_content": "Think"}), c({"reasoning_content": "ing"}),
        c({"content": "I'll call two tools."}),
        c({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                           "function": {"name": "Read", "arguments": ""}}]}),
        c({"tool_calls": [{"index": 0, "function": {"arguments": '{"file_'}}]}),
        c({"tool_calls": [{"index": 0, "function": {"arguments": 'path":"/a"}'}}]}),
        c({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                           "function": {"name": "Bash", "arguments": '{"command"'}}]}),
        c({"tool_calls": [{"index": 1, "function": {"arguments": ':"ls"}'}}]}),
        c({}, "tool_calls"), c(choices=False, usage=USAGE)]
    events = run(chunks)
    msg = final(events)
    assert [b.type for b in msg.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert msg.content[0].thinking == "Thinking"
    assert msg.content[2].input == {"file_path": "/a"} and msg.content[3].input == {"command": "ls"}
    assert msg.stop_reason == "tool_use"
    deltas = [d["delta"]["partial_json"] for e, d in events if e == "content_block_delta"
              and d["delta"]["type"] == "input_json_delta"]
    # whole and checked: an SDK parses each prefix as partial JSON and fails on a backend's broken arguments
    assert deltas == ['{"file_path":"/a"}', '{"command":"ls"}']


def test_gemini_tool_calls_without_index():
    chunks = [c({"role": "assistant", "content": "ok"}),
              c({"tool_calls": [{"id": "call_297140", "type": "function",
                                 "function": {"name": "a", "arguments": '{"x":1}'}}]}),
              c({"tool_calls": [{"id": "call_297141", "type": "function",
                                 "function": {"name": "b", "arguments": '{"y":2}'}}]}),
              c({}, "stop", usage={"prompt_tokens": 5, "completion_tokens": 3})]
    msg = final(run(chunks))
    assert [(b.name, b.input) for b in msg.content[1:]] == [("a", {"x": 1}), ("b", {"y": 2})]
    assert msg.stop_reason == "tool_use"


def test_gemini_reusing_index_zero_for_parallel_calls():
    chunks = [c({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "a", "arguments": '{"x":1}'}}]}),
              c({"tool_calls": [{"index": 0, "id": "c2", "function": {"name": "b", "arguments": '{"y":2}'}}]}),
              c({}, "tool_calls")]
    msg = final(run(chunks))
    assert [(b.id, b.input) for b in msg.content] == [("c1", {"x": 1}), ("c2", {"y": 2})]


def test_no_index_no_id_continuation_fragments():
    chunks = [c({"tool_calls": [{"function": {"name": "a", "arguments": '{"x"'}}]}),
              c({"tool_calls": [{"function": {"arguments": ':1}'}}]}), c({}, "tool_calls")]
    msg = final(run(chunks))
    assert msg.content[0].input == {"x": 1} and msg.content[0].id.startswith("toolu_")


def test_ollama_whole_tool_call_in_one_chunk_with_stop_and_no_usage():
    chunks = [c({"role": "assistant", "content": "",
                 "tool_calls": [{"id": "call_x1", "index": 0, "type": "function",
                                 "function": {"name": "Read", "arguments": '{"file_path":"/etc/hosts"}'}},
                                {"id": "call_x2", "index": 1, "type": "function",
                                 "function": {"name": "Read", "arguments": {"file_path": "/b"}}}]}),
              c({}, "stop")]
    events = run(chunks)
    msg = final(events)
    assert [b.input for b in msg.content] == [{"file_path": "/etc/hosts"}, {"file_path": "/b"}]
    assert msg.stop_reason == "tool_use"
    assert events[-2][1]["usage"]["output_tokens"] > 0  # estimated when the backend reports nothing


def test_azure_empty_choices_and_chunks_without_delta():
    chunks = [{"id": "", "object": "", "created": 0, "model": "", "choices": [], "prompt_filter_results": []},
              c({"role": "assistant", "content": "hi"}),
              {"id": "x", "choices": [{"index": 0, "content_filter_results": {}}]},
              c({}, "stop")]
    msg = final(run(chunks))
    assert msg.content[0].text == "hi"


def test_xai_usage_before_finish_chunk_and_moonshot_usage_in_choice():
    msg = final(run([c({"content": "a"}), c({}, None, usage=USAGE), c({}, "stop")]))
    assert msg.usage.output_tokens == 20
    chunk = c({}, "stop")
    chunk["choices"][0]["usage"] = {"prompt_tokens": 9, "completion_tokens": 4}
    msg = final(run([c({"content": "a"}), chunk]))
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (9, 4)


def test_text_after_a_tool_call_comes_first_as_in_json_answers():
    chunks = [c({"tool_calls": [{"index": 0, "id": "t1", "function": {"name": "a", "arguments": "{}"}}]}),
              c({"content": "and some text after"}), c({}, "tool_calls")]
    msg = final(run(chunks))
    assert [b.type for b in msg.content] == ["text", "tool_use"]  # calls come out whole, when the answer ends


def test_name_arriving_after_id_is_waited_for():
    chunks = [c({"tool_calls": [{"index": 0, "id": "t1", "function": {"arguments": ""}}]}),
              c({"tool_calls": [{"index": 0, "function": {"name": "late", "arguments": '{"a":'}}]}),
              c({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}), c({}, "tool_calls")]
    msg = final(run(chunks))
    assert (msg.content[0].name, msg.content[0].input) == ("late", {"a": 1})


def test_refusal_and_length():
    msg = final(run([c({"refusal": "I can't help with that."}), c({}, "stop")]))
    assert msg.stop_reason == "refusal"
    assert final(run([c({"content": "abc"}), c({}, "length")])).stop_reason == "max_tokens"


def test_stop_sequence_from_vllm():
    chunk = c({}, "stop")
    chunk["choices"][0]["stop_reason"] = "###"
    events = run([c({"content": "abc"}), chunk], stop_sequences=["###"])
    msg = final(events)
    assert msg.stop_reason == "stop_sequence" and msg.stop_sequence == "###"


def test_long_tool_names_are_reverse_mapped():
    chunks = [c({"tool_calls": [{"index": 0, "id": "t", "function": {"name": "short_1234", "arguments": "{}"}}]}),
              c({}, "tool_calls")]
    msg = final(run(chunks, tool_names={"short_1234": "mcp__server.with.dots__tool"}))
    assert msg.content[0].name == "mcp__server.with.dots__tool"


def test_no_done_after_finish_reason_is_a_normal_end():
    msg = final(run([c({"content": "a"}), c({}, "stop")], saw_done=False))
    assert msg.stop_reason == "end_turn"


def test_done_without_finish_reason_is_a_normal_end():
    assert final(run([c({"content": "a"})], saw_done=True)).stop_reason == "end_turn"


def test_cut_off_stream_ends_in_error_never_message_stop():
    events = run([c({"content": "partial"})], saw_done=False)
    assert_anthropic_grammar(events, expect_error=True)
    assert "closed the stream" in events[-1][1]["error"]["message"]


def test_midstream_error_chunk_becomes_error_event():
    events = run([c({"content": "partial"}), {"error": {"message": "Upstream overloaded", "code": 503}}])
    assert_anthropic_grammar(events, expect_error=True)
    assert "Upstream overloaded" in events[-1][1]["error"]["message"]


def test_fail_and_finish_are_idempotent():
    t = OpenAIToAnthropicStream("m")
    t.start()
    assert t.fail(ProxyError(502, "x"))[0][0] == "error"
    assert t.finish() == [] and t.fail(ProxyError(502, "y")) == []


def test_a_whole_completion_replayed_as_a_stream_is_a_valid_stream():
    """A backend that ignores stream: true answers with one chat.completion; it becomes one chunk."""
    completion = {"id": "chatcmpl-1", "object": "chat.completion", "choices": [{"index": 0, "finish_reason": "tool_calls",
                  "message": {"role": "assistant", "content": "hi", "reasoning_content": "t", "tool_calls": [
                      {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": [1]}'}}]}}],
                  "usage": {"prompt_tokens": 3, "completion_tokens": 4}}
    msg = final(run([completion_as_chunk(completion)]))
    assert [b.type for b in msg.content] == ["thinking", "text", "tool_use"]
    assert msg.content[2].input == {"a": [1]} and msg.usage.output_tokens == 4 and msg.stop_reason == "tool_use"


def test_without_backend_usage_both_paths_use_the_one_estimator():
    """Issue #9 defect 7: the stream path counted chars/4, the JSON path estimate_text_tokens."""
    import claude_proxy as cp
    text = "Here is the plan: 1) read config.py 2) run pytest -q; then ünïcödé and 中文 too. " * 5
    events = run([c({"reasoning_content": "Think."}), c({"content": text[:50]}), c({"content": text[50:]}),
                  c({}, "stop")])
    streamed = events[-2][1]["usage"]["output_tokens"]
    whole = cp.openai_to_anthropic_response({"choices": [{"message": {"content": text, "reasoning_content": "Think."},
                                                          "finish_reason": "stop"}]}, "m")
    assert streamed == whole["usage"]["output_tokens"] == estimate_text_tokens("Think." + text)
    assert streamed != max(1, round(len("Think." + text) / 4))


# ---- the two helpers, alone --------------------------------------------------------------------------------

@pytest.mark.parametrize("pieces,expected", [
    (["<think>plan</think>\n\nanswer"], [("thinking", "plan"), ("text", "answer")]),
    (["  <th", "ink>pl", "an</th", "ink>", "\n\n", "ans", "wer"], [("thinking", "plan"), ("text", "answer")]),
    (["<thinking is fun"], [("text", "<thinking is fun")]),
    (["answer <think>not reasoning</think>"], [("text", "answer <think>not reasoning</think>")]),
    (["<think>never closed"], [("thinking", "never closed")]),
    (["<", "thi"], [("text", "<thi")]),
])
def test_think_tag_splitter(pieces, expected):
    splitter = ThinkTagSplitter()
    out = [p for piece in pieces for p in splitter.feed(piece)] + splitter.flush()
    merged: list[tuple[str, str]] = []
    for kind, text in out:
        if merged and merged[-1][0] == kind:
            merged[-1] = (kind, merged[-1][1] + text)
        else:
            merged.append((kind, text))
    assert merged == expected


def test_think_tag_splitter_interrupted_by_a_tool_call():
    splitter = ThinkTagSplitter()
    assert splitter.feed(" <th") == []
    assert splitter.interrupt() == [("text", " <th")]  # never became a tag: it is text, and comes first
    assert splitter.feed("<think>x</think>") == [("text", "<think>x</think>")]
    inside = ThinkTagSplitter()
    inside.feed("<think>abc</th")
    assert inside.interrupt() == []  # still thinking: nothing is decided yet


def test_tool_call_assembler_keys_fragments_and_completes_whole_calls():
    a = ToolCallAssembler()
    a.feed({"index": 0, "id": "call_1"})  # id before name
    a.feed({"index": 0, "function": {"name": "f", "arguments": '{"x"'}})
    a.feed({"index": 0, "function": {"arguments": ": 1}"}})
    a.feed({"index": 0, "id": "call_2", "function": {"name": "g", "arguments": "{}"}})  # Gemini: index 0 again
    a.feed({"id": "call_3", "function": {"name": "h", "arguments": '{"cut": "hal'}})  # truncated at max_tokens
    a.feed({"function": {"name": "k", "arguments": "not json"}})  # no index, no id: a name starts a new call
    a.feed({"function": {"arguments": "more"}})  # ... and a fragment with nothing continues it
    calls = a.complete()
    assert calls[:3] == [{"id": "call_1", "name": "f", "arguments": '{"x":1}'},
                         {"id": "call_2", "name": "g", "arguments": "{}"},
                         {"id": "call_3", "name": "h", "arguments": '{"cut":"hal"}'}]
    assert calls[3]["name"] == "k" and calls[3]["id"].startswith("toolu_")
    assert calls[3]["arguments"] == '{"_unparsed_arguments":"not jsonmore"}'  # passed on, never dropped
    assert len(calls) == 4
    b = ToolCallAssembler()
    b.feed({"id": "x"})
    assert b.complete()[0]["name"] == "unknown_tool" and b.complete() == []


@pytest.mark.parametrize("fragment,fragment_error", [
    ({"index": 0, "id": "a", "function": {"name": ["x"]}}, "function.name is a list"),
    ({"index": 0, "function": "f"}, "function is a string"),
    ({"index": 0, "function": {"name": "f", "arguments": 5}}, "function.arguments is an integer"),
])
def test_tool_call_fragments_of_the_wrong_shape_are_malformed_answers(fragment, fragment_error):
    with pytest.raises(ProxyError) as info:
        ToolCallAssembler().feed(fragment)
    assert info.value.status == 502 and fragment_error in info.value.message and not info.value.retryable


# ---- SSE parsing ----------------------------------------------------------------------------------

RAW = ('data: {"a":1}\r\n\r\n: keep-alive\n\ndata:{"b":"\u00e9\u4e2d"}\n\n'
       'event: message\ndata: {"c":\ndata: 2}\n\ndata: {"d":1}\ndata: {"e":2}\n\ndata: [DONE]').encode()


@pytest.mark.parametrize("step", [1, 2, 3, 7, len(RAW)])
def test_sse_parser_every_split(step):
    parser = SSEParser()
    events = []
    for i in range(0, len(RAW), step):  # splits CRLF pairs and multi-byte UTF-8 characters
        events += parser.feed(RAW[i:i + step])
    events += parser.close()
    datas = [e.data for e in events]
    assert datas == ['{"a":1}', '{"b":"é中"}', '{"c":\n2}', '{"d":1}', '{"e":2}', "[DONE]"]
    assert [json.loads(d) for d in datas[:-1]][2] == {"c": 2}
    assert events[2].event == "message" and events[0].event is None


# ---- reasoning inlined as <think>…</think>, and Gemini thought signatures ---------------------------------------

@pytest.mark.parametrize("pieces", [
    ["<think>", "Let me ", "think.", "</think>", "\n\nThe answer."],
    ["<thi", "nk>Let me think.</th", "ink>The answer."],
    ["\n<think>Let me think.</think>The answer."],
])
def test_think_tags_in_content_become_a_thinking_block(pieces):
    msg = final(run([c({"content": p}) for p in pieces] + [c({}, "stop")]))
    assert [b.type for b in msg.content] == ["thinking", "text"]
    assert msg.content[0].thinking.strip() == "Let me think." and msg.content[1].text == "The answer."


def test_text_that_merely_mentions_think_is_left_alone():
    msg = final(run([c({"content": "Use "}), c({"content": "<think> tags"}), c({}, "stop")]))
    assert [b.type for b in msg.content] == ["text"] and msg.content[0].text == "Use <think> tags"
    msg = final(run([c({"content": "\n\n"}), c({"tool_calls": [{"index": 0, "id": "t", "function": {
        "name": "f", "arguments": "{}"}}]}), c({}, "tool_calls")]))
    assert [b.type for b in msg.content] == ["text", "tool_use"]  # held-back whitespace keeps its place


def test_unclosed_think_at_the_end_stays_thinking():
    msg = final(run([c({"content": "<think>still going"}), c({}, "length")]))
    assert [b.type for b in msg.content] == ["thinking"] and msg.content[0].thinking == "still going"


def test_gemini_thought_signature_rides_in_the_tool_id_and_comes_back():
    from claude_proxy import anthropic_to_openai_request, split_tool_id
    sig = "CiQBVKhc7+/sig=="
    msg = final(run([c({"tool_calls": [{"id": "call_1", "type": "function", "extra_content": {
        "google": {"thought_signature": sig}}, "function": {"name": "Read", "arguments": '{"p":1}'}}]}),
        c({}, "tool_calls")]))
    tool_id = msg.content[0].id
    assert tool_id.startswith("call_1__gts_") and split_tool_id(tool_id) == ("call_1", sig)
    out = anthropic_to_openai_request({"model": "m", "max_tokens": 10, "messages": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": tool_id, "name": "Read", "input": {"p": 1}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_id, "content": "ok"}]}]}, "gemini-3")
    call = out["messages"][1]["tool_calls"][0]
    assert call["id"] == "call_1" and call["extra_content"] == {"google": {"thought_signature": sig}}
    assert out["messages"][2] == {"role": "tool", "tool_call_id": "call_1", "content": "ok"}


def test_a_tool_call_cut_off_by_the_output_limit_is_not_presented_as_whole():
    """finish_reason "length" with a half-written call: the client must see max_tokens, not tool_use."""
    chunks = [c({"tool_calls": [{"index": 0, "id": "t1", "function": {
        "name": "Write", "arguments": '{"path": "a.py", "content": "def f():\\n    retu'}}]}), c({}, "length")]
    msg = final(run(chunks))
    assert msg.stop_reason == "max_tokens"


def test_fragments_under_a_reused_index_continue_the_latest_call():
    a = ToolCallAssembler()
    a.feed({"index": 0, "id": "a", "function": {"name": "f", "arguments": '{"x":'}})
    a.feed({"index": 0, "function": {"arguments": "1}"}})
    a.feed({"index": 0, "id": "b", "function": {"name": "g", "arguments": '{"y":'}})
    a.feed({"index": 0, "function": {"arguments": "2}"}})
    assert [(call["name"], call["arguments"]) for call in a.complete()] == [("f", '{"x":1}'), ("g", '{"y":2}')]


@pytest.mark.parametrize("text,expected", [
    ('```json\n{"file_path": "/x"}\n```', {"file_path": "/x"}),
    ('"{\\"file_path\\": \\"/x\\"}"', {"file_path": "/x"}),
    ("{'file_path': '/x', 'limit': None, 'all': True}", {"file_path": "/x", "limit": None, "all": True}),
    ('{"file_path": "/x",}', {"file_path": "/x"}),
    ('{"file_path": "/x', {"file_path": "/x"}),
    ("no arguments here", {"_unparsed_arguments": "no arguments here"}),
])
def test_tool_arguments_that_are_not_quite_json_are_repaired_or_passed_on(text, expected):
    chunks = [c({"tool_calls": [{"index": 0, "id": "t1", "function": {"name": "Read", "arguments": text}}]}),
              c({}, "tool_calls")]
    assert final(run(chunks)).content[0].input == expected
    import claude_proxy as cp
    whole = cp.openai_to_anthropic_response({"choices": [{"finish_reason": "tool_calls", "message": {
        "tool_calls": [{"id": "t1", "function": {"name": "Read", "arguments": text}}]}}]}, "m")
    assert whole["content"][0]["input"] == expected


def test_chunks_that_repeat_the_whole_arguments_so_far():
    pieces = ['{"file', '{"file_path": "/', '{"file_path": "/etc/hosts"}']
    chunks = [c({"tool_calls": [{"index": 0, "id": "t1", "function": {"name": "Read", "arguments": p}}]})
              for p in pieces] + [c({}, "tool_calls")]
    assert final(run(chunks)).content[0].input == {"file_path": "/etc/hosts"}


def test_arguments_that_come_only_with_the_finish_reason():
    chunks = [c({"tool_calls": [{"index": 0, "id": "t1", "function": {"name": "Read", "arguments": ""}}]}),
              c({"tool_calls": [{"index": 0, "function": {"arguments": '{"file_path": "/x"}'}}]}, "tool_calls")]
    assert final(run(chunks)).content[0].input == {"file_path": "/x"}
