"""End to end, OpenAI front door: the official openai SDK → claude_proxy → a strict fake Anthropic backend;
and pass-through in both directions (OpenAI → OpenAI backend, Anthropic → Anthropic backend)."""

from __future__ import annotations

import json
import re

import anthropic
import httpx
import openai
import pytest
from fake_anthropic import FakeAnthropic

KEY = "sk-ant-backend-0123456789abcdef"


@pytest.fixture
def claude_backend(loop_thread):
    fake = FakeAnthropic(key=KEY)
    loop_thread.run(fake.start())
    yield fake
    loop_thread.run(fake.stop())


@pytest.fixture
def make_oproxy(make_proxy, claude_backend):
    def factory(**kw):
        opts = {"backend": "anthropic", "url": f"127.0.0.1:{claude_backend.port}", "api_key": KEY,
                "model": "claude-sonnet-4-5"}
        return make_proxy(**{**opts, **kw})
    return factory


@pytest.fixture
def oproxy(make_oproxy):
    return make_oproxy()


def oclient(proxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.url + "/v1", api_key="client-side-key", max_retries=0, timeout=20)


def user(text, model="claude-sonnet-4-5", **kw):
    return {"model": model, "messages": [{"role": "user", "content": text}], **kw}


def test_create_text_usage_and_shape(oproxy, claude_backend):
    r = oclient(oproxy).chat.completions.create(**user("hello"))
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert r.choices[0].message.content == "Hello from claude-sonnet-4-5! You said: hello"
    assert r.choices[0].finish_reason == "stop" and r.choices[0].message.tool_calls is None
    assert r.model == "claude-sonnet-4-5"
    sent = claude_backend.requests[-1]
    backend_input = max(1, len(json.dumps(sent["messages"])) // 4)  # what the fake reports as input_tokens
    assert r.usage.prompt_tokens == backend_input + 3  # + its 3 cache-read tokens: OpenAI counts them in
    assert r.usage.prompt_tokens_details.cached_tokens == 3
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens == r.usage.prompt_tokens + 12
    assert sent["max_tokens"] == 8192  # default when the client sends none
    assert claude_backend.headers[-1]["x-api-key"] == KEY
    assert claude_backend.headers[-1]["anthropic-version"] == "2023-06-01"


def test_stream_chunks_follow_the_openai_grammar_and_match_non_stream(oproxy):
    c = oclient(oproxy)
    whole = c.chat.completions.create(**user("hello")).choices[0].message.content
    chunks = list(c.chat.completions.create(**user("hello"), stream=True, stream_options={"include_usage": True}))
    assert len({ch.id for ch in chunks}) == 1 and len({ch.created for ch in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert sum(1 for ch in chunks if ch.choices and ch.choices[0].delta.role) == 1
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == whole
    finish = [ch for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert len(finish) == 1 and finish[0].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12
    raw = httpx.post(oproxy.url + "/v1/chat/completions", json=user("hello", stream=True)).text
    assert ": ping\n\n" in raw  # the backend's Anthropic ping, as an SSE comment
    plain = list(c.chat.completions.create(**user("hello"), stream=True))
    assert all(ch.usage is None for ch in plain) and plain[-1].choices  # no usage chunk unless asked


def test_stream_helper_accumulates_parallel_tool_calls(oproxy, claude_backend):
    c = oclient(oproxy)
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                               "parameters": {"type": "object", "properties": {
                                                   "city": {"type": "string"}}, "required": ["city"]}}},
             {"type": "function", "function": {"name": "get.time", "parameters": {
                 "type": "object", "properties": {"tz": {"type": "string"}}}}}]
    prompt = 'TOOL_CALL:get_weather:{"city":"Paris"} TOOL_CALL:get_time:{"tz":"CET"}'
    with c.chat.completions.stream(**user(prompt), tools=tools, parallel_tool_calls=False) as stream:
        final = stream.get_final_completion()
    plain = c.chat.completions.create(**user(prompt), tools=tools)
    for r in (final, plain):
        calls = r.choices[0].message.tool_calls
        assert [(t.function.name, json.loads(t.function.arguments)) for t in calls] == [
            ("get_weather", {"city": "Paris"}), ("get.time", {"tz": "CET"})]
        assert all(t.id.startswith("toolu_") and t.type == "function" for t in calls)
        assert r.choices[0].finish_reason == "tool_calls"
    sent = claude_backend.requests[-2]
    assert [t["name"] for t in sent["tools"]] == ["get_weather", "get_time"]
    assert sent["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


def test_tool_results_round_trip_with_foreign_ids(oproxy, claude_backend):
    messages = [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "weather and time?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "functions.get_weather:0", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call|fc_1", "type": "function", "function": {"name": "get_time", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "functions.get_weather:0", "content": "18C sunny"},
        {"role": "tool", "tool_call_id": "call|fc_1", "content": [{"type": "text", "text": "12:00"}]},
    ]
    r = oclient(oproxy).chat.completions.create(model="claude-sonnet-4-5", messages=messages, tools=[
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}},
        {"type": "function", "function": {"name": "get_time"}}])
    assert r.choices[0].message.content == "Tool result received: 18C sunny | 12:00"
    sent = claude_backend.requests[-1]
    assert sent["system"] == "Be terse."
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert [b["type"] for b in sent["messages"][1]["content"]] == ["tool_use", "tool_use"]  # empty text dropped
    assert [b["tool_use_id"] for b in sent["messages"][2]["content"]] == ["functions_get_weather_0", "call_fc_1"]


def test_reasoning_effort_gives_thinking_as_reasoning_content(oproxy, claude_backend):
    r = oclient(oproxy).chat.completions.create(**user("think hard"), reasoning_effort="high", temperature=0.3,
                                                max_tokens=2000)
    msg = r.choices[0].message
    assert msg.content.startswith("Hello from") and "Considering" not in msg.content
    assert msg.model_extra["reasoning_content"] == "Considering the request."
    sent = claude_backend.requests[-1]
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert sent["max_tokens"] > 4096 and "temperature" not in sent
    chunks = list(oclient(oproxy).chat.completions.create(**user("x"), reasoning_effort="low", stream=True))
    assert "".join(ch.choices[0].delta.model_extra.get("reasoning_content") or "" for ch in chunks if ch.choices) \
        == "Considering the request."


def test_models_refusing_enabled_thinking_get_adaptive(make_oproxy, claude_backend):
    proxy = make_oproxy(model="adaptive-only-model")
    r = oclient(proxy).chat.completions.create(**user("x"), reasoning_effort="medium")
    assert r.choices[0].message.content.startswith("Hello")
    assert claude_backend.requests[-1]["thinking"] == {"type": "adaptive"}
    assert claude_backend.requests[-1]["output_config"] == {"effort": "low"}


@pytest.mark.parametrize("sampling", [{"temperature": 0.7}, {"top_p": 0.5}, {"temperature": 0.2, "top_p": 0.5}])
def test_sampling_parameters_refused_by_newer_claude_models_are_dropped_and_remembered(make_oproxy, claude_backend,
                                                                                      sampling):
    """Issue #9 defect 8: OpenAI clients always send a temperature; Claude Opus 4.7+ refuses it with a 400."""
    proxy = make_oproxy(model="claude-opus-4-8")
    client = oclient(proxy)
    assert client.chat.completions.create(**user("one"), **sampling).choices[0].message.content.startswith("Hello")
    first = claude_backend.requests[:]
    assert len(first) == 2 and any(k in first[0] for k in ("temperature", "top_p"))
    assert not {"temperature", "top_p"} & first[1].keys()
    stream = client.chat.completions.create(**user("two"), stream=True, **sampling)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices).startswith("Hello")
    assert len(claude_backend.requests) == 3  # remembered: straight through, no second refusal
    assert not {"temperature", "top_p"} & claude_backend.requests[-1].keys()


def test_older_claude_models_keep_their_temperature(make_oproxy, claude_backend):
    client = oclient(make_oproxy(model="claude-sonnet-4-5"))
    client.chat.completions.create(**user("x"), temperature=0.3)
    assert len(claude_backend.requests) == 1 and claude_backend.requests[0]["temperature"] == 0.3


def test_reasoning_effort_under_a_max_tokens_cap_keeps_the_cap(make_oproxy, claude_backend):
    """Issue #9 defect 6: reasoning_effort "high" under --max-tokens 2000 was sent with max_tokens 8192."""
    client = oclient(make_oproxy(max_tokens=2000))
    r = client.chat.completions.create(**user("x"), reasoning_effort="high")
    assert r.choices[0].message.content.startswith("Hello")
    sent = claude_backend.requests[-1]
    assert sent["max_tokens"] == 2000 and sent["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    client.chat.completions.create(**user("x"), reasoning_effort="high", max_tokens=1024)
    assert claude_backend.requests[-1]["max_tokens"] == 2000  # raised to leave the answer room, then capped
    client.chat.completions.create(**user("x"), reasoning_effort="low", max_tokens=100000)
    assert claude_backend.requests[-1]["max_tokens"] == 2000
    client = oclient(make_oproxy(max_tokens=1024))  # no room for the smallest budget (1024): no thinking
    client.chat.completions.create(**user("x"), reasoning_effort="high")
    assert claude_backend.requests[-1]["max_tokens"] == 1024 and "thinking" not in claude_backend.requests[-1]


def test_images_and_files(oproxy, claude_backend):
    r = oclient(oproxy).chat.completions.create(model="claude-sonnet-4-5", messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        {"type": "file", "file": {"filename": "spec.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}])
    assert "[saw 2 image(s)] [saw 1 document(s)]" in r.choices[0].message.content
    blocks = claude_backend.requests[-1]["messages"][0]["content"]
    assert blocks[1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                     "data": "iVBORw0KGgo="}}
    assert blocks[2] == {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
    assert blocks[3]["type"] == "document" and blocks[3]["title"] == "spec.pdf"


def test_librechat_shaped_request(oproxy, claude_backend):
    """LibreChat defaults: temperature 1, top_p 1, zero penalties, user id, stream, no max_tokens, named system."""
    body = {"model": "claude-sonnet-4-5", "temperature": 1, "top_p": 1, "presence_penalty": 0,
            "frequency_penalty": 0, "user": "65f1c0ffee", "stream": True,
            "messages": [{"role": "system", "name": "preset", "content": "You are LibreChat's assistant."},
                         {"role": "user", "content": "hi"}]}
    raw = httpx.post(oproxy.url + "/v1/chat/completions", json=body, headers={"Authorization": "Bearer x"}).text
    assert raw.rstrip().endswith("data: [DONE]")
    sent = claude_backend.requests[-1]
    assert sent["temperature"] == 1.0 and "top_p" not in sent and sent["max_tokens"] == 8192
    assert sent["metadata"] == {"user_id": "65f1c0ffee"}
    assert not {"presence_penalty", "frequency_penalty", "user"} & set(sent)


def test_sillytavern_shaped_request(oproxy, claude_backend):
    """SillyTavern Custom source: mid-chat system notes, example names, same-role runs, prefill, ST's params."""
    messages = [
        {"role": "system", "content": "You are Seraphina."},
        {"role": "system", "name": "example_user", "content": "Hi"},
        {"role": "system", "name": "example_assistant", "content": "Hello, traveller."},
        {"role": "assistant", "content": "*The forest is quiet.*"},
        {"role": "user", "content": "Where am I?"},
        {"role": "user", "content": ""},
        {"role": "system", "content": "[Author's note: keep it short]"},
        {"role": "user", "content": "Answer please."},
        {"role": "assistant", "content": "Seraphina:  \n"},
    ]
    r = oclient(oproxy).chat.completions.create(
        model="claude-sonnet-4-5", messages=messages, temperature=1.5, max_tokens=300, stop=["\nUser:", "  "],
        n=1, seed=7, logit_bias={}, frequency_penalty=0.2, presence_penalty=0.1, top_p=0.9,
        extra_body={"top_k": 40})
    assert r.choices[0].message.content.startswith("Hello from")
    sent = claude_backend.requests[-1]
    assert sent["system"] == ("You are Seraphina.\nHi\nHello, traveller.\n[Author's note: keep it short]")
    roles = [m["role"] for m in sent["messages"]]
    assert roles == ["user", "assistant", "user", "assistant"]
    assert sent["messages"][0]["content"][0]["text"] == "[Start a new chat]"
    assert sent["messages"][-1]["content"][-1]["text"] == "Seraphina:"
    assert sent["temperature"] == 1.0 and "top_p" not in sent and sent["max_tokens"] == 300
    assert sent["stop_sequences"] == ["\nUser:"]
    assert not {"seed", "logit_bias", "n", "frequency_penalty", "presence_penalty", "top_k"} & set(sent)


def test_response_format_json_schema(oproxy, claude_backend):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    r = oclient(oproxy).chat.completions.create(**user("capital of France as JSON"), response_format={
        "type": "json_schema", "json_schema": {"name": "answer", "schema": schema}})
    assert json.loads(r.choices[0].message.content) == {"city": "Paris"}
    assert r.choices[0].finish_reason == "stop" and r.choices[0].message.tool_calls is None
    chunks = list(oclient(oproxy).chat.completions.create(**user("x"), stream=True, response_format={
        "type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}))
    assert json.loads("".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)) == {"city": "Paris"}


@pytest.mark.parametrize("kwargs,fragment", [({"n": 2}, "n=1"), ({"messages": []}, "messages"),
                                             ({"max_tokens": -5}, "max_tokens")])
def test_bad_requests_are_openai_shaped_400s(oproxy, claude_backend, kwargs, fragment):
    with pytest.raises(openai.BadRequestError) as info:
        oclient(oproxy).chat.completions.create(**{**user("hi"), **kwargs})
    assert fragment in info.value.message
    assert info.value.body["type"] == "invalid_request_error" and info.value.body["param"] is None
    assert claude_backend.requests == []


@pytest.mark.parametrize("model,exc,status", [
    ("status-429-x", openai.RateLimitError, 429), ("status-529-x", openai.InternalServerError, 503),
    ("status-404-x", openai.NotFoundError, 404), ("status-500-x", openai.InternalServerError, 500)])
def test_backend_errors_are_openai_shaped(make_oproxy, model, exc, status):
    with pytest.raises(exc) as info:
        oclient(make_oproxy(model=model)).chat.completions.create(**user("hi"))
    assert info.value.status_code == status and "Injected" in info.value.message
    assert set(info.value.body) == {"message", "type", "param", "code"}


def test_wrong_key_is_401_without_the_key(make_oproxy):
    proxy = make_oproxy(api_key="sk-ant-wrong-canary-987654321")
    with pytest.raises(openai.AuthenticationError) as info:
        oclient(proxy).chat.completions.create(**user("hi"))
    assert "sk-ant-wrong-canary-987654321" not in json.dumps(info.value.body)


def test_client_key_forwarded_as_x_api_key_when_none_configured(make_oproxy, claude_backend):
    proxy = make_oproxy(api_key=None)
    openai.OpenAI(base_url=proxy.url + "/v1", api_key=KEY, max_retries=0).chat.completions.create(**user("hi"))
    assert claude_backend.headers[-1]["x-api-key"] == KEY


@pytest.mark.parametrize("model", ["overload-mid-x", "cut-x"])
def test_midstream_failure_raises_in_the_openai_sdk(make_oproxy, model):
    proxy = make_oproxy(model=model)
    with pytest.raises(openai.APIError) as info:
        for _ in oclient(proxy).chat.completions.create(**user("tell me a long story"), stream=True):
            pass
    assert "Overloaded" in str(info.value) or "connection closed mid-answer" in str(info.value)
    raw = httpx.post(proxy.url + "/v1/chat/completions", json=user("story", stream=True)).text
    frames = [f for f in raw.split("\n\n") if f.startswith("data: ")]
    assert '"error"' in frames[-2] and frames[-1] == "data: [DONE]"  # the error, then the end (issue #9)


def test_models_in_both_dialects(oproxy, claude_backend):
    ids = [m.id for m in oclient(oproxy).models.list()]
    assert "claude-opus-4-8" in ids and "claude-sonnet-4-5" in ids  # from the backend's list, cached
    listing = httpx.get(oproxy.url + "/v1/models", headers={"Authorization": "Bearer x"}).json()
    assert listing["object"] == "list" and listing["data"][0]["object"] == "model"
    assert isinstance(listing["data"][0]["created"], int)
    amodels = anthropic.Anthropic(base_url=oproxy.url, api_key="x").models.list()
    assert amodels.data[0].type == "model" and "claude-haiku-4-5" in [m.id for m in amodels.data]
    assert claude_backend.paths.count("/v1/models?limit=1000") == 1  # asked once, then served from the cache
    windows = {m["id"]: m.get("context_length") for m in listing["data"]}
    assert windows["claude-opus-4-8"] == 1000000 and windows["claude-haiku-4-5"] == 200000  # as the backend lists


# ---- pass-through -------------------------------------------------------------------------------------

def test_anthropic_passthrough_maps_model_injects_key_and_keeps_stream(make_oproxy, claude_backend):
    proxy = make_oproxy(model="claude-haiku-4-5")
    c = anthropic.Anthropic(base_url=proxy.url, api_key="client-anything", max_retries=0,
                            default_headers={"anthropic-beta": "interleaved-thinking-2025-05-14"})
    body = {"model": "claude-opus-4-8", "max_tokens": 2000, "messages": [{"role": "user", "content": "THINK: hi"}],
            "thinking": {"type": "enabled", "budget_tokens": 1024}}
    made = c.messages.create(**body)
    with c.messages.stream(**body) as s:
        streamed = s.get_final_message()
    assert [b.type for b in made.content] == [b.type for b in streamed.content] == ["thinking", "text"]
    assert streamed.content[0].signature.startswith("sig_")  # signature_delta relayed untouched
    assert claude_backend.requests[-1]["model"] == "claude-haiku-4-5"
    assert claude_backend.headers[-1]["x-api-key"] == KEY
    assert claude_backend.headers[-1]["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    count = c.messages.count_tokens(model="claude-opus-4-8", messages=[{"role": "user", "content": "hi"}])
    assert count.input_tokens > 1000  # the backend's own count, not the estimate


def test_anthropic_passthrough_cut_stream_gets_error_event(make_oproxy):
    proxy = make_oproxy(model="cut-claude")
    client = anthropic.Anthropic(base_url=proxy.url, api_key="x", max_retries=0)
    with pytest.raises(anthropic.APIStatusError), client.messages.stream(
            model="claude-sonnet-5", max_tokens=100, messages=[{"role": "user", "content": "hi"}]) as s:
        s.get_final_message()


def test_openai_passthrough_is_byte_faithful(make_proxy, backend):
    proxy = make_proxy(model="fake-mapped", api_key="sk-openai-backend")
    body = {"model": "claude-sonnet-4-5", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    via_proxy = httpx.post(proxy.url + "/v1/chat/completions", json=body, headers={"Authorization": "Bearer c"}).text
    direct = httpx.post(f"http://127.0.0.1:{backend.port}/v1/chat/completions",
                        json={**body, "model": "fake-mapped"}).text
    norm = lambda t: re.sub(r'"created": \d+', '"created": 0', t)
    assert norm(via_proxy) == norm(direct)
    assert backend.requests[-2]["model"] == "fake-mapped"
    assert backend.headers[-2]["Authorization"] == "Bearer sk-openai-backend"
    r = openai.OpenAI(base_url=proxy.url + "/v1", api_key="c", max_retries=0).chat.completions.create(
        model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == "Hello from fake-mapped! You said: hi"


def test_openai_passthrough_errors_and_cut_streams(make_proxy, backend):
    with pytest.raises(openai.NotFoundError) as info:
        openai.OpenAI(base_url=make_proxy(model="unknown-model").url + "/v1", api_key="c",
                      max_retries=0).chat.completions.create(model="claude-x", messages=[{"role": "user", "content": "hi"}])
    assert "does not exist" in info.value.message
    proxy = make_proxy(model="cut-model")
    with pytest.raises(openai.APIError):
        for _ in openai.OpenAI(base_url=proxy.url + "/v1", api_key="c", max_retries=0).chat.completions.create(
                model="claude-x", stream=True, messages=[{"role": "user", "content": "a long story please"}]):
            pass


def test_a_refused_value_goes_back_to_the_client_and_teaches_nothing(make_proxy, backend):
    """Only a refused *parameter* is left out and remembered; a value out of range is the client's to fix."""
    client = openai.OpenAI(base_url=make_proxy().url + "/v1", api_key="k", max_retries=0, timeout=10)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "x"}], temperature=3)
    client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "x"}], temperature=0.0)
    assert backend.requests[-1]["temperature"] == 0.0


def test_an_output_limit_left_by_one_long_prompt_is_not_remembered():
    import claude_proxy as cp
    text = ("This model's maximum context length is 32768 tokens. However, you requested 36000 tokens "
            "(31000 in the messages, 5000 in the completion).")
    lesson = cp._learn_max_tokens(text, {"max_tokens": 5000})
    assert lesson is not None and lesson.max_tokens == 1768 and not lesson.lasting
    lasting = cp._learn_max_tokens("max_tokens is too large: 99999. This model supports at most 8192 completion "
                                   "tokens, whereas you provided 99999.", {"max_tokens": 99999})
    assert lasting is not None and lasting.lasting
