"""Claude Code's server-side tools on any backend (issue #11): web search run by the proxy with a configured
provider (fake SearXNG, Brave and Tavily servers on 127.0.0.1, answering like the real services), and deferred
tools: offered only once loaded, and Anthropic's server-side tool search emulated. The client is the official
anthropic SDK, streaming and not."""

from __future__ import annotations

import anthropic
import pytest
from fake_search import FakeBrave, FakeSearXNG, FakeTavily
from hypothesis import given, settings
from hypothesis import strategies as st

import claude_proxy as cp

WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 8}


def ask(proxy, stream: bool, **kw) -> anthropic.types.Message:
    client = anthropic.Anthropic(base_url=proxy.url, api_key="k", max_retries=0, timeout=30)
    kw = {"model": "claude-sonnet-5", "max_tokens": 300, **kw}
    if stream:
        with client.messages.stream(**kw) as s:
            return s.get_final_message()
    return client.messages.create(**kw)


def claude_codes_search(query: str, tool: dict | None = None) -> dict:
    """Claude Code's WebSearch request: the server tool forced, thinking off."""
    return {"messages": [{"role": "user", "content": f"Perform a web search for the query: {query}"}],
            "system": "You are an assistant for performing a web search tool use",
            "tools": [tool or WEB_SEARCH], "tool_choice": {"type": "tool", "name": "web_search"}}


@pytest.mark.parametrize("stream", [False, True])
def test_the_next_ask_carries_the_calls_thought_signature_and_reasoning(make_proxy, backend, stream):
    """Gemini 3 refuses a call sent back without its thought_signature, DeepSeek one without its reasoning: the
    model's search call goes back as any assistant turn does."""
    msg = ask(make_proxy(model="fake-gemini-3"), stream, **claude_codes_search("THINK: weather"))
    assert [b.type for b in msg.content] == ["thinking", "server_tool_use", "web_search_tool_result", "text"]
    answer = backend.requests[-1]["messages"][-2]
    assert answer["tool_calls"][0]["extra_content"]["google"]["thought_signature"].startswith("sig/")
    assert answer["reasoning_content"] == "Let me think about this carefully."


@pytest.mark.parametrize("stream", [False, True])
def test_without_a_provider_a_search_is_the_unavailable_error_result(make_proxy, backend, stream, caplog):
    msg = ask(make_proxy(), stream, **claude_codes_search("weather in Paris"))
    kinds = [b.type for b in msg.content]
    assert kinds == ["server_tool_use", "web_search_tool_result", "text"], kinds
    use, result = msg.content[0], msg.content[1]
    assert use.name == "web_search" and use.input == {"query": "Perform a web search for the query: weather in Paris"}
    assert use.id.startswith("srvtoolu_") and result.tool_use_id == use.id
    assert result.content.type == "web_search_tool_result_error" and result.content.error_code == "unavailable"
    assert msg.stop_reason == "end_turn" and msg.usage.server_tool_use.web_search_requests == 1
    assert "--web-search" in caplog.text
    first, second = backend.requests[-2:]
    assert first["tool_choice"] == {"type": "function", "function": {"name": "web_search"}}
    assert "tool_choice" not in second  # forced for the first ask only
    assert second["messages"][-1] == {"role": "tool", "tool_call_id": second["messages"][-2]["tool_calls"][0]["id"],
                                      "content": "Web search error: unavailable"}


# ---- deferred tools -------------------------------------------------------------------------------------

def tool(name: str, deferred: bool = False, description: str = "") -> dict:
    return {"name": name, "description": description or f"The {name} tool",
            "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
            **({"defer_loading": True} if deferred else {})}


DEFERRED = [tool("Read"), tool("ToolSearch"),
            tool("mcp__github__create_issue", True, "Create an issue in a GitHub repository"),
            tool("mcp__slack__post_message", True, "Post a message to a Slack channel")]


def offered(request: dict) -> list[str]:
    return [t["function"]["name"] for t in request.get("tools", [])]


@pytest.mark.parametrize("stream", [False, True])
def test_deferred_tools_are_offered_only_once_a_tool_reference_loads_them(make_proxy, backend, stream):
    proxy = make_proxy()
    ask(proxy, stream, tools=DEFERRED, messages=[{"role": "user", "content": "hi"}])
    assert offered(backend.requests[-1]) == ["Read", "ToolSearch"]
    loaded = [{"role": "user", "content": "file an issue"},
              {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "ToolSearch",
                                                 "input": {"q": "github"}}]},
              {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [
                  {"type": "tool_reference", "tool_name": "mcp__github__create_issue"},
                  {"type": "tool_reference", "tool_name": "no_such_tool"}]}]}]
    ask(proxy, stream, tools=DEFERRED, messages=loaded)
    assert offered(backend.requests[-1]) == ["Read", "ToolSearch", "mcp__github__create_issue"]
    tool_message = backend.requests[-1]["messages"][-1]
    assert tool_message["role"] == "tool" and "no_such_tool" in tool_message["content"]  # stays text


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("kind,query", [("regex", "github|GITHUB"), ("bm25", "create an issue")])
def test_server_side_tool_search_is_run_by_the_proxy(make_proxy, backend, stream, kind, query):
    name = f"tool_search_tool_{kind}"
    tools = [{"type": f"{name}_20251119", "name": name}] + DEFERRED
    msg = ask(make_proxy(), stream, tools=tools, messages=[
        {"role": "user", "content": f'Find it. TOOL_CALL:{name}:{{"query":"{query}"}}'}])
    assert [b.type for b in msg.content] == ["server_tool_use", "tool_search_tool_result", "text"]
    assert msg.content[0].name == name and msg.content[0].input == {"query": query}
    refs = msg.content[1].content
    assert refs.type == "tool_search_tool_search_result"
    assert [r.tool_name for r in refs.tool_references] == ["mcp__github__create_issue"]
    first, second = backend.requests[-2:]
    assert offered(first) == [name, "Read", "ToolSearch"]
    assert offered(second) == [name, "Read", "ToolSearch", "mcp__github__create_issue"]
    assert second["messages"][-1]["content"] == "Tools loaded: mcp__github__create_issue"


def test_a_tool_search_with_a_broken_pattern_is_the_invalid_input_error(make_proxy, backend):
    tools = [{"type": "tool_search_tool_regex_20251119", "name": "tool_search_tool_regex"}] + DEFERRED
    msg = ask(make_proxy(), False, tools=tools, messages=[
        {"role": "user", "content": 'TOOL_CALL:tool_search_tool_regex:{"query":"(unclosed"}'}])
    assert msg.content[1].content.type == "tool_search_tool_result_error"
    assert msg.content[1].content.error_code == "invalid_tool_input"


def test_bm25_ranks_by_words_of_names_and_descriptions():
    tools = [tool(n, True, d) for n, d in [("mcp__github__create_issue", "Create an issue"),
                                           ("mcp__github__list_issues", "List the issues of a repository"),
                                           ("mcp__slack__post_message", "Post a message")]]
    assert cp.find_tools(tools, "create issue", "tool_search_tool_bm25")[0] == "mcp__github__create_issue"
    assert cp.find_tools(tools, "slack", "tool_search_tool_bm25") == ["mcp__slack__post_message"]
    assert cp.find_tools(tools, "nothing here", "tool_search_tool_bm25") == []
    assert cp.find_tools(tools + [tool("Read")], "Read|github", "tool_search_tool_regex") == [
        "mcp__github__create_issue", "mcp__github__list_issues"]  # only deferred tools are searched


def test_setup_claude_can_turn_tool_search_on(tmp_path):
    import json
    import subprocess
    import sys
    settings = tmp_path / "settings.json"
    out = subprocess.run([sys.executable, cp.__file__, "setup-claude", "--tool-search", "--settings", str(settings)],
                         capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0, out.stderr
    assert json.loads(settings.read_text())["env"]["ENABLE_TOOL_SEARCH"] == "true"


# ---- configuration ----------------------------------------------------------------------------------------

def test_web_search_settings_from_flags_and_the_config_file(tmp_path, monkeypatch):
    assert cp.Config(web_search="brave", web_search_key="BSAkey").search == cp.WebSearch(
        "brave", "https://api.search.brave.com/res/v1/web/search", "BSAkey", 8)
    assert cp.Config(web_search="searxng", web_search_url="localhost:8888").search.url == "http://localhost:8888"
    assert cp.Config().search is None
    monkeypatch.setenv("TAVILY_KEY", "tvly-secret")
    toml = tmp_path / "proxy.toml"
    toml.write_text('[web_search]\nprovider = "tavily"\napi_key_env = "TAVILY_KEY"\nmax_results = 3\n')
    search = cp.Config(**cp.load_config_file(str(toml))).search
    assert search == cp.WebSearch("tavily", "https://api.tavily.com/search", "tvly-secret", 3)


@pytest.mark.parametrize("text,error", [
    ('[web_search]\nprovider = "bing"\n', r"proxy.toml:2: provider: expected one of searxng, brave, tavily"),
    ('[web_search]\nprovider = "searxng"\n', r"needs --web-search-url \(the address of your searxng server\)"),
    ('[web_search]\nprovider = "brave"\n', r"needs --web-search-key"),
    ('[web_search]\nurl = "http://x"\n', r"proxy.toml:1: \[web_search\] needs provider"),
    ('[web_search]\nprovider = "brave"\napi_key_env = "NOPE_UNSET"\n',
     r"proxy.toml:3: web_search: api_key_env: environment variable NOPE_UNSET is not set"),
    ('[web_search]\nprovider = "brave"\napi_key = "k"\nmax_results = 0\n', r"proxy.toml:4: max_results: expected"),
    ('[web_search]\nprovider = "brave"\ncolour = 1\n', r"unknown key 'colour' in \[web_search\]"),
])
def test_web_search_mistakes_in_the_config_file_are_named(tmp_path, text, error):
    toml = tmp_path / "proxy.toml"
    toml.write_text(text)
    with pytest.raises(ValueError, match=error):
        cp.load_config_file(str(toml))


# ---- web search with a provider ---------------------------------------------------------------------------

SEARCH_KEY = "BSAsearch-secret-key-0123"
FAKES = {"searxng": FakeSearXNG, "brave": FakeBrave, "tavily": FakeTavily}


@pytest.fixture(params=sorted(FAKES))
def provider(request, loop_thread):
    fake = FAKES[request.param](key=None if request.param == "searxng" else SEARCH_KEY)
    loop_thread.run(fake.start())
    fake.name = request.param
    yield fake
    loop_thread.run(fake.stop())


def provider_url(provider) -> str:
    return f"http://127.0.0.1:{provider.port}" + {"searxng": "", "brave": "/res/v1/web/search",
                                                  "tavily": "/search"}[provider.name]


def searching_proxy(make_proxy, provider, key: str | None = SEARCH_KEY, **kw):
    return make_proxy(web_search=provider.name, web_search_url=provider_url(provider),
                      web_search_key=None if provider.name == "searxng" else key, **kw)


@pytest.mark.parametrize("stream", [False, True])
def test_claude_codes_web_search_gets_the_providers_results(make_proxy, backend, provider, stream, caplog):
    msg = ask(searching_proxy(make_proxy, provider), stream, **claude_codes_search("aiohttp streaming"))
    assert [b.type for b in msg.content] == ["server_tool_use", "web_search_tool_result", "text"]
    results = msg.content[1].content
    query = msg.content[0].input["query"]
    assert len(results) == 8 and all(r.type == "web_search_result" for r in results)
    assert results[0].title == f"{query} - result 1" and results[0].url.startswith("https://docs.example.com/")
    told = backend.requests[-1]["messages"][-1]["content"]  # the model got titles, URLs and snippets
    assert told.startswith(f"1. {query} - result 1\nhttps://docs.example.com/") and len(told.split("\n\n")) == 8
    assert msg.content[2].text.startswith("Tool result received: 1. ")
    assert msg.usage.server_tool_use.web_search_requests == 1
    sent = provider.requests[-1]
    assert query in str(sent["query"].get("q") or sent["json"]["query"])
    assert SEARCH_KEY not in caplog.text


@pytest.mark.parametrize("filters,check", [
    ({"allowed_domains": ["docs.example.com"]}, lambda host: host == "docs.example.com"),
    ({"blocked_domains": ["example.net"]}, lambda host: not host.endswith("example.net")),
])
def test_the_tools_domains_filter_the_results(make_proxy, backend, provider, filters, check):
    from urllib.parse import urlsplit
    msg = ask(searching_proxy(make_proxy, provider), False,
              **claude_codes_search("python asyncio", {**WEB_SEARCH, **filters}))
    results = msg.content[1].content
    assert results and all(check(urlsplit(r.url).hostname) for r in results), [r.url for r in results]
    if provider.name == "tavily":  # Tavily filters itself
        assert next(iter(filters.values()))[0] in str(provider.requests[-1]["json"])


@pytest.mark.parametrize("fault,code,logged", [
    ({"fail_status": 500}, "unavailable", "HTTP 500"),
    ({"rate_limited": True}, "too_many_requests", "HTTP 429"),
    ({"bad_json": True}, "unavailable", "web search via"),
    ({"delay": 5.0}, "unavailable", "web search via"),
])
@pytest.mark.parametrize("stream", [False, True])
def test_a_provider_failure_is_that_searchs_error_result(make_proxy, backend, provider, fault, code, logged, stream,
                                                        caplog):
    if "rate_limited" in fault and provider.name == "searxng":
        fault = {"fail_status": 429}
    for k, v in fault.items():
        setattr(provider, k, v)
    msg = ask(searching_proxy(make_proxy, provider, web_search_timeout=0.5), stream,
              **claude_codes_search("anything"))
    assert msg.content[1].content.type == "web_search_tool_result_error" and msg.content[1].content.error_code == code
    assert msg.stop_reason == "end_turn" and logged in caplog.text


def test_bad_keys_and_searxng_without_json_say_what_to_fix(make_proxy, backend, provider, caplog):
    if provider.name == "searxng":
        provider.json_enabled = False
        proxy = searching_proxy(make_proxy, provider)
        hint = "add json to search.formats"
    else:
        proxy = searching_proxy(make_proxy, provider, key="wrong-key-9876")
        hint = "check --web-search-key"
    msg = ask(proxy, False, **claude_codes_search("anything"))
    assert msg.content[1].content.error_code == "unavailable"
    assert hint in caplog.text and "wrong-key-9876" not in caplog.text


def test_searches_beyond_max_uses_get_the_max_uses_error_and_the_tool_is_withdrawn(make_proxy, backend):
    msg = ask(make_proxy(), False, tools=[{**WEB_SEARCH, "max_uses": 1}], messages=[{"role": "user", "content": (
        'TOOL_CALL:web_search:{"query":"first"} TOOL_CALL:web_search:{"query":"second"}')}])
    errors = [b.content.error_code for b in msg.content if b.type == "web_search_tool_result"]
    assert errors == ["unavailable", "max_uses_exceeded"]
    assert "tools" not in backend.requests[-1]  # nothing left to offer: the model must answer


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                        st.sampled_from(["results", "web", "url", "title", "content", "description", "page_age",
                                         "publishedDate", "x"]), inner, max_size=5), max_leaves=20)


@given(provider=st.sampled_from(sorted(FAKES)), data=JSON)
@settings(max_examples=400, deadline=None, derandomize=True, database=None)
def test_any_provider_answer_gives_results_or_none_never_an_exception(provider, data):
    for r in cp.search_results(provider, data):
        assert isinstance(r["url"], str) and isinstance(r["title"], str) and isinstance(r["snippet"], str)


def test_the_composed_stream_keeps_the_grammar_event_for_event(make_proxy, backend):
    """The raw stream of a search turn: the grammar the SDKs accept, each event valid for the SDK's own types."""
    import httpx
    from conftest import parse_sse_bytes
    from test_fuzz_backend import check_anthropic_events, check_anthropic_message
    body = {"model": "claude-sonnet-5", "max_tokens": 300, "stream": True, **claude_codes_search("THINK: x")}
    raw = httpx.post(make_proxy(model="fake-gemini-3").url + "/v1/messages", json=body, timeout=30).content
    events = parse_sse_bytes(raw)
    assert not check_anthropic_events(events)  # ended normally
    assert [d["content_block"]["type"] for n, d in events if n == "content_block_start"] == [
        "thinking", "server_tool_use", "web_search_tool_result", "text"]
    assert events[-2][1]["usage"]["server_tool_use"] == {"web_search_requests": 1, "web_fetch_requests": 0}
    whole = httpx.post(make_proxy(model="fake-gemini-3").url + "/v1/messages", json={**body, "stream": False},
                       timeout=30).json()
    check_anthropic_message(whole)  # the JSON answer: valid for the SDK's own types, strictly
    assert [b["type"] for b in whole["content"]] == ["thinking", "server_tool_use", "web_search_tool_result", "text"]
