"""Routing by what a request is (issue #12): route conditions, the BACKEND,MODEL comma form, and the route named
in the log line. Two configured backends on one strict fake backend; the model it is asked for tells which route
applied. Clients: the official anthropic and openai SDKs."""

from __future__ import annotations

import anthropic
import openai
import pytest

import claude_proxy as cp

ROUTES = '''
[[backends]]
name = "main"
url = "http://127.0.0.1:{port}/v1"

[[backends]]
name = "alt"
url = "http://127.0.0.1:{port}/v1"

[[routes]]
name = "subagents"
match = "*"
subagent = true
backend = "alt"
model = "sub-model"

[[routes]]
name = "background"
match = "*haiku*"
tools = false
backend = "alt"
model = "bg-model"

[[routes]]
match = "*"
thinking = true
backend = "main"
model = "think-model"

[[routes]]
match = "*"
min_input_tokens = 3000
backend = "main"
model = "long-model"

[[routes]]
match = "*"
images = true
backend = "main"
model = "vision-model"

[[routes]]
name = "search"
match = "*"
web_search = true
backend = "alt"
model = "search-model"

[[routes]]
match = "*"
backend = "main"
model = "main-model"
'''
TOOLS = [{"name": "Read", "description": "Read a file", "input_schema": {"type": "object", "properties": {}}}]
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


@pytest.fixture
def routed(make_proxy, backend, tmp_path):
    path = tmp_path / "routes.toml"
    path.write_text(ROUTES.format(port=backend.port))
    return make_proxy(model=None, **cp.load_config_file(str(path)))


def sent_model(routed, backend, caplog, headers: dict | None = None, **kw) -> tuple[str, str]:
    """Ask through the anthropic SDK; (the model the backend was asked for, the route the log line names)."""
    client = anthropic.Anthropic(base_url=routed.url, api_key="k", max_retries=0, default_headers=headers or {})
    body = {"model": "claude-sonnet-4-5", "max_tokens": 50, "tools": TOOLS,
            "messages": [{"role": "user", "content": "hello"}], **kw}
    caplog.set_level("INFO")
    caplog.clear()
    client.messages.create(**body)
    line = next(r.getMessage() for r in caplog.records if " route=" in r.getMessage())
    return backend.requests[-1]["model"], line.split(" route=")[1].split()[0]


def test_each_condition_picks_its_route(routed, backend, caplog):
    assert sent_model(routed, backend, caplog) == ("main-model", "#7")
    assert sent_model(routed, backend, caplog, headers={"x-claude-code-agent-id": "agent-1"}) == (
        "sub-model", "subagents")
    assert sent_model(routed, backend, caplog, model="claude-haiku-4-5", tools=[]) == ("bg-model", "background")
    assert sent_model(routed, backend, caplog, model="claude-haiku-4-5") == ("main-model", "#7")  # tools: no chore
    assert sent_model(routed, backend, caplog, max_tokens=3000, thinking={"type": "enabled", "budget_tokens": 1024}
                      ) == ("think-model", "#3")
    assert sent_model(routed, backend, caplog, thinking={"type": "adaptive"}) == ("think-model", "#3")
    assert sent_model(routed, backend, caplog, messages=[{"role": "user", "content": "word " * 4000}]) == (
        "long-model", "#4")
    image_in_result = [{"role": "user", "content": "look"},
                       {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Read", "input": {}}]},
                       {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [
                           {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]}]}]
    assert sent_model(routed, backend, caplog, messages=image_in_result) == ("vision-model", "#5")
    web = [{"type": "web_search_20250305", "name": "web_search", "max_uses": 1}]
    assert sent_model(routed, backend, caplog, tools=web, tool_choice={"type": "auto"}) == ("search-model", "search")


def test_openai_clients_are_judged_the_same_way(routed, backend):
    client = openai.OpenAI(base_url=routed.url + "/v1", api_key="k", max_retries=0)
    ask = {"model": "gpt-4o", "max_tokens": 20}
    client.chat.completions.create(messages=[{"role": "user", "content": "hi"}], **ask)
    assert backend.requests[-1]["model"] == "main-model"
    client.chat.completions.create(messages=[{"role": "user", "content": "hi"}], reasoning_effort="high", **ask)
    assert backend.requests[-1]["model"] == "think-model"
    client.chat.completions.create(messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is it"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]}], **ask)
    assert backend.requests[-1]["model"] == "vision-model"


def test_backend_comma_model_goes_straight_there(routed, backend, caplog):
    assert sent_model(routed, backend, caplog, model="alt,deepseek-reasoner", thinking={"type": "adaptive"}) == (
        "deepseek-reasoner", "alt,")  # past every route, thinking's included
    assert sent_model(routed, backend, caplog, model="nosuch,model") == ("main-model", "#7")  # a plain name


def test_conditions_in_the_config_file_are_checked(tmp_path):
    path = tmp_path / "routes.toml"
    path.write_text('[[backends]]\nname = "a"\nurl = "http://x"\n\n[[routes]]\nmatch = "*"\nbackend = "a"\n'
                    'thinking = "yes"\n')
    with pytest.raises(cp.ConfigFileError, match=r"routes.toml:8: thinking: expected true or false, got a string"):
        cp.load_config_file(str(path))


def test_a_condition_of_false_holds_only_when_the_fact_is_false():
    route = cp.Route("*", "a", thinking=False, tools=True)
    assert route.applies("m", cp.RequestFacts({"tools": [{"name": "x"}]}))
    assert not route.applies("m", cp.RequestFacts({"tools": [{"name": "x"}], "thinking": {"type": "enabled"}}))
    assert not route.applies("m", cp.RequestFacts({}))
    assert not route.applies("m", None)  # no facts: a conditional route never applies


def test_setup_claude_adds_a_comma_model_to_the_picker(tmp_path):
    import json
    import subprocess
    import sys
    toml, settings = tmp_path / "p.toml", tmp_path / "settings.json"
    toml.write_text('[[backends]]\nname = "deepseek"\nurl = "api.deepseek.com/v1"\napi_key = "sk-x"\n')
    run = [sys.executable, cp.__file__, "--config", str(toml), "setup-claude", "--settings", str(settings),
           "--picker-model"]
    out = subprocess.run(run + ["deepseek,deepseek-reasoner"], capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0, out.stderr
    env = json.loads(settings.read_text())["env"]
    assert env["ANTHROPIC_CUSTOM_MODEL_OPTION"] == "deepseek,deepseek-reasoner"
    assert env["ANTHROPIC_CUSTOM_MODEL_OPTION_NAME"] == "deepseek-reasoner"
    out = subprocess.run(run + ["nope,model"], capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 2 and "'nope' is not a configured backend (configured: deepseek" in out.stderr
