"""Claude Code on the servers people actually run (issue #10): chat templates that take a system message only
first. Claude Code sends ``role: "system"`` turns inside ``messages``; a Qwen 3 template refuses them (400 on vLLM,
SGLang and current llama.cpp; HTTP 500 on Ollama). The fake backend answers the same way for ``*qwen3*`` models."""

from __future__ import annotations

import anthropic
import pytest

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
