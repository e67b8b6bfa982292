"""End to end with the real Claude Code CLI from npm: claude -p → claude_proxy → strict fake OpenAI backend.

Everything runs inside a private network namespace that has only loopback (``unshare -n``), so nothing can leave
127.0.0.1. Install the CLI with the README's test command (``npm install --prefix tests/.claude-code ...``), or
point ``CLAUDE_BIN`` at one. Set ``CLAUDE_PROXY_SKIP_CLI=1`` to skip deliberately; a missing CLI otherwise fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def cli_binary(env_var: str, prefix: str, name: str, package: str) -> str:
    """The CLI to run end to end: ``$env_var``, the README's npm install under ``tests/<prefix>``, or PATH.
    Skipped with CLAUDE_PROXY_SKIP_CLI=1; a missing CLI otherwise fails."""
    if os.environ.get("CLAUDE_PROXY_SKIP_CLI") == "1":
        pytest.skip("CLAUDE_PROXY_SKIP_CLI=1")
    for candidate in (os.environ.get(env_var), os.path.join(HERE, prefix, "node_modules", ".bin", name),
                      shutil.which(name)):
        if candidate and os.path.exists(candidate):
            return candidate
    pytest.fail(f"{name} not found: run `npm install --prefix tests/{prefix} {package}` (the README's test command "
                f"does) or set {env_var}")


def namespace_prefix() -> list[str]:
    """The loopback-only namespace wrapper this machine allows (root: unshare -n; else a user namespace)."""
    for prefix in (["unshare", "-n"], ["unshare", "-rn"]):
        try:
            if subprocess.run(prefix + ["true"], capture_output=True, timeout=10, check=False).returncode == 0:
                return prefix
        except (OSError, subprocess.TimeoutExpired):
            continue
    pytest.fail("cannot create a loopback-only network namespace (unshare -n / -rn); the Claude Code end-to-end "
                "test must not run on a networked host")


SCRIPT = textwrap.dedent("""\
    set -u
    ip link set lo up 2>/dev/null || true
    "$PY" "$TESTS/fake_openai.py" --port 18931 --log "$OUT/backend.jsonl" 2>"$OUT/backend.err" &
    "$PY" "$TESTS/fake_search.py" searxng --port 18933 2>"$OUT/search.err" &
    "$PY" "$TESTS/fake_responses.py" --port 18935 --log "$OUT/responses.jsonl" 2>"$OUT/responses.err" &
    "$PY" "$ROOT/claude_proxy.py" --url 127.0.0.1:18935/v1 --backend responses --port 18934 --model gpt-5-reason \\
        --reasoning-effort high --log-level debug 2>"$OUT/proxy-responses.log" >/dev/null &
    "$PY" "$ROOT/claude_proxy.py" --url 127.0.0.1:18931/v1 --port 18932 --model fake-main \\
        --haiku-model fake-haiku --opus-model fake-gemini-3 --log-level debug \\
        --web-search searxng --web-search-url 127.0.0.1:18933 2>"$OUT/proxy.log" >"$OUT/proxy.out" &
    for i in $(seq 100); do (echo > /dev/tcp/127.0.0.1/18932) 2>/dev/null && break; sleep 0.1; done
    for i in $(seq 100); do (echo > /dev/tcp/127.0.0.1/18933) 2>/dev/null && break; sleep 0.1; done
    for i in $(seq 100); do (echo > /dev/tcp/127.0.0.1/18934) 2>/dev/null && break; sleep 0.1; done
    cd "$WORK"
    run() {
        name=$1; shift
        env -i PATH=/usr/bin:/bin HOME="$CCHOME" TERM=dumb ANTHROPIC_BASE_URL=http://127.0.0.1:${PROXY_PORT:-18932} \\
            ANTHROPIC_API_KEY=dummy-client-key DISABLE_TELEMETRY=1 DISABLE_ERROR_REPORTING=1 \\
            DISABLE_AUTOUPDATER=1 CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 ${EXTRA_ENV:-} \\
            timeout 120 "$CLAUDE" "$@" --output-format json >"$OUT/$name.json" 2>"$OUT/$name.err"
        echo $? >"$OUT/$name.rc"
    }
    run hello -p "hello there" --model sonnet
    run read -p "Read the file. TOOL_CALL:Read:{\\"file_path\\":\\"$WORK/secret.txt\\"}" --allowedTools Read --model haiku
    run bash -p "List files. TOOL_CALL:Bash:{\\"command\\":\\"ls\\",\\"description\\":\\"List files\\"}" \\
        --allowedTools "Bash(ls:*)"
    run parallel -p "Both. TOOL_CALL:Read:{\\"file_path\\":\\"$WORK/secret.txt\\"} TOOL_CALL:Bash:{\\"command\\":\\"ls\\"}" \\
        --allowedTools Read "Bash(ls:*)" --model sonnet
    run gemini -p "Read it. TOOL_CALL:Read:{\\"file_path\\":\\"$WORK/secret.txt\\"}" --allowedTools Read --model opus
    run textcalls -p "Read it. TOOL_CALL:Read:{\\"file_path\\":\\"$WORK/secret.txt\\"}" --allowedTools Read \\
        --model textcalls-hermes-noparser
    run websearch -p "Look it up. TOOL_CALL:WebSearch:{\\"query\\":\\"aiohttp streaming\\"}" --allowedTools WebSearch
    MCP="{\\"mcpServers\\":{\\"fake\\":{\\"command\\":\\"$PY\\",\\"args\\":[\\"$TESTS/fake_mcp.py\\"]}}}"
    EXTRA_ENV=ENABLE_TOOL_SEARCH=true run deferred \\
        -p "Find it. TOOL_CALL:ToolSearch:{\\"query\\":\\"select:mcp__fake__shout\\"} DEFERRED-RUN" \\
        --mcp-config "$MCP" --allowedTools ToolSearch
    PROXY_PORT=18934 run responses -p "THINK: Read it. TOOL_CALL:Read:{\\"file_path\\":\\"$WORK/secret.txt\\"}" \\
        --allowedTools Read --model sonnet
    kill %1 %2 %3 %4 %5
    wait
""")


@pytest.fixture(scope="module")
def claude_run(tmp_path_factory):
    claude = cli_binary("CLAUDE_BIN", ".claude-code", "claude", "@anthropic-ai/claude-code")
    base = tmp_path_factory.mktemp("cc")
    out, work, home = base / "out", base / "work", base / "home"
    for d in (out, work, home):
        d.mkdir()
    (work / "secret.txt").write_text("The secret word is PINEAPPLE-42.\n")
    (work / "notes.md").write_text("notes\n")
    env = {**os.environ, "PY": sys.executable, "TESTS": HERE, "ROOT": ROOT, "OUT": str(out), "WORK": str(work),
           "CCHOME": str(home), "CLAUDE": claude}
    proc = subprocess.run(namespace_prefix() + ["bash", "-c", SCRIPT], env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    requests = [json.loads(line) for line in (out / "backend.jsonl").read_text().splitlines()] \
        if (out / "backend.jsonl").exists() else []
    return {"out": out, "proc": proc, "requests": requests, "proxy_log": (out / "proxy.log").read_text()}


def result(run: dict, name: str) -> dict:
    out = run["out"]
    rc = (out / f"{name}.rc").read_text().strip()
    text = (out / f"{name}.json").read_text()
    assert rc == "0", f"claude -p ({name}) exited {rc}: {text[-2000:]}\n{(out / f'{name}.err').read_text()[-2000:]}" \
                      f"\nproxy log:\n{run['proxy_log'][-3000:]}"
    data = json.loads(text)
    assert data["type"] == "result" and data["subtype"] == "success" and not data["is_error"], data
    return data


def test_hello_on_sonnet(claude_run):
    data = result(claude_run, "hello")
    assert data["result"].startswith("Hello from fake-main! You said: ")
    assert data["usage"]["input_tokens"] > 0 and data["usage"]["output_tokens"] > 0


def test_read_tool_loop_on_haiku(claude_run):
    data = result(claude_run, "read")
    assert data["num_turns"] == 2
    assert "PINEAPPLE-42" in data["result"], data["result"]


def test_bash_tool_loop(claude_run):
    data = result(claude_run, "bash")
    assert "notes.md" in data["result"] and "secret.txt" in data["result"], data["result"]


def test_parallel_tools(claude_run):
    data = result(claude_run, "parallel")
    assert "PINEAPPLE-42" in data["result"] and "notes.md" in data["result"], data["result"]


def test_gemini_3_signatures_through_claude_code(claude_run):
    data = result(claude_run, "gemini")  # the fake refuses the second turn unless the signature came back
    assert "PINEAPPLE-42" in data["result"], data["result"]
    signed = [c for r in claude_run["requests"] if r["model"] == "fake-gemini-3"
              for m in r["messages"] if m["role"] == "assistant" for c in m.get("tool_calls") or []]
    assert signed and all(c["extra_content"]["google"]["thought_signature"].startswith("sig/") for c in signed)


def test_tool_calls_written_as_text_run_through_claude_code(claude_run):
    """A vLLM without a tool parser: it refuses tool_choice "auto", and with "none" its Hermes-style
    <tool_call> text comes back as a tool_use that Claude Code runs."""
    data = result(claude_run, "textcalls")
    assert data["num_turns"] == 2 and "PINEAPPLE-42" in data["result"], data["result"]
    assert "<tool_call>" not in data["result"]
    sent = [r for r in claude_run["requests"] if r["model"] == "textcalls-hermes-noparser"]
    assert sent[0].get("tool_choice") is None and all(r.get("tool_choice") == "none" for r in sent[1:]), \
        [r.get("tool_choice") for r in sent]
    assert any(m["role"] == "tool" and "PINEAPPLE-42" in json.dumps(m["content"]) for m in sent[-1]["messages"])


def test_web_search_through_claude_code_returns_the_providers_results(claude_run):
    """Claude Code's WebSearch asks for Anthropic's server tool; the proxy runs it with the (fake) SearXNG."""
    data = result(claude_run, "websearch")
    assert "aiohttp streaming - result 1" in data["result"], data["result"]  # a title, back through the loop
    searches = [r for r in claude_run["requests"] if any(t["function"]["name"] == "web_search"
                                                         for t in r.get("tools", []))]
    assert searches and searches[0]["tool_choice"] == {"type": "function", "function": {"name": "web_search"}}
    assert "https://docs.example.com/" in searches[-1]["messages"][-1]["content"]  # the model got the results
    assert "stream ended in error" not in claude_run["proxy_log"], claude_run["proxy_log"][-3000:]


def test_deferred_tools_through_claude_code_are_offered_once_loaded(claude_run):
    """With tool search on, Claude Code defers its MCP tools; the backend sees one only after ToolSearch loads
    it."""
    result(claude_run, "deferred")
    runs = [r for r in claude_run["requests"] if "DEFERRED-RUN" in json.dumps(r["messages"][:3])]
    offered = [[t["function"]["name"] for t in r.get("tools", [])] for r in runs]
    assert offered and "ToolSearch" in offered[0], offered
    assert not any(n.startswith("mcp__fake__") for n in offered[0]), offered[0]
    assert "mcp__fake__shout" in offered[-1] and "mcp__fake__echo" not in offered[-1], offered[-1]


def test_a_responses_backend_runs_claude_codes_tool_loop_with_reasoning_carried(claude_run):
    """The fake's reasoning model refuses a tool result whose turn's reasoning item did not come back."""
    data = result(claude_run, "responses")
    assert data["num_turns"] == 2 and "PINEAPPLE-42" in data["result"], data["result"]
    sent = [json.loads(line) for line in (claude_run["out"] / "responses.jsonl").read_text().splitlines()]
    replayed = [i for r in sent for i in r["input"] if i.get("type") == "reasoning"]
    assert replayed and all(i["encrypted_content"] and "status" not in i for i in replayed)
    assert all(r["store"] is False and r["stream"] is True for r in sent)


def test_every_backend_request_streamed_and_was_valid(claude_run):
    for name in ("hello", "read", "bash", "parallel", "gemini", "textcalls", "websearch", "deferred"):
        result(claude_run, name)
    reqs = claude_run["requests"]
    assert len(reqs) >= 7, len(reqs)
    # no request fell back to non-streaming: Claude Code only does that after a broken stream
    # (but the server tool rounds: the proxy asks for whole answers to run the tools between them)
    assert all(r.get("stream") is True for r in reqs if not any(t["function"]["name"] == "web_search"
                                                                for t in r.get("tools", []))), \
        [r.get("stream") for r in reqs]
    models = {r["model"] for r in reqs}
    assert models == {"fake-main", "fake-haiku", "fake-gemini-3", "textcalls-hermes-noparser"}, models
    assert "→ 4" not in claude_run["proxy_log"] and "→ 5" not in claude_run["proxy_log"], claude_run["proxy_log"]
    tool_turns = [r for r in reqs if any(m["role"] == "tool" for m in r["messages"])]
    assert len(tool_turns) >= 3
    assert "dummy-client-key" not in claude_run["proxy_log"]
