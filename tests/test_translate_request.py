"""Anthropic request → OpenAI request: pure translator tests (protocols.md A, I.1; issue #2)."""

from __future__ import annotations

import json
import re

import pytest

from claude_proxy import (
    Config,
    ProxyError,
    anthropic_to_openai_request,
    normalize_backend_url,
    openai_tool_names,
    sanitize_schema,
)


def translate(body: dict, model: str = "gpt-4.1", **kw) -> dict:
    body = {"model": "claude-sonnet-4-5", "max_tokens": 1024, **body}
    return anthropic_to_openai_request(body, model, **kw)


def test_system_string_and_blocks_become_one_system_message():
    out = translate({"system": [{"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}},
                                {"type": "text", "text": "B"}],
                     "messages": [{"role": "user", "content": "hi"}]})
    assert out["messages"][0] == {"role": "system", "content": "A\n\nB"}
    assert translate({"system": "S", "messages": [{"role": "user", "content": "hi"}]})["messages"][0] == {
        "role": "system", "content": "S"}


def test_mid_conversation_system_turns_are_kept_in_place():
    out = translate({"messages": [{"role": "user", "content": "hi"},
                                  {"role": "system", "content": [{"type": "text", "text": "Agent types: x"}]},
                                  {"role": "assistant", "content": "ok"},
                                  {"role": "system", "content": "# Environment"}]})
    assert [m["role"] for m in out["messages"]] == ["user", "system", "assistant", "system"]
    assert out["messages"][1]["content"] == "Agent types: x"
    assert out["messages"][3]["content"] == "# Environment"


def test_text_images_and_documents_become_parts():
    out = translate({"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"},
         "title": "spec.pdf"},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain doc"}},
        {"type": "text", "text": "What is this?", "cache_control": {"type": "ephemeral"}}]}]})
    parts = out["messages"][0]["content"]
    assert parts[0] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}}
    assert parts[1] == {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}}
    assert parts[2] == {"type": "file", "file": {"filename": "spec.pdf", "file_data": "data:application/pdf;base64,JVBER"}}
    assert parts[3] == {"type": "text", "text": "plain doc"}
    assert parts[4] == {"type": "text", "text": "What is this?"}


def test_only_text_parts_collapse_to_a_string():
    out = translate({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                              {"type": "text", "text": "b"}]}]})
    assert out["messages"][0]["content"] == "a\n\nb"


def tool_loop_history() -> list[dict]:
    return [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "I should call both.", "signature": "sig"},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_A", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_B", "name": "get_time", "input": {}, "cache_control": {"type": "ephemeral"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_A", "content": "18C"},
            {"type": "tool_result", "tool_use_id": "toolu_B", "is_error": True, "content": [
                {"type": "text", "text": "clock broken"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "IMG"}}]},
            {"type": "text", "text": "And tomorrow?"}]},
    ]


def test_tool_use_and_results_map_to_tool_calls_and_tool_messages_in_order():
    msgs = translate({"messages": tool_loop_history()})["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "tool", "tool", "user"]
    asst = msgs[1]
    assert asst["content"] == "Checking."
    assert asst["reasoning_content"] == "I should call both."  # DeepSeek needs it back on tool-call turns
    assert [c["id"] for c in asst["tool_calls"]] == ["toolu_A", "toolu_B"]
    assert json.loads(asst["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
    assert asst["tool_calls"][1]["function"]["arguments"] == "{}"
    assert msgs[2] == {"role": "tool", "tool_call_id": "toolu_A", "content": "18C"}
    assert msgs[3]["tool_call_id"] == "toolu_B"
    assert msgs[3]["content"].startswith("Error: clock broken")
    # the image from the tool result travels in the user message after all tool messages, then the text
    assert msgs[4]["content"][0] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,IMG"}}
    assert msgs[4]["content"][-1] == {"type": "text", "text": "And tomorrow?"}


def test_thinking_only_history_is_not_sent_as_content_and_redacted_is_dropped():
    msgs = translate({"messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "xxx"},
                                          {"type": "text", "text": "answer"}]},
        {"role": "user", "content": "next"}]})["messages"]
    assert msgs[1] == {"role": "assistant", "content": "answer"}


def test_tool_reference_blocks_render_as_text():
    msgs = translate({"messages": [
        {"role": "user", "content": "find tools"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "ToolSearch",
                                           "input": {"query": "select:WebFetch"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": [
                {"type": "tool_reference", "tool_name": "WebFetch"},
                {"type": "tool_reference", "tool_name": "NotebookEdit"}]},
            {"type": "text", "text": "Tool loaded.", "cache_control": {"type": "ephemeral"}}]}]})["messages"]
    assert msgs[2] == {"role": "tool", "tool_call_id": "toolu_1",
                       "content": "Tool loaded: WebFetch\nTool loaded: NotebookEdit"}
    assert msgs[3] == {"role": "user", "content": "Tool loaded."}


def test_missing_and_orphan_tool_results_keep_openai_pairing_valid():
    msgs = translate({"messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "a", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_zzz", "content": "stray"}]}]})[
        "messages"]
    assert msgs[2] == {"role": "tool", "tool_call_id": "toolu_1", "content": "(no result)"}
    assert msgs[3]["role"] == "user" and "stray" in msgs[3]["content"]


def test_tool_ids_are_sanitized_consistently():
    msgs = translate({"messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "functions.Bash:0", "name": "Bash",
                                           "input": {"command": "ls"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "functions.Bash:0", "content": "ok"}]}]})[
        "messages"]
    assert msgs[1]["tool_calls"][0]["id"] == msgs[2]["tool_call_id"] == "functions_Bash_0"


CLAUDE_CODE_READ_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "additionalProperties": False,
    "properties": {
        "file_path": {"type": "string", "description": "Absolute path", "title": "Path"},
        "offset": {"type": "integer", "exclusiveMinimum": 0, "maximum": 9007199254740991},
        "title": {"type": "string", "default": "x", "examples": ["a"]},
        "mode": {"const": "fast"},
        "maybe": {"type": ["string", "null"], "format": "uri"},
        "choice": {"oneOf": [{"$ref": "#/$defs/Opt"}, {"type": "integer"}]},
        "meta": {"type": "object", "propertyNames": {"pattern": "^x"}, "additionalProperties": {"type": "string"}},
    },
    "required": ["file_path", "ghost"],
    "$defs": {"Opt": {"type": "object", "properties": {"k": {"type": "string"}}, "additionalProperties": False}},
}


def test_schema_sanitizer_strips_what_gemini_rejects_and_keeps_property_names():
    out = sanitize_schema(CLAUDE_CODE_READ_SCHEMA)
    text = json.dumps(out)
    for bad in ("$schema", "additionalProperties", "exclusiveMinimum", "default", "examples", "propertyNames",
                "$defs", "$ref", "const", '"title": "Path"', "uri"):
        assert bad not in text, bad
    assert set(out["properties"]) == {"file_path", "offset", "title", "mode", "maybe", "choice", "meta"}
    assert out["properties"]["mode"] == {"enum": ["fast"], "type": "string"}
    assert out["properties"]["maybe"] == {"type": "string", "nullable": True}
    assert out["properties"]["choice"]["anyOf"][0] == {"type": "object", "properties": {"k": {"type": "string"}}}
    assert out["required"] == ["file_path"]  # a required name with no property is dropped, not kept dangling
    assert out["properties"]["offset"]["maximum"] == 9007199254740991


def test_tools_choice_and_server_tools():
    out = translate({"messages": [{"role": "user", "content": "hi"}], "tools": [
        {"name": "Read", "description": "Read a file", "input_schema": CLAUDE_CODE_READ_SCHEMA,
         "cache_control": {"type": "ephemeral"}, "strict": True},
        {"type": "code_execution_20250825", "name": "code_execution"},
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
        {"name": "NoSchema"}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True}})
    # code execution runs at Anthropic only; web search becomes a function the proxy runs (issue #11)
    assert [t["function"]["name"] for t in out["tools"]] == ["Read", "web_search", "NoSchema"]
    assert set(out["tools"][0]) == {"type", "function"}
    assert set(out["tools"][0]["function"]) == {"name", "description", "parameters"}
    assert out["tools"][2]["function"]["parameters"] == {"type": "object", "properties": {}}
    assert out["tool_choice"] == "required" and out["parallel_tool_calls"] is False
    for choice, expected in [({"type": "auto"}, "auto"), ({"type": "none"}, "none"),
                             ({"type": "tool", "name": "Read"}, {"type": "function", "function": {"name": "Read"}})]:
        got = translate({"messages": [{"role": "user", "content": "hi"}], "tools": [{"name": "Read"}],
                         "tool_choice": choice})
        assert got["tool_choice"] == expected
        assert "parallel_tool_calls" not in got


def test_only_server_tools_no_backend_can_run_means_no_tools_at_all():
    out = translate({"messages": [{"role": "user", "content": "hi"}], "tools": [
        {"type": "code_execution_20250825", "name": "code_execution"}, {"type": "web_fetch_20250910", "name": "web_fetch"}],
        "tool_choice": {"type": "auto"}})
    assert "tools" not in out and "tool_choice" not in out


def test_long_tool_names_are_shortened_and_reversible():
    long = "mcp__" + "very_long_server_name__" * 3 + "do.something"
    names = openai_tool_names({"tools": [{"name": long}, {"name": "Read"}]})
    short = names[long]
    assert len(short) <= 64 and names["Read"] == "Read"
    assert openai_tool_names({"tools": [{"name": "Read"}, {"name": long}]})[long] == short  # stable across turns


def test_sanitised_tool_names_never_collide_and_map_back_exactly():
    """Issue #9 defect 5: ``a.b`` and ``a_b`` both became ``a_b``."""
    schema = {"type": "object", "properties": {}}
    body = {"model": "m", "max_tokens": 10, "tools": [{"name": n, "input_schema": schema} for n in (
                "a.b", "a_b", "a b", "x" * 70, "x" * 69 + "y")],
            "tool_choice": {"type": "tool", "name": "a.b"},
            "messages": [{"role": "user", "content": "go"},
                         {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "a.b", "input": {}},
                                                           {"type": "tool_use", "id": "t2", "name": "a_b", "input": {}}]},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "1"},
                                                      {"type": "tool_result", "tool_use_id": "t2", "content": "2"}]}]}
    out = anthropic_to_openai_request(body, "gpt-4o")
    sent = [t["function"]["name"] for t in out["tools"]]
    assert len(set(sent)) == 5 and all(re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", n) for n in sent)
    assert sent[1] == "a_b"  # a valid name is never changed
    calls = [c["function"]["name"] for c in out["messages"][1]["tool_calls"]]
    assert calls == sent[:2] and out["tool_choice"]["function"]["name"] == sent[0]
    back = {v: k for k, v in openai_tool_names(body).items()}
    assert [back[n] for n in sent] == ["a.b", "a_b", "a b", "x" * 70, "x" * 69 + "y"]


def test_unforwarded_fields_and_sampling():
    out = translate({"messages": [{"role": "user", "content": "hi"}], "temperature": 0.2, "top_p": 0.9, "top_k": 5,
                     "metadata": {"user_id": "u"}, "thinking": {"type": "enabled", "budget_tokens": 2048},
                     "output_config": {"effort": "high"}, "context_management": {"edits": []}, "container": "c",
                     "mcp_servers": [], "service_tier": "auto", "stop_sequences": ["a", "", "b", "c", "d", "e"],
                     "some_future_field": 1, "stream": True})
    assert set(out) == {"model", "messages", "max_tokens", "temperature", "top_p", "stop", "stream",
                        "stream_options"}
    assert out["stop"] == ["a", "b", "c", "d"]
    assert out["stream_options"] == {"include_usage": True}


def test_max_tokens_cap_and_reasoning_models():
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 64000, "temperature": 0.5}
    assert translate(body, max_tokens_cap=8192)["max_tokens"] == 8192
    o = translate(body, model="o4-mini")
    assert o["max_completion_tokens"] == 64000 and "max_tokens" not in o and "temperature" not in o
    assert translate({**body, "max_tokens": 0})["max_tokens"] == 1


@pytest.mark.parametrize("thinking,effort,mode,expected", [
    ({"type": "enabled", "budget_tokens": 2048}, None, "auto", "low"),
    ({"type": "enabled", "budget_tokens": 31999}, None, "auto", "high"),
    ({"type": "adaptive"}, "medium", "auto", "medium"),
    ({"type": "adaptive"}, "max", "auto", "high"),
    ({"type": "disabled"}, None, "auto", None),
    ({"type": "adaptive"}, "high", "off", None),
    (None, None, "low", "low"),
])
def test_reasoning_effort_mapping(thinking, effort, mode, expected):
    body = {"messages": [{"role": "user", "content": "hi"}]}
    if thinking:
        body["thinking"] = thinking
    if effort:
        body["output_config"] = {"effort": effort}
    assert translate(body, reasoning_effort=mode).get("reasoning_effort") == expected


@pytest.mark.parametrize("body,fragment", [
    ({"max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}, "model"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
    ({"model": "m", "max_tokens": "10", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
    ({"model": "m", "max_tokens": 10}, "messages"),
    ({"model": "m", "max_tokens": 10, "messages": "hi"}, "messages"),
    ({"model": "m", "max_tokens": 10, "messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
    ({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
    ({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": [{"type": "hologram"}]}]},
     "hologram"),
    ({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}], "temperature": 7}, "temperature"),
    ({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}], "tools": "x"}, "tools"),
    ({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}],
      "tool_choice": {"type": "sometimes"}}, "tool_choice"),
    ({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "ftp"}}]}]}, "source.type"),
])
def test_bad_input_is_a_400_naming_the_field(body, fragment):
    with pytest.raises(ProxyError) as info:
        anthropic_to_openai_request(body, "m")
    assert info.value.status == 400 and info.value.kind == "invalid_request_error"
    assert fragment in info.value.message


def test_model_mapping_and_url_normalisation():
    c = Config(url="api.deepseek.com/v1/", model="main", haiku_model="small")
    assert c.url == "https://api.deepseek.com/v1"
    assert c.routing.backend_model("claude-haiku-4-5-20251001") == "small"
    assert c.routing.backend_model("claude-opus-4-8") == "main"
    assert c.routing.backend_model("claude-sonnet-5") == "main"
    assert c.routing.backend_model("deepseek-reasoner") == "deepseek-reasoner"
    assert Config().routing.backend_model("claude-sonnet-4-5") == "claude-sonnet-4-5"
    assert normalize_backend_url("localhost:11434/v1") == "http://localhost:11434/v1"
    assert normalize_backend_url("127.0.0.1:8000/v1/chat/completions") == "http://127.0.0.1:8000/v1"
    assert normalize_backend_url("[::1]:8000/v1") == "http://[::1]:8000/v1"
    assert normalize_backend_url("http://gpu-box:8000/v1") == "http://gpu-box:8000/v1"
    with pytest.raises(ValueError):
        normalize_backend_url("ftp://x")


def test_names_made_to_collide_on_purpose_still_end_unique_and_fast():
    """Every hash-suffixed form of ``a.b`` already taken: the proxy must not loop (it once did, forever)."""
    import hashlib
    digest = hashlib.sha256(b"a.b").hexdigest()
    names = ["a_b"] + [f"a_b_{digest[:n]}" for n in range(8, 64)] + ["a_b_" + digest[:8] + "_1", "a.b"]
    out = openai_tool_names({"tools": [{"name": n} for n in names]})
    assert len(set(out.values())) == len(names) and all(len(v) <= 64 for v in out.values())


def test_schemas_that_only_look_odd_are_still_accepted():
    """Draft-3 style ``"required": true`` inside a property: dropped, as before, not a 400 for the request."""
    schema = {"type": "object", "properties": {"a": {"type": "string", "required": True}, "b": {"type": ["string", 1]}}}
    out = translate({"messages": [{"role": "user", "content": "hi"}], "tools": [{"name": "t", "input_schema": schema}]})
    assert "required" not in out["tools"][0]["function"]["parameters"]["properties"]["a"]
