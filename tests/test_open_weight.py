"""Claude Code on the servers people actually run (issue #10): chat templates that take a system message only
first. Claude Code sends ``role: "system"`` turns inside ``messages``; a Qwen 3 template refuses them (400 on vLLM,
SGLang and current llama.cpp; HTTP 500 on Ollama). The fake backend answers the same way for ``*qwen3*`` models."""

from __future__ import annotations

import re

import anthropic
import pytest
from fake_openai import TEXT_CALL_PREAMBLE, TEXT_CALLS
from hypothesis import given, settings
from hypothesis import strategies as st

import claude_proxy as cp

TURNS = [{"role": "user", "content": "read the file"},
         {"role": "assistant", "content": "Reading it."},
         {"role": "system", "content": "The user switched to plan mode."},
         {"role": "user", "content": [{"type": "text", "text": "now plan"}]},
         {"role": "system", "content": "Token budget: 1000 left."}]


def ask(client: anthropic.Anthropic, stream: bool, model: str = "claude-sonnet-5") -> str:
    kw = {"model": model, "max_tokens": 100, "system": "You are Claude Code.", "messages": TURNS}
    if stream:
        with client.messages.stream(**kw) as s:
            return s.get_final_message().content[0].text
    return client.messages.create(**kw).content[0].text


def client(proxy) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proxy.url, api_key="k", max_retries=0, timeout=20)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", ["Qwen/Qwen3-32B", "qwen3-500:32b"])
def test_refused_system_turns_are_folded_into_user_turns_and_remembered(make_proxy, backend, model, stream):
    proxy = make_proxy(model=model, retries=2)
    assert ask(client(proxy), stream).startswith("Hello")
    refused, folded = backend.requests[0], backend.requests[1]
    assert len(backend.requests) == 2  # the 500 was not first retried as a server failure
    assert [m["role"] for m in refused["messages"]] == ["system", "user", "assistant", "system", "user", "system"]
    assert [m["role"] for m in folded["messages"]] == ["system", "user", "assistant", "user"]
    assert folded["messages"][0] == refused["messages"][0]  # the leading system prompt, and the prefix cache, kept
    last = folded["messages"][-1]["content"]
    assert last.startswith("<system-reminder>\nThe user switched to plan mode.\n</system-reminder>\n\nnow plan")
    assert last.endswith("<system-reminder>\nToken budget: 1000 left.\n</system-reminder>")
    ask(client(proxy), stream)
    assert len(backend.requests) == 3  # remembered: straight to the folded form
    assert [m["role"] for m in backend.requests[-1]["messages"]] == ["system", "user", "assistant", "user"]


def test_other_backends_keep_system_turns_where_they_stand(make_proxy, backend):
    ask(client(make_proxy()), stream=False)
    assert [m["role"] for m in backend.requests[-1]["messages"]] == [
        "system", "user", "assistant", "system", "user", "system"]


def test_system_turns_chosen_up_front(make_proxy, backend):
    ask(client(make_proxy(model="fake-model", system_turns="fold")), stream=False)
    assert len(backend.requests) == 1 and [m["role"] for m in backend.requests[-1]["messages"]] == [
        "system", "user", "assistant", "user"]
    with pytest.raises(anthropic.BadRequestError, match="System message must be at the beginning"):
        ask(client(make_proxy(model="Qwen/Qwen3-32B", system_turns="keep")), stream=False)


def test_a_system_turn_after_an_assistant_turn_at_the_end_becomes_the_last_user_turn():
    payload = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                            {"role": "assistant", "content": "a"}, {"role": "system", "content": "late"}]}
    out = cp.fold_system_turns(payload)["messages"]
    assert out[-1] == {"role": "user", "content": "<system-reminder>\nlate\n</system-reminder>"}
    assert [m["role"] for m in out] == ["system", "user", "assistant", "user"]


def test_system_turns_in_the_config_file(tmp_path):
    path = tmp_path / "proxy.toml"
    path.write_text("[[backends]]\nname = 'local'\nurl = 'localhost:8000/v1'\nsystem_turns = 'fold'\n")
    assert cp.Config(**cp.load_config_file(str(path))).routing.backends["local"].system_turns == "fold"
    path.write_text("[[backends]]\nname = 'local'\nurl = 'localhost:8000/v1'\nsystem_turns = 'merge'\n")
    with pytest.raises(cp.ConfigFileError, match="proxy.toml:4: system_turns: expected one of keep, fold"):
        cp.load_config_file(str(path))


# ---- provider rules: Mistral's tool-call ids, strict servers' message fields -------------------------------

LOOP = [{"role": "user", "content": "read it"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "The file first.", "signature": ""},
            {"type": "tool_use", "id": "toolu_01AbCdEfGhIjKlMnOp", "name": "Read", "input": {"path": "/x"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01AbCdEfGhIjKlMnOp",
                                      "content": "file body"}]}]
READ = [{"name": "Read", "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}}]


def loop(proxy, stream: bool = False) -> anthropic.types.Message:
    kw = {"model": "claude-sonnet-5", "max_tokens": 100, "messages": LOOP, "tools": READ}
    if stream:
        with client(proxy).messages.stream(**kw) as s:
            return s.get_final_message()
    return client(proxy).messages.create(**kw)


@pytest.mark.parametrize("stream", [False, True])
def test_mistral_tool_call_ids_are_made_nine_characters_on_refusal_and_remembered(make_proxy, backend, stream):
    proxy = make_proxy(model="mistral-large-latest")
    assert "file body" in loop(proxy, stream).content[0].text
    sent = backend.requests[1]["messages"]
    assert len(backend.requests) == 2 and sent[1]["tool_calls"][0]["id"] == sent[2]["tool_call_id"]
    assert re.fullmatch(r"[a-zA-Z0-9]{9}", sent[2]["tool_call_id"])
    loop(proxy, stream)
    assert len(backend.requests) == 3 and backend.requests[2]["messages"][2]["tool_call_id"] == sent[2]["tool_call_id"]


def test_mistral_api_gets_nine_character_ids_up_front():
    lessons = cp.known_lessons("https://api.mistral.ai/v1")
    assert lessons.nine_char_ids and not cp.known_lessons("https://api.openai.com/v1").nine_char_ids
    payload = lessons.apply({"model": "m", "messages": [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "r"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "abc123XYZ", "type": "function", "function": {}}]},
        {"role": "tool", "tool_call_id": "abc123XYZ", "content": "r"}]})
    ids = [payload["messages"][0]["tool_calls"][0]["id"], payload["messages"][1]["tool_call_id"]]
    assert ids[0] == ids[1] != "call_1" and re.fullmatch(r"[a-zA-Z0-9]{9}", ids[0])
    assert payload["messages"][3]["tool_call_id"] == "abc123XYZ"  # the backend's own ids survive the round trip


@pytest.mark.parametrize("stream", [False, True])
def test_message_fields_a_strict_server_refuses_are_left_out_and_remembered(make_proxy, backend, stream):
    proxy = make_proxy(model="local-strict-fields")
    assert "file body" in loop(proxy, stream).content[0].text
    refused, accepted = backend.requests[0]["messages"][1], backend.requests[1]["messages"][1]
    assert refused["reasoning_content"] == "The file first." and "reasoning_content" not in accepted
    loop(proxy, stream)
    assert len(backend.requests) == 3 and "reasoning_content" not in backend.requests[2]["messages"][1]


# ---- tool arguments that are not quite JSON --------------------------------------------------------------

@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", ["local-pyargs", "local-cumulative", "local-pyargs-cumulative"])
def test_arguments_as_python_dicts_or_repeated_in_every_chunk_still_run_the_tool(make_proxy, backend, model,
                                                                                 stream):
    kw = {"model": "claude-sonnet-5", "max_tokens": 100, "tools": READ, "messages": [
        {"role": "user", "content": 'TOOL_CALL:Read:{"path":"/etc/hosts","limit":null,"all":true}'}]}
    proxy = make_proxy(model=model)
    if stream:
        with client(proxy).messages.stream(**kw) as s:
            message = s.get_final_message()
    else:
        message = client(proxy).messages.create(**kw)
    assert message.stop_reason == "tool_use"
    assert message.content[-1].input == {"path": "/etc/hosts", "limit": None, "all": True}


# ---- context overflow becomes the error Claude Code recovers from ------------------------------------------

CLAUDE_CODE_READS = re.compile(r"prompt is too long[^0-9]*(\d+)\s*tokens?\s*>\s*(\d+)", re.IGNORECASE)


@pytest.mark.parametrize("server,numbers", [("openai", (140000, 131072)), ("vllm", (36000, 32768)),
                                            ("llamacpp", (40000, 32768)), ("gemini", (1200000, 1048576))])
@pytest.mark.parametrize("stream", [False, True])
def test_every_servers_overflow_is_anthropics_prompt_is_too_long(make_proxy, server, numbers, stream):
    proxy = make_proxy(model=f"overflow-{server}")
    kw = {"model": "claude-sonnet-5", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(anthropic.BadRequestError) as info:
        if stream:
            with client(proxy).messages.stream(**kw) as s:
                s.get_final_message()
        else:
            client(proxy).messages.create(**kw)
    assert info.value.status_code == 400 and info.value.body["error"]["type"] == "invalid_request_error"
    m = CLAUDE_CODE_READS.search(info.value.body["error"]["message"])
    assert m and (int(m.group(1)), int(m.group(2))) == numbers


def test_a_prompt_that_fits_with_too_large_a_max_tokens_is_still_retried_smaller():
    """vLLM's current wording is a max_tokens case, not an overflow."""
    text = ("'max_tokens' or 'max_completion_tokens' is too large: 5000. This model's maximum context length is "
            "32768 tokens and your request has 31000 input tokens (5000 > 32768 - 31000).")
    assert cp.context_overflow(text) is None and cp.max_tokens_limit_from_error(text, 5000) == 1768


def test_openai_clients_get_openais_context_length_exceeded(make_proxy, loop_thread):
    import openai
    from fake_anthropic import FakeAnthropic
    fake = FakeAnthropic(key="k")
    loop_thread.run(fake.start())
    try:
        proxy = make_proxy(backend="anthropic", url=f"127.0.0.1:{fake.port}", api_key="k", model="overflow-x")
        oclient = openai.OpenAI(base_url=proxy.url + "/v1", api_key="x", max_retries=0, timeout=10)
        with pytest.raises(openai.BadRequestError) as info:
            oclient.chat.completions.create(model="claude-x", messages=[{"role": "user", "content": "hi"}])
        assert info.value.code == "context_length_exceeded"
        assert "maximum context length is 200000 tokens. However, your messages resulted in 215000 tokens" in str(
            info.value)
    finally:
        loop_thread.run(fake.stop())


def test_an_overflow_without_numbers_gets_the_estimate_and_the_configured_window(make_proxy):
    body = {"model": "claude-sonnet-5", "max_tokens": 100, "messages": [{"role": "user", "content": "word " * 3000}]}
    with pytest.raises(anthropic.BadRequestError) as info:
        client(make_proxy(model="overflow-plain", context_window=2048)).messages.create(**body)
    m = CLAUDE_CODE_READS.search(info.value.body["error"]["message"])
    assert m and int(m.group(2)) == 2048 and int(m.group(1)) == cp.count_request_tokens(body)
    with pytest.raises(anthropic.BadRequestError) as info:  # no window known: no numbers, never made up
        client(make_proxy(model="overflow-plain")).messages.create(**body)
    message = info.value.body["error"]["message"]
    assert message.startswith("prompt is too long (") and not CLAUDE_CODE_READS.search(message)


def test_setup_claude_tells_claude_code_the_window(tmp_path):
    import json
    import subprocess
    import sys
    settings = tmp_path / "settings.json"
    out = subprocess.run([sys.executable, cp.__file__, "--context-window", "131072", "setup-claude", "--settings",
                          str(settings)], capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0, out.stderr
    assert json.loads(settings.read_text())["env"]["CLAUDE_CODE_AUTO_COMPACT_WINDOW"] == "131072"
    out = subprocess.run([sys.executable, cp.__file__, "--context-window", "32768", "setup-claude", "--settings",
                          str(settings)], capture_output=True, text=True, timeout=30, check=False)
    env = json.loads(settings.read_text())["env"]
    assert env["CLAUDE_CODE_AUTO_COMPACT_WINDOW"] == "100000" and env["CLAUDE_CODE_MAX_CONTEXT_TOKENS"] == "32768"
    assert "prompt is too long" in out.stdout
    out = subprocess.run([sys.executable, cp.__file__, "--context-window", "32768", "setup-claude", "--settings",
                          str(settings), "--claude-model", "qwen3-coder"], capture_output=True, text=True,
                         timeout=30, check=False)
    assert out.returncode == 0 and "prompt is too long" not in out.stdout  # Claude Code reads 32768 exactly


@pytest.mark.parametrize("model,window", [("overflow-plain-vllm", 4096), ("overflow-plain-llamacpp", 8192)])
def test_the_window_the_backend_reports_fills_an_overflow_without_numbers(make_proxy, backend, model, window):
    """vLLM lists max_model_len per model; llama.cpp reports n_ctx in /props. Asked once, on the overflow."""
    backend.n_ctx = 8192
    body = {"model": "claude-sonnet-5", "max_tokens": 100, "messages": [{"role": "user", "content": "word " * 3000}]}
    proxy = make_proxy(model=model)
    for _ in range(2):
        with pytest.raises(anthropic.BadRequestError) as info:
            client(proxy).messages.create(**body)
        m = CLAUDE_CODE_READS.search(info.value.body["error"]["message"])
        assert m and int(m.group(2)) == window


def test_lessons_leave_what_is_not_a_message_to_the_backend():
    """A pass-through client's malformed messages meet a remembered lesson: no exception, the backend says no."""
    lessons = cp.Lessons(fold_system_turns=True, nine_char_ids=True, dropped_fields=frozenset({"reasoning_content"}))
    out = lessons.apply({"model": "m", "messages": [5, {"role": "system", "content": "s"}, "x",
                                                    {"role": "assistant", "tool_calls": [3, {"id": "call_1"}]}]})
    assert out["messages"][0] == 5 and out["messages"][1] == "x" and out["messages"][2]["tool_calls"][0] == 3


def windows_listed(proxy) -> tuple[dict, dict]:
    """{id: window} as the Anthropic and the OpenAI front doors list them (through the official SDKs)."""
    import openai
    amodels = anthropic.Anthropic(base_url=proxy.url, api_key="k").models.list().data
    omodels = openai.OpenAI(base_url=proxy.url + "/v1", api_key="k").models.list().data
    return ({m.id: m.max_input_tokens for m in amodels},
            {m.id: (m.model_extra or {}).get("context_length") for m in omodels})


@pytest.mark.parametrize("model,window", [("overflow-plain-vllm", 4096), ("fake-model", 8192)])
def test_models_list_shows_the_window_the_backend_reports(make_proxy, backend, model, window):
    """vLLM's max_model_len for the listed model; llama.cpp's /props n_ctx for a model its list gives none."""
    backend.n_ctx = 8192
    anthropic_ids, openai_ids = windows_listed(make_proxy(model=model))
    assert anthropic_ids["claude-sonnet-4-5"] == anthropic_ids["claude-opus-4-1"] == window
    assert openai_ids["claude-sonnet-4-5"] == window
    assert anthropic_ids["overflow-plain-vllm"] == 4096  # as listed, whatever the mapping


def test_models_list_shows_the_configured_window_per_backend_and_route(make_proxy, backend, tmp_path):
    anthropic_ids, openai_ids = windows_listed(make_proxy(context_window=32768))
    assert anthropic_ids["claude-haiku-4-5"] == openai_ids["claude-haiku-4-5"] == 32768
    assert anthropic_ids["overflow-plain-vllm"] == 32768  # what is configured wins over what the server lists
    toml = tmp_path / "proxy.toml"
    toml.write_text(f'''
[[backends]]
name = "local"
url = "http://127.0.0.1:{backend.port}/v1"
context_window = 65536

[[routes]]
match = "*haiku*"
backend = "local"
model = "small-model"
context_window = 16384
''')
    config = cp.Config(**cp.load_config_file(str(toml)))
    local = config.routing.backends["local"]
    assert config.routing.window(local, "small-model") == 16384 and config.routing.window(local, "big") == 65536
    anthropic_ids, _ = windows_listed(make_proxy(model=None, **cp.load_config_file(str(toml))))
    assert anthropic_ids["claude-haiku-4-5"] == anthropic_ids["small-model"] == 16384
    assert anthropic_ids["fake-model"] == 65536  # listed by the backend: the backend's window


# ---- tool calls written as text (issue #10, part 3) --------------------------------------------------------


TOOLS = [{"name": "Read", "description": "Read a file", "input_schema": {
             "type": "object", "properties": {"file_path": {"type": "string"}, "limit": {"type": "integer"},
                                              "recursive": {"type": "boolean"}}, "required": ["file_path"]}},
         {"name": "Bash", "description": "Run a command", "input_schema": {
             "type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}]
TWO_CALLS = 'TOOL_CALL:Read:{"file_path":"/etc/hosts","limit":5,"recursive":false} TOOL_CALL:Bash:{"command":"ls -la"}'
MARKUP = ("tool_call", "TOOL_CALLS", "python_tag", "｜", "<|", "arg_key", "function=", '"name"', "[ARGS]")


def ask_with_tools(proxy, stream: bool, text: str, tools: list | None = None) -> anthropic.types.Message:
    kw = {"model": "claude-sonnet-5", "max_tokens": 200, "tools": tools or TOOLS,
          "messages": [{"role": "user", "content": text}]}
    if stream:
        with client(proxy).messages.stream(**kw) as s:
            return s.get_final_message()
    return client(proxy).messages.create(**kw)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("family", sorted(TEXT_CALLS))
def test_tool_calls_written_as_text_become_tool_use(make_proxy, family, stream):
    msg = ask_with_tools(make_proxy(model=f"textcalls-{family}"), stream, TWO_CALLS)
    assert [(b.name, b.input) for b in msg.content if b.type == "tool_use"] == [
        ("Read", {"file_path": "/etc/hosts", "limit": 5, "recursive": False}), ("Bash", {"command": "ls -la"})]
    assert msg.stop_reason == "tool_use"
    text = "".join(b.text for b in msg.content if b.type == "text")
    assert text.strip() == TEXT_CALL_PREAMBLE.get(family, "").strip()  # what came before the markup, no markup
    assert not any(m in text for m in MARKUP)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("family", ["hermes", "kimi", "llama"])
def test_markup_naming_a_tool_not_offered_stays_text(make_proxy, family, stream):
    msg = ask_with_tools(make_proxy(model=f"textcalls-{family}"), stream, 'TOOL_CALL:Delete:{"path":"/"}')
    assert msg.stop_reason == "end_turn" and [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == TEXT_CALL_PREAMBLE.get(family, "") + TEXT_CALLS[family]([("Delete", {"path": "/"})])


@pytest.mark.parametrize("stream", [False, True])
def test_vllm_without_a_tool_parser_gets_tool_choice_none_and_its_text_calls_are_read(make_proxy, backend, stream):
    """vLLM without --enable-auto-tool-choice refuses tool_choice "auto" (the default with tools): retried with
    "none", which still shows the model the tools, remembered; the calls it then writes are read."""
    proxy = make_proxy(model="textcalls-qwen3coder-noparser")
    for _ in range(2):
        msg = ask_with_tools(proxy, stream, TWO_CALLS)
        assert [b.name for b in msg.content if b.type == "tool_use"] == ["Read", "Bash"]
    assert [r.get("tool_choice") for r in backend.requests] == [None, "none", "none"]
    assert all(len(r["tools"]) == 2 for r in backend.requests)


def test_text_calls_are_not_read_when_the_client_forbids_tools(make_proxy):
    kw = {"model": "claude-sonnet-5", "max_tokens": 200, "tools": TOOLS, "tool_choice": {"type": "none"},
          "messages": [{"role": "user", "content": 'TOOL_CALL:Bash:{"command":"ls"}'}]}
    msg = client(make_proxy(model="textcalls-hermes")).messages.create(**kw)
    assert msg.stop_reason == "end_turn" and "<tool_call>" in msg.content[0].text


def test_text_calls_found_the_same_however_the_stream_splits_them():
    import random
    assert all(start[0] not in start[1:] for start, _, _ in cp.TEXT_CALL_MARKUP)  # what the hold-back relies on
    offered = {t["name"]: t["input_schema"] for t in TOOLS}
    rng = random.Random(7)
    for family, write in TEXT_CALLS.items():
        answer = TEXT_CALL_PREAMBLE.get(family, "") + write([("Read", {"file_path": "/a b", "limit": 3}),
                                                             ("Bash", {"command": "echo '<tool_call>'"})])
        whole = cp.take_text_tool_calls(answer, offered)
        assert [c["function"]["name"] for c in whole[1]] == ["Read", "Bash"], family
        for _ in range(30):
            finder, items, at = cp.TextToolCalls(offered), [], 0
            while at < len(answer):
                step = rng.randint(1, 12)
                items += finder.feed(answer[at:at + step])
                at += step
            items += finder.flush()
            assert ("".join(v for k, v in items if k == "text"), [v for k, v in items if k == "call"]) == whole


PIECES = ["<tool_call>", "</tool_call>", "<function=", "</function>", "<parameter=x>", "[TOOL_CALLS]", "[ARGS]",
          "<|python_tag|>", "<|tool_calls_section_begin|>", "<|tool_call_begin|>", "<|tool_call_argument_begin|>",
          "<|tool_call_end|>", "<｜tool▁calls▁begin｜>", "<｜tool▁call▁begin｜>", "<｜tool▁sep｜>", "<arg_key>",
          "<arg_value>", '{"name": "Read", "arguments": {}}', "{", "[", "<", "|", "｜", "function", "Read", "\n", " ",
          "text", '"', ";", "```json\n", "```"]


@given(parts=st.lists(st.sampled_from(PIECES) | st.text(max_size=5), max_size=30),
       cuts=st.lists(st.integers(1, 15), min_size=1, max_size=10))
@settings(max_examples=300, deadline=None, derandomize=True, database=None)
def test_text_without_an_offered_tool_comes_out_as_it_went_in(parts, cuts):
    """Whatever the markup-like text, split however: with no offered tool named, every character comes out as
    text, in order; nothing raises."""
    text = "".join(parts)
    finder, out, at, i = cp.TextToolCalls({"Glob": {}}), [], 0, 0
    while at < len(text):
        out += finder.feed(text[at:at + cuts[i % len(cuts)]])
        at += cuts[i % len(cuts)]
        i += 1
    out += finder.flush()
    assert all(kind == "text" for kind, _ in out) and "".join(v for _, v in out) == text


@pytest.mark.parametrize("answer", ["Read the file first, then Bash it.", '{"result": 42, "name": 7}', "[1, 2]",
                                    "Read{not json", "functions.", "<tool_call>Nope", "[TOOL_CALLS]",
                                    '<tool_call>{"name": "Read", "arguments": {}}</tool_call> and Glob{"a": 1}'])
def test_what_only_looks_like_a_call_stays_text(answer):
    offered = {t["name"]: t["input_schema"] for t in TOOLS}
    text, calls = cp.take_text_tool_calls(answer, offered)
    if answer.startswith("<tool_call>{"):  # the call is read, the text after it kept
        assert [c["function"]["name"] for c in calls] == ["Read"] and text == 'and Glob{"a": 1}'
    else:
        assert (text, calls) == (answer, [])
