"""Hypothesis strategies for the fuzz tests (tests/test_fuzz_*.py): junk JSON, mutations of well-formed values,
OpenAI and Anthropic answers (whole and streamed) as real backends send them and as broken ones do, and random
SSE framing of a list of events.

Every strategy shrinks towards the well-formed case: the number of mutations shrinks to 0, so a failure is
reported as the smallest change to a good answer that still breaks the proxy.
"""

from __future__ import annotations

import copy
import itertools
import json
from typing import Any

from hypothesis import strategies as st

# ---- junk ----------------------------------------------------------------------------------------------

FIELD_NAMES = ["type", "role", "content", "text", "id", "name", "input", "index", "delta", "choices", "message",
               "function", "arguments", "tool_calls", "usage", "finish_reason", "stop_reason", "error",
               "content_block", "partial_json", "thinking", "reasoning_content", "prompt_tokens", "output_tokens"]
WORDS = ["", "x", "stop", "text", "tool_use", "text_delta", "input_json_delta", "message_stop", "error", "{",
         '{"a": 1}', "[1", "null", "[DONE]", "é日本🙂", "<think>", "</think>"]
SHORT_TEXT = st.one_of(st.sampled_from(WORDS), st.text(max_size=6))
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-(10**20), 10**20),
                   st.floats(allow_nan=False, allow_infinity=False), SHORT_TEXT)
# What Python's json.loads (the proxy's parser when orjson is absent) makes of NaN, Infinity and 1e999.
WEIRD_NUMBERS = ["12", "-3", -7, 2.5, None, True, 10**30, float("inf"), float("nan"), [], {}]


def junk(max_leaves: int = 6) -> st.SearchStrategy[Any]:
    """Any JSON value: scalars, lists, objects with plausible field names."""
    key = st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=4))
    return st.recursive(SCALAR, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(key, inner, max_size=3)),
                        max_leaves=max_leaves)


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, prefix + (i,))
    return out


MUTATIONS = ["junk", "delete", "wrap_in_list", "as_string", "null", "weird_number", "empty", "object"]


@st.composite
def mutated(draw: Any, base: st.SearchStrategy[Any], max_mutations: int = 3) -> Any:
    """A value of ``base`` with up to ``max_mutations`` random nodes replaced, deleted, wrapped in a list,
    turned into a string, nulled, emptied... (shrinks to ``base`` itself)."""
    value = copy.deepcopy(draw(base))
    # 1 first: it is what shrinking aims at (most breakage needs one bad field); 0 (the value as is) is rarer.
    for _ in range(draw(st.sampled_from([1, *range(2, max_mutations + 1), 0]))):
        # deep nodes weigh more: a wrong type in a leaf is what real backends send; a wrong top level is rare
        path = draw(st.sampled_from([p for p in _paths(value) for _ in range(max(1, len(p)))]))
        op = draw(st.sampled_from(MUTATIONS))
        old = value
        for p in path:
            old = old[p]
        if op == "junk":
            new = draw(junk())
        elif op == "wrap_in_list":
            new = [old]
        elif op == "as_string":
            new = old if isinstance(old, str) and not old else json.dumps(old) if not isinstance(old, str) else 7
        elif op == "null":
            new = None
        elif op == "weird_number":
            new = draw(st.sampled_from(WEIRD_NUMBERS))
        elif op == "empty":
            new = type(old)() if isinstance(old, (dict, list, str)) else 0
        elif op == "object":
            new = {"value": old}
        else:  # delete
            new = _DELETE
        if not path:
            value = None if new is _DELETE else new
            continue
        parent = value
        for p in path[:-1]:
            parent = parent[p]
        if new is _DELETE:
            del parent[path[-1]]
        else:
            parent[path[-1]] = new
    return value


_DELETE = object()


def one_in(n: int) -> st.SearchStrategy[bool]:
    """True about one time in ``n`` (a middle value: Hypothesis favours the ends of a range), shrinking to False."""
    return st.integers(0, n - 1).map(lambda i: i == n // 2)


def wrong(good: st.SearchStrategy[Any], odds: int = 7) -> st.SearchStrategy[Any]:
    """``good`` most of the time; one time in ``odds + 1`` a value of the wrong type (shrinks to ``good``)."""
    return st.one_of(*[good] * odds, st.sampled_from(WEIRD_NUMBERS), junk(4))


@st.composite
def split_text(draw: Any, text: str, max_parts: int = 3) -> list[str]:
    """``text`` cut into 1..max_parts non-empty pieces (or [text] when it is too short)."""
    if len(text) < 2:
        return [text]
    cuts = draw(st.lists(st.integers(1, len(text) - 1), max_size=max_parts - 1, unique=True))
    bounds = [0, *sorted(cuts), len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


TEXT = st.one_of(st.sampled_from(["Hello", "héllo wörld", "日本語のテキスト", "emoji 🙂👍", " ", "\n", "a\u0000b"]),
                 st.text(min_size=1, max_size=12))
TOOL_NAMES = st.sampled_from(["Read", "Bash", "get_weather", "mcp__srv__tool", "x"])
TOOL_IDS = st.sampled_from(["call_1", "call_2", "toolu_01", "a", "call 3!", "fc-9f8e"])
ARG_VALUES = st.one_of(st.text(max_size=6), st.integers(-5, 5), st.booleans(), st.none(),
                       st.lists(st.integers(0, 3), max_size=2), st.just("日本🙂"))
TOOL_ARGS = st.dictionaries(st.sampled_from(["path", "q", "n", "deep", "é"]), ARG_VALUES, max_size=3)
COUNT = wrong(st.integers(0, 5000), 4)
USAGE_OPENAI = wrong(st.fixed_dictionaries(
    {"prompt_tokens": COUNT, "completion_tokens": COUNT},
    optional={"total_tokens": COUNT, "prompt_tokens_details": wrong(st.fixed_dictionaries({"cached_tokens": COUNT})),
              "prompt_cache_hit_tokens": COUNT}))
FINISH_REASONS = wrong(st.sampled_from(["stop", "length", "tool_calls", "content_filter", "function_call", "eos",
                                        None, "weird_reason"]))

# ---- OpenAI chat.completion.chunk streams ---------------------------------------------------------------


def chunk(delta: dict | None = None, finish: Any = None, usage: Any = None, choices: bool = True,
          **choice_extra: Any) -> dict:
    out: dict[str, Any] = {"id": "chatcmpl-fuzz", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    out["choices"] = [{"index": 0, "delta": delta or {}, "finish_reason": finish, **choice_extra}] if choices else []
    if usage is not None:
        out["usage"] = usage
    return out


SEGMENTS = ["text", "reasoning", "think_tags", "refusal", "tool", "tool_whole", "tool_no_index", "tool_dict_args",
            "tool_legacy", "tool_parallel_interleaved", "tool_id_then_name"]


@st.composite
def openai_chunk_script(draw: Any) -> list[Any]:
    """A plausible chunk sequence (text, reasoning, <think> tags, tool calls in every style backends use, a
    finish_reason, usage), then up to four sequence-level faults: a chunk mutated, dropped, duplicated, swapped,
    or a junk chunk inserted."""
    chunks: list[Any] = []
    if draw(st.booleans()):
        chunks.append(chunk({"role": "assistant", "content": ""}))
    tool_index = 0
    for seg in draw(st.lists(st.sampled_from(SEGMENTS), max_size=4)):
        if seg == "text":
            chunks += [chunk({"content": t}) for t in draw(split_text(draw(TEXT)))]
        elif seg == "reasoning":
            key = draw(st.sampled_from(["reasoning_content", "reasoning"]))
            chunks += [chunk({key: t}) for t in draw(split_text(draw(TEXT)))]
        elif seg == "think_tags":
            text = draw(st.sampled_from(["", " ", "\n"])) + "<think>" + draw(TEXT) + "</think>" + draw(
                st.sampled_from(["", "\n\n"])) + draw(TEXT)
            chunks += [chunk({"content": t}) for t in draw(split_text(text, 5))]
        elif seg == "refusal":
            chunks.append(chunk({"refusal": draw(TEXT)}))
        elif seg == "tool_legacy":
            args = json.dumps(draw(TOOL_ARGS), ensure_ascii=False)
            chunks.append(chunk({"function_call": {"name": draw(TOOL_NAMES), "arguments": ""}}))
            chunks += [chunk({"function_call": {"arguments": a}}) for a in draw(split_text(args))]
        elif seg == "tool_parallel_interleaved":
            a0, a1 = (json.dumps(draw(TOOL_ARGS)) for _ in range(2))
            chunks.append(chunk({"tool_calls": [{"index": tool_index, "id": "call_p0", "type": "function",
                                                 "function": {"name": "Read", "arguments": a0[:1]}}]}))
            chunks.append(chunk({"tool_calls": [{"index": tool_index + 1, "id": "call_p1", "type": "function",
                                                 "function": {"name": "Bash", "arguments": a1}}]}))
            chunks.append(chunk({"tool_calls": [{"index": tool_index, "function": {"arguments": a0[1:]}}]}))
            tool_index += 2
        else:
            name, call_id, args_obj = draw(wrong(TOOL_NAMES)), draw(wrong(TOOL_IDS)), draw(TOOL_ARGS)
            args = json.dumps(args_obj, ensure_ascii=False)
            if seg == "tool":
                chunks.append(chunk({"tool_calls": [{"index": tool_index, "id": call_id, "type": "function",
                                                     "function": {"name": name, "arguments": ""}}]}))
                chunks += [chunk({"tool_calls": [{"index": tool_index, "function": {"arguments": a}}]})
                           for a in draw(split_text(args, 4))]
            elif seg == "tool_id_then_name":
                chunks.append(chunk({"tool_calls": [{"index": tool_index, "id": call_id, "type": "function",
                                                     "function": {"arguments": ""}}]}))
                chunks.append(chunk({"tool_calls": [{"index": tool_index, "function": {"name": name}}]}))
                chunks.append(chunk({"tool_calls": [{"index": tool_index, "function": {"arguments": args}}]}))
            elif seg == "tool_whole":
                chunks.append(chunk({"tool_calls": [{"index": tool_index, "id": call_id, "type": "function",
                                                     "function": {"name": name, "arguments": args}}]}))
            elif seg == "tool_no_index":  # Gemini
                chunks.append(chunk({"tool_calls": [{"id": call_id, "type": "function",
                                                     "function": {"name": name, "arguments": args}}]}))
            else:  # tool_dict_args: arguments as an object, not a string
                chunks.append(chunk({"tool_calls": [{"index": tool_index, "id": call_id, "type": "function",
                                                     "function": {"name": name, "arguments": args_obj}}]}))
            tool_index += 1
    if draw(one_in(4)):  # one field of one call of the wrong type
        calls = [c for ch in chunks if isinstance(ch, dict) for c in ch["choices"][0]["delta"].get("tool_calls", [])]
        if calls:
            call = draw(st.sampled_from(calls))
            field = draw(st.sampled_from(["index", "id", "type", "function", "name", "arguments"]))
            target = call["function"] if field in ("name", "arguments") else call
            target[field] = draw(st.one_of(st.sampled_from(WEIRD_NUMBERS), junk(4), st.just(["x"])))
    finish = draw(FINISH_REASONS)
    if finish is not None:
        extra = draw(st.sampled_from([{}, {"stop_reason": "STOP"}, {"matched_stop": "STOP"}]))
        chunks.append(chunk({}, finish, **extra))
    if draw(st.booleans()):
        chunks.append(chunk(None, usage=draw(USAGE_OPENAI), choices=False))
    return draw(sequence_faults(chunks, mutated(st.just(chunk({"content": "x"})))))


@st.composite
def sequence_faults(draw: Any, items: list[Any], junk_item: st.SearchStrategy[Any]) -> list[Any]:
    items = copy.deepcopy(items)
    for _ in range(draw(st.sampled_from([0, 0, 1, 2, 3, 4]))):
        op = draw(st.sampled_from(["mutate", "mutate", "drop", "duplicate", "swap", "insert"]))
        if op == "insert" or not items:
            items.insert(draw(st.integers(0, len(items))), draw(st.one_of(junk_item, junk())))
            continue
        i = draw(st.integers(0, len(items) - 1))
        if op == "mutate":
            items[i] = draw(mutated(st.just(items[i]), 2))
        elif op == "drop":
            del items[i]
        elif op == "duplicate":
            items.insert(i, copy.deepcopy(items[i]))
        elif i + 1 < len(items):
            items[i], items[i + 1] = items[i + 1], items[i]
    return items


# ---- OpenAI chat.completion (JSON) ----------------------------------------------------------------------

@st.composite
def openai_completion(draw: Any) -> dict:
    message: dict[str, Any] = {"role": "assistant",
                               "content": draw(wrong(st.one_of(TEXT, st.none(), st.just("<think>why</think>\n\nA"),
                                                               st.lists(st.fixed_dictionaries(
                                                                   {"type": st.just("text"), "text": TEXT}),
                                                                   max_size=2))))}
    if draw(st.booleans()):
        message[draw(st.sampled_from(["reasoning_content", "reasoning"]))] = draw(wrong(TEXT))
    if draw(one_in(5)):
        message["refusal"] = draw(wrong(TEXT))
    calls = []
    for _ in range(draw(st.integers(0, 2))):
        args = draw(TOOL_ARGS)
        arguments = st.sampled_from([json.dumps(args), json.dumps(args)[:-1], args, [args], 5])
        calls.append(draw(wrong(st.fixed_dictionaries({"id": wrong(TOOL_IDS), "type": st.just("function"),
                                                       "function": wrong(st.fixed_dictionaries(
                                                           {"name": wrong(TOOL_NAMES), "arguments": arguments}))}))))
    if calls:
        message["tool_calls"] = draw(wrong(st.just(calls)))
    if draw(one_in(6)):
        message["function_call"] = draw(wrong(st.fixed_dictionaries(
            {"name": wrong(TOOL_NAMES), "arguments": st.just(json.dumps(draw(TOOL_ARGS)))})))
    choice = {"index": 0, "message": draw(wrong(st.just(message), 12)), "logprobs": None,
              "finish_reason": draw(FINISH_REASONS)}
    choice.update(draw(st.sampled_from([{}, {"stop_reason": "STOP"}, {"matched_stop": "STOP"}])))
    resp: dict[str, Any] = {"id": draw(st.sampled_from(["chatcmpl-abc", "", "id with spaces", "日本"])),
                            "object": "chat.completion", "created": 1, "model": "m", "choices": [choice]}
    if draw(st.booleans()):
        resp["usage"] = draw(USAGE_OPENAI)
    elif draw(one_in(4)):
        choice["usage"] = draw(USAGE_OPENAI)  # Moonshot
    return resp


def openai_completion_or_junk() -> st.SearchStrategy[Any]:
    """A completion with (often) some fields of the wrong type, or that and a few random mutations, or junk."""
    return st.one_of(openai_completion(), mutated(openai_completion(), 4), junk())


# ---- Anthropic messages and their streams ---------------------------------------------------------------

STOP_REASONS = wrong(st.sampled_from(["end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn",
                                      "refusal", "model_context_window_exceeded", None, "weird"]))
USAGE_ANTHROPIC = wrong(st.fixed_dictionaries(
    {"input_tokens": COUNT, "output_tokens": COUNT},
    optional={"cache_read_input_tokens": COUNT, "cache_creation_input_tokens": COUNT}))
JSON_TOOL = "json_response"


@st.composite
def anthropic_block(draw: Any, bad: bool = True) -> dict:
    """A content block; with ``bad``, its fields are sometimes of the wrong type."""
    w = wrong if bad else (lambda good, odds=7: good)
    kind = draw(st.sampled_from(["text", "thinking", "tool_use", "json_tool", "redacted_thinking",
                                 "server_tool_use"]))
    if kind == "text":
        return {"type": "text", "text": draw(w(TEXT, 12))}
    if kind == "thinking":
        return {"type": "thinking", "thinking": draw(w(TEXT, 12)), "signature": "sig"}
    if kind == "redacted_thinking":
        return {"type": "redacted_thinking", "data": "abc"}
    if kind == "server_tool_use":
        return {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "q"}}
    if kind == "json_tool":
        value = draw(w(st.one_of(TOOL_ARGS, st.fixed_dictionaries({"value": ARG_VALUES}))))
        return {"type": "tool_use", "id": "toolu_json", "name": JSON_TOOL, "input": value}
    return {"type": "tool_use", "id": draw(w(st.sampled_from(["toolu_01", "toolu_02"]))),
            "name": draw(w(TOOL_NAMES)), "input": draw(w(TOOL_ARGS))}


@st.composite
def anthropic_message(draw: Any) -> dict:
    return {"id": draw(st.sampled_from(["msg_01", "", "msg with space"])), "type": "message", "role": "assistant",
            "model": "claude-x", "content": draw(st.lists(anthropic_block(), max_size=3)),
            "stop_reason": draw(STOP_REASONS), "stop_sequence": None, "usage": draw(USAGE_ANTHROPIC)}


def anthropic_message_or_junk() -> st.SearchStrategy[Any]:
    return st.one_of(anthropic_message(), mutated(anthropic_message(), 4), junk())


Ev = tuple  # (event name or None, data)


def _ev(data: dict) -> tuple[str, dict]:
    return (data["type"], data)


@st.composite
def anthropic_event_script(draw: Any) -> list[tuple[str | None, Any]]:
    """A well-formed Anthropic stream (message_start, blocks with their deltas, message_delta, message_stop, pings
    here and there, sometimes an error event), then up to four faults: an event mutated (its data or its name),
    dropped, duplicated, swapped, a junk event inserted; or the tail cut off."""
    # In one stream in three, fields of the wrong type here and there (the rest are faults of the sequence).
    w = wrong if draw(one_in(3)) else (lambda good, odds=7: good)
    events: list[tuple[str | None, Any]] = [_ev({"type": "message_start", "message": {
        "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-x", "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": draw(USAGE_ANTHROPIC)}})]
    if draw(st.booleans()):
        events.append(_ev({"type": "ping"}))
    for i, block in enumerate(draw(st.lists(anthropic_block(bad=False), max_size=3))):
        if block["type"] == "text":
            start = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": t} for t in draw(split_text(block["text"]))]
        elif block["type"] == "thinking":
            start = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [{"type": "thinking_delta", "thinking": t} for t in draw(split_text(block["thinking"]))]
            deltas.append({"type": "signature_delta", "signature": "sig"})
        elif block["type"] in ("tool_use", "server_tool_use"):
            start = {**block, "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": t}
                      for t in draw(split_text(json.dumps(block["input"], ensure_ascii=False), 4))]
        else:
            start, deltas = block, []
        index = w(st.just(i), 12)
        if start.get("type") == "tool_use":
            start = {**start, "id": draw(w(st.just(start["id"]))), "name": draw(w(st.just(start["name"])))}
        events.append(_ev({"type": "content_block_start", "index": draw(index), "content_block": start}))
        for d in deltas:
            field = next(k for k in d if k != "type")
            d[field] = draw(w(st.just(d[field]), 12))
            events.append(_ev({"type": "content_block_delta", "index": draw(index), "delta": d}))
        events.append(_ev({"type": "content_block_stop", "index": draw(index)}))
    if draw(one_in(6)):
        events.append(_ev({"type": "error", "error": {"type": draw(w(st.sampled_from(
            ["overloaded_error", "api_error"]))), "message": draw(w(st.just("Overloaded")))}}))
    stop = w(st.sampled_from(["end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal"]))
    events.append(_ev({"type": "message_delta", "delta": {"stop_reason": draw(stop), "stop_sequence": None},
                       "usage": {"output_tokens": draw(st.integers(0, 500))}}))
    events.append(_ev({"type": "message_stop"}))
    if draw(one_in(5)):
        events = events[:draw(st.integers(0, len(events) - 1))]
    for _ in range(draw(st.sampled_from([0, 0, 1, 2, 3, 4]))):
        op = draw(st.sampled_from(["mutate", "mutate", "rename", "drop", "duplicate", "swap", "insert"]))
        if op == "insert" or not events:
            events.insert(draw(st.integers(0, len(events))),
                          (draw(st.one_of(st.none(), st.sampled_from(EVENT_NAMES))), draw(junk())))
            continue
        i = draw(st.integers(0, len(events) - 1))
        name, data = events[i]
        if op == "mutate":
            events[i] = (name, draw(mutated(st.just(data), 2)))
        elif op == "rename":
            events[i] = (draw(st.one_of(st.none(), st.sampled_from(EVENT_NAMES))), data)
        elif op == "drop":
            del events[i]
        elif op == "duplicate":
            events.insert(i, copy.deepcopy(events[i]))
        elif i + 1 < len(events):
            events[i], events[i + 1] = events[i + 1], events[i]
    return events


EVENT_NAMES = ["message_start", "content_block_start", "content_block_delta", "content_block_stop", "message_delta",
               "message_stop", "ping", "error", "completion", "weird"]

# ---- SSE framing ------------------------------------------------------------------------------------------

EOLS = st.sampled_from(["\n", "\r\n"])
SSE_DATA_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=8)


@st.composite
def sse_event_list(draw: Any) -> list[tuple[str | None, str]]:
    """Events as (event name or None, data): JSON objects with multibyte text on one line, "[DONE]", and data
    of several lines (lines that are not JSON objects or arrays: a line that is one is taken as a whole event
    by the parser's missing-blank-line tolerance)."""
    one_line = st.one_of(
        st.builds(lambda v: json.dumps(v, ensure_ascii=False), st.dictionaries(st.sampled_from(FIELD_NAMES), st.one_of(
            TEXT, st.integers(), st.none()), max_size=3)),
        st.just("[DONE]"), st.just('{"type":"ping"}'))
    multi = st.lists(SSE_DATA_TEXT.filter(lambda s: not s.lstrip().startswith(("{", "[")) and s.strip() != ""),
                     min_size=2, max_size=3).map("\n".join)
    name = st.one_of(st.none(), st.sampled_from(EVENT_NAMES), st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), min_size=1, max_size=6))
    return draw(st.lists(st.tuples(name, st.one_of(one_line, multi)), max_size=6))


@st.composite
def sse_encode(draw: Any, events: list[tuple[str | None, str]], terminate_last: bool | None = None) -> bytes:
    """``events`` as SSE bytes: LF or CRLF per line, ``data:`` with or without its space, comments and ``id:``/
    ``retry:`` lines here and there, sometimes no blank line after the last event."""
    lines: list[str] = []
    if draw(st.booleans()):
        lines += [": " + draw(st.sampled_from(["ping", "keep-alive", "OPENROUTER PROCESSING"])), ""]
    for i, (name, data) in enumerate(events):
        if draw(one_in(4)):
            lines.append(draw(st.sampled_from([":", ": ping", ":comment: with colon", "id: 7", "retry: 1000"])))
        if name is not None:
            lines.append("event:" + (" " if name.startswith(" ") else draw(st.sampled_from(["", " "]))) + name)
        for dline in data.split("\n"):
            space = " " if dline.startswith(" ") else draw(st.sampled_from(["", " "]))
            lines.append("data:" + space + dline)
        last = i == len(events) - 1
        if not last or (terminate_last if terminate_last is not None else draw(st.booleans())):
            lines.append("")
    out = ""
    for j, line in enumerate(lines):
        out += line
        if j < len(lines) - 1 or draw(st.booleans()):
            out += draw(EOLS)
    return out.encode()


@st.composite
def byte_pieces(draw: Any, raw: bytes, max_cuts: int = 12) -> list[bytes]:
    """``raw`` cut at random places (inside multibyte characters, between CR and LF...)."""
    if len(raw) < 2:
        return [raw]
    cuts = sorted(draw(st.lists(st.integers(1, len(raw) - 1), max_size=max_cuts, unique=True)))
    bounds = [0, *cuts, len(raw)]
    return [raw[a:b] for a, b in itertools.pairwise(bounds)]
