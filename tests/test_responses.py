"""OpenAI's Responses API as the third dialect (issue #13), end to end with the official SDKs: a Responses
backend (the strict fake of tests/fake_responses.py) behind the Anthropic and Chat Completions doors, and the
Responses door (POST /v1/responses) in front of all three backend dialects."""

from __future__ import annotations

import anthropic
import openai
import pytest
from fake_anthropic import FakeAnthropic
from fake_responses import FakeResponses
from test_fuzz_backend import check_anthropic_message

TOOLS = [{"name": "Read", "description": "Read a file", "input_schema": {
    "type": "object", "properties": {"file_path": {"type": "string"}, "limit": {"type": "integer"}},
    "required": ["file_path"]}}]


@pytest.fixture
def rbackend(loop_thread):
    fake = FakeResponses()
    loop_thread.run(fake.start())
    yield fake
    loop_thread.run(fake.stop())


@pytest.fixture
def to_responses(make_proxy, rbackend):
    return lambda model="gpt-5-reason", **kw: make_proxy(url=f"http://127.0.0.1:{rbackend.port}/v1",
                                                         backend="responses", model=model, **kw)


def aclient(proxy) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proxy.url, api_key="k", max_retries=0, timeout=30)


def ask(client: anthropic.Anthropic, stream: bool, **kw) -> anthropic.types.Message:
    kw = {"model": "claude-sonnet-5", "max_tokens": 2000, **kw}
    if stream:
        with client.messages.stream(**kw) as s:
            return s.get_final_message()
    return client.messages.create(**kw)


# ---- a Responses backend behind the Anthropic door -------------------------------------------------------

@pytest.mark.parametrize("stream", [False, True])
def test_claude_code_style_tool_loop_carries_reasoning_across_turns(to_responses, rbackend, stream):
    """The fake's reasoning model refuses a tool result whose turn's reasoning item did not come back."""
    client = aclient(to_responses(reasoning_effort="high"))
    turns = [{"role": "user", "content": 'THINK: TOOL_CALL:Read:{"file_path":"/etc/hosts"}'}]
    first = ask(client, stream, tools=TOOLS, messages=turns, thinking={"type": "enabled", "budget_tokens": 1024})
    assert [b.type for b in first.content] == ["thinking", "tool_use"] and first.stop_reason == "tool_use"
    assert first.content[0].signature.startswith("cprs1.") and first.content[0].thinking
    assert first.content[1].input == {"file_path": "/etc/hosts"}
    sent = rbackend.requests[-1]
    assert sent["store"] is False and sent["tools"][0]["strict"] is False
    assert sent["reasoning"] == {"effort": "high", "summary": "auto"}
    turns += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
              {"role": "user", "content": [{"type": "tool_result", "tool_use_id": first.content[1].id,
                                            "content": "127.0.0.1 localhost"}]}]
    second = ask(client, stream, tools=TOOLS, messages=turns, thinking={"type": "enabled", "budget_tokens": 1024})
    assert second.content[-1].text.startswith("Tool result received: 127.0.0.1 localhost")
    assert rbackend.reasoning_replays >= 1  # the item went back, encrypted content and all
    assert "status" not in next(i for i in rbackend.requests[-1]["input"] if i["type"] == "reasoning")
    check_anthropic_message(second.model_dump(exclude_none=True))


@pytest.mark.parametrize("stream", [False, True])
def test_backend_errors_and_limits_reach_the_anthropic_client(to_responses, stream):
    with pytest.raises(anthropic.BadRequestError) as info:
        ask(aclient(to_responses(model="unknown-model")), stream, messages=[{"role": "user", "content": "hi"}])
    assert "does not exist" in info.value.message
    cut = ask(aclient(to_responses(model="incomplete-x")), stream, max_tokens=20,
              messages=[{"role": "user", "content": "tell me a long story please"}])
    assert cut.stop_reason == "max_tokens"


def test_a_failed_or_cut_stream_ends_in_an_error_event(to_responses):
    for model in ("failed-x", "cut-x"):
        with pytest.raises(anthropic.APIError):
            ask(aclient(to_responses(model=model)), True, messages=[{"role": "user", "content": "a long story"}])


@pytest.mark.parametrize("stream", [False, True])
def test_chat_completions_clients_reach_a_responses_backend_through_the_hub(to_responses, rbackend, stream):
    client = openai.OpenAI(base_url=to_responses(model="gpt-5").url + "/v1", api_key="k", max_retries=0)
    tools = [{"type": "function", "function": {"name": "get.weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    kw = {"model": "gpt-4o", "messages": [{"role": "user", "content": 'TOOL_CALL:get_weather:{"city":"Oslo"}'}],
          "tools": tools}
    if stream:
        chunks = list(client.chat.completions.create(stream=True, **kw))
        calls = [c for ch in chunks for c in (ch.choices[0].delta.tool_calls or []) if ch.choices]
        assert calls[0].function.name == "get.weather" and calls[-1].function.arguments
        assert chunks[-1].choices[0].finish_reason == "tool_calls"
    else:
        answer = client.chat.completions.create(**kw)
        call = answer.choices[0].message.tool_calls[0]
        assert (call.function.name, call.function.arguments) == ("get.weather", '{"city":"Oslo"}')
    assert rbackend.requests[-1]["tools"][0]["name"] == "get_weather"  # a name the Responses API takes


# ---- the Responses door, in front of every backend dialect -------------------------------------------------

@pytest.fixture(params=["openai", "anthropic", "responses"])
def door(request, loop_thread, make_proxy, backend, rbackend):
    """A proxy whose default backend speaks the parametrised dialect; (proxy, that backend's fake)."""
    if request.param == "openai":
        return make_proxy(model="fake-model"), backend
    if request.param == "responses":
        return make_proxy(url=f"http://127.0.0.1:{rbackend.port}/v1", backend="responses", model="gpt-5"), rbackend
    fake = FakeAnthropic()
    loop_thread.run(fake.start())
    request.addfinalizer(lambda: loop_thread.run(fake.stop()))
    return make_proxy(url=f"http://127.0.0.1:{fake.port}", backend="anthropic", model="claude-sonnet-4-5"), fake


def oclient(proxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.url + "/v1", api_key="k", max_retries=0, timeout=30)


SHELL = {"type": "function", "name": "shell", "description": "Run a command", "strict": False,
         "parameters": {"type": "object", "properties": {"command": {"type": "array", "items": {"type": "string"}}},
                        "required": ["command"]}}
PATCH = {"type": "custom", "name": "apply_patch", "description": "Apply a patch",
         "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/s"}}


def respond(proxy, stream: bool, **kw) -> openai.types.responses.Response:
    client = oclient(proxy)
    kw = {"model": "gpt-5.1-codex", "max_output_tokens": 2000, **kw}
    if stream:
        with client.responses.stream(**kw) as s:
            events = list(s)
            final = s.get_final_response()
        numbers = [e.sequence_number for e in events]
        assert numbers == list(range(len(numbers)))  # the grammar's numbering, every event accepted by the SDK
        return final
    return client.responses.create(**kw)


@pytest.mark.parametrize("stream", [False, True])
def test_a_codex_style_turn_with_a_shell_call_and_its_output(door, stream):
    proxy, _ = door
    call = respond(proxy, stream, instructions="You are Codex.", tools=[SHELL, PATCH, {"type": "web_search"}],
                   input=[{"type": "message", "role": "developer", "content": "Sandbox: workspace-write."},
                          {"type": "message", "role": "user", "content": [
                              {"type": "input_text", "text": 'TOOL_CALL:shell:{"command":["ls","-la"]}'}]}])
    fc = [o for o in call.output if o.type == "function_call"]
    assert fc and fc[0].name == "shell" and fc[0].arguments == '{"command":["ls","-la"]}'
    assert call.status == "completed"
    answer = respond(proxy, stream, tools=[SHELL, PATCH], input=[
        {"type": "message", "role": "user", "content": 'TOOL_CALL:shell:{"command":["ls","-la"]}'},
        {"type": "function_call", "call_id": fc[0].call_id, "name": "shell", "arguments": fc[0].arguments},
        {"type": "function_call_output", "call_id": fc[0].call_id, "output": "README.md\nsrc"}])
    assert "Tool result received: README.md" in answer.output_text
    assert answer.usage.input_tokens > 0


@pytest.mark.parametrize("stream", [False, True])
def test_a_freeform_tool_call_comes_back_as_a_custom_tool_call(door, stream):
    proxy, _ = door
    patch = "*** Begin Patch\\n*** Add File: hello.txt\\n+hi\\n*** End Patch"
    call = respond(proxy, stream, tools=[SHELL, PATCH], input=f'TOOL_CALL:apply_patch:{{"input":"{patch}"}}')
    custom = [o for o in call.output if o.type == "custom_tool_call"]
    assert custom and custom[0].name == "apply_patch" and custom[0].input == patch.replace("\\n", "\n")
    answer = respond(proxy, stream, tools=[SHELL, PATCH], input=[
        {"type": "message", "role": "user", "content": "patch it"},
        {"type": "custom_tool_call", "call_id": custom[0].call_id, "name": "apply_patch", "input": custom[0].input},
        {"type": "custom_tool_call_output", "call_id": custom[0].call_id, "output": "Done!"}])
    assert "Done!" in answer.output_text


def test_stored_state_is_refused_with_a_reason(door):
    proxy, _ = door
    with pytest.raises(openai.BadRequestError) as info:
        respond(proxy, False, input="hi", previous_response_id="resp_123")
    assert "keeps no state" in info.value.message and "whole conversation" in info.value.message


def test_codex_model_names_map_to_the_model_on_the_responses_door_only():
    import claude_proxy as cp
    routing = cp.Config(model="deepseek-chat").routing

    def target(name: str, door: str) -> str:
        return routing.route(name, cp.RequestFacts({}, None, door))[1][0][1]

    for name in ("gpt-5.1-codex", "gpt-5", "o3", "codex-mini-latest", "gpt-5-codex"):
        assert target(name, "responses") == "deepseek-chat", name
        assert target(name, "openai") == name  # the Chat door and the Anthropic door name models as they are
    assert target("my-own-model", "responses") == "my-own-model"
    openai_own = cp.Config(url="https://api.openai.com/v1", model="gpt-5").routing
    assert openai_own.route("gpt-5.1-codex", cp.RequestFacts({}, None, "responses"))[1][0][1] == "gpt-5.1-codex"


def test_setup_codex_merges_a_provider_into_codex_config(tmp_path):
    import subprocess
    import sys
    import tomllib

    import claude_proxy as cp
    path = tmp_path / "config.toml"
    path.write_text('model = "o3"\napproval_policy = "never"\n\n[model_providers.claude_proxy]\nname = "old"\n'
                    'base_url = "http://old"\n\n[mcp_servers.fs]\ncommand = "npx"\n')
    run = [sys.executable, cp.__file__, "--port", "9999", "--proxy-key", "pk-1", "setup-codex", "--codex-config",
           str(path)]
    out = subprocess.run(run, capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0, out.stderr
    data = tomllib.loads(path.read_text())
    assert data["model_provider"] == "claude_proxy" and data["model"] == "gpt-5.5"
    assert data["approval_policy"] == "never" and data["mcp_servers"]["fs"]["command"] == "npx"  # kept
    assert data["model_providers"]["claude_proxy"] == {"name": "claude_proxy", "base_url": "http://127.0.0.1:9999/v1",
                                                       "wire_api": "responses", "env_key": "CLAUDE_PROXY_KEY"}
    assert "export CLAUDE_PROXY_KEY" in out.stdout and list(tmp_path.glob("config.toml.bak-*"))
    path.write_text("model = [unclosed\n")
    out = subprocess.run(run, capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 1 and "is not valid TOML" in out.stderr and path.read_text() == "model = [unclosed\n"


@pytest.mark.parametrize("stream", [False, True])
def test_codexs_hosted_web_search_is_run_by_the_proxy_with_a_provider(make_proxy, backend, loop_thread, stream):
    from fake_search import FakeSearXNG
    searx = FakeSearXNG()
    loop_thread.run(searx.start())
    try:
        proxy = make_proxy(web_search="searxng", web_search_url=f"http://127.0.0.1:{searx.port}")
        answer = respond(proxy, stream, tools=[SHELL, {"type": "web_search", "external_web_access": True}],
                         input='Look it up. TOOL_CALL:web_search:{"query":"aiohttp streaming"}')
        kinds = [o.type for o in answer.output]
        assert kinds == ["web_search_call", "message"], kinds
        assert answer.output[0].action.query == "aiohttp streaming"
        assert "aiohttp streaming - result 1" in answer.output_text  # the model got the results
        assert searx.requests and searx.requests[-1]["query"]["q"] == "aiohttp streaming"
    finally:
        loop_thread.run(searx.stop())
    without = respond(make_proxy(), stream, tools=[SHELL, {"type": "web_search"}], input="hi")
    assert [o.type for o in without.output] == ["message"]  # no provider: the hosted tool is left out
    assert [t["function"]["name"] for t in backend.requests[-1]["tools"]] == ["shell"]


@pytest.mark.parametrize("stream", [False, True])
def test_tools_in_a_namespace_are_offered_and_called_back_in_it(make_proxy, backend, stream):
    spawn = {"type": "function", "name": "spawn_agent", "description": "Start a sub-agent", "strict": False,
             "parameters": {"type": "object", "properties": {"message": {"type": "string"}}}}
    tools = [SHELL, {"type": "namespace", "name": "multi_agent_v1", "description": "Sub-agents", "tools": [spawn]}]
    call = respond(make_proxy(), stream, tools=tools,
                   input='TOOL_CALL:multi_agent_v1_spawn_agent:{"message":"look around"}')
    fc = next(o for o in call.output if o.type == "function_call")
    assert (fc.namespace, fc.name, fc.arguments) == ("multi_agent_v1", "spawn_agent", '{"message":"look around"}')
    assert "multi_agent_v1_spawn_agent" in [t["function"]["name"] for t in backend.requests[-1]["tools"]]
    answer = respond(make_proxy(), stream, tools=tools, input=[
        {"type": "message", "role": "user", "content": "go"},
        {"type": "function_call", "call_id": fc.call_id, "name": "spawn_agent", "namespace": "multi_agent_v1",
         "arguments": fc.arguments},
        {"type": "function_call_output", "call_id": fc.call_id, "output": "agent started"}])
    assert "agent started" in answer.output_text


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_run_tool_search_and_the_tools_it_loads(make_proxy, backend, stream):
    """Codex's own tool search (``execution: client``): the model's call comes back as a tool_search_call; the
    tools Codex then sends in tool_search_output (and additional_tools) items are offered from then on."""
    search = {"type": "tool_search", "execution": "client", "description": "Search deferred tools",
              "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}
    call = respond(make_proxy(), stream, tools=[SHELL, search], input='TOOL_CALL:tool_search:{"query":"github"}')
    ts = next(o for o in call.output if o.type == "tool_search_call")
    assert (ts.execution, ts.arguments) == ("client", {"query": "github"})
    issue = {"type": "function", "name": "create_issue", "description": "Open an issue", "strict": False,
             "parameters": {"type": "object", "properties": {"title": {"type": "string"}}}}
    extra = {"type": "function", "name": "list_prs", "parameters": {"type": "object", "properties": {}}}
    answer = respond(make_proxy(), stream, tools=[SHELL, search], input=[
        {"type": "message", "role": "user", "content": "find the github tools"},
        {"type": "tool_search_call", "call_id": ts.call_id, "arguments": {"query": "github"}, "execution": "client"},
        {"type": "tool_search_output", "call_id": ts.call_id, "execution": "client", "status": "completed",
         "tools": [{"type": "namespace", "name": "github", "description": "GitHub", "tools": [issue]}]},
        {"type": "additional_tools", "role": "developer", "tools": [extra]}])
    assert "Tools loaded: github.create_issue" in answer.output_text
    assert [t["function"]["name"] for t in backend.requests[-1]["tools"]] == [
        "shell", "tool_search", "github_create_issue", "list_prs"]
