"""End to end with the real Codex CLI from npm (@openai/codex, ``codex exec``), configured by ``setup-codex``:
Codex → claude_proxy's Responses door → the strict fake Chat Completions backend, inside a network namespace that
has only loopback (``unshare -n``). Codex runs a shell command and an ``apply_patch`` edit (its freeform custom tool) that the
backend model asks for. Install the CLI with the README's test command, or point ``CODEX_BIN`` at one; set
``CLAUDE_PROXY_SKIP_CLI=1`` to skip deliberately; a missing CLI otherwise fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from test_claude_code import cli_binary, namespace_prefix

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PATCH = "*** Begin Patch\\n*** Add File: hello.txt\\n+hello from codex\\n*** End Patch\\n"  # JSON escapes

SCRIPT = textwrap.dedent("""\
    set -u
    ip link set lo up 2>/dev/null || true
    "$PY" "$TESTS/fake_openai.py" --port 18951 --log "$OUT/backend.jsonl" 2>"$OUT/backend.err" &
    "$PY" "$ROOT/claude_proxy.py" --url 127.0.0.1:18951/v1 --port 18952 --model fake-model --log-level debug \\
        --proxy-key pk-codex-0001 2>"$OUT/proxy.log" >"$OUT/proxy.out" &
    "$PY" "$ROOT/claude_proxy.py" --port 18952 --proxy-key pk-codex-0001 setup-codex \\
        --codex-config "$CXHOME/.codex/config.toml" >"$OUT/setup.out" 2>&1
    for i in $(seq 100); do (echo > /dev/tcp/127.0.0.1/18952) 2>/dev/null && break; sleep 0.1; done
    cd "$WORK"
    run() {
        name=$1; shift
        env -i PATH=/usr/bin:/bin HOME="$CXHOME" CODEX_HOME="$CXHOME/.codex" TERM=dumb \\
            CLAUDE_PROXY_KEY=pk-codex-0001 timeout 120 "$CODEX" exec --skip-git-repo-check \\
            --dangerously-bypass-approvals-and-sandbox --output-last-message "$OUT/$name.last" "$@" \\
            >"$OUT/$name.out" 2>"$OUT/$name.err"
        echo $? >"$OUT/$name.rc"
    }
    run shell 'Make the file. TOOL_CALL:exec_command:{"cmd":"echo codex-was-here > made.txt && ls"}'
    run patch "Add hello.txt. TOOL_CALL:apply_patch:{\\"input\\":\\"$PATCH\\"}"
    kill %1 %2
    wait
""")


@pytest.fixture(scope="module")
def codex_run(tmp_path_factory):
    codex = cli_binary("CODEX_BIN", ".codex", "codex", "@openai/codex")
    base = tmp_path_factory.mktemp("codex")
    out, work, home = base / "out", base / "work", base / "home"
    for d in (out, work, home, home / ".codex"):
        d.mkdir()
    env = {**os.environ, "PY": sys.executable, "TESTS": HERE, "ROOT": ROOT, "OUT": str(out), "WORK": str(work),
           "CXHOME": str(home), "CODEX": codex, "PATCH": PATCH}
    proc = subprocess.run(namespace_prefix() + ["bash", "-c", SCRIPT], env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    requests = [json.loads(line) for line in (out / "backend.jsonl").read_text().splitlines()] \
        if (out / "backend.jsonl").exists() else []
    return {"out": out, "work": work, "proc": proc, "requests": requests,
            "proxy_log": (out / "proxy.log").read_text()}


def result(run: dict, name: str) -> str:
    out = run["out"]
    rc = (out / f"{name}.rc").read_text().strip()
    assert rc == "0", f"codex exec ({name}) exited {rc}: {(out / f'{name}.out').read_text()[-2000:]}\n" \
                      f"{(out / f'{name}.err').read_text()[-3000:]}\nproxy log:\n{run['proxy_log'][-3000:]}"
    return (out / f"{name}.last").read_text()


def test_codex_runs_a_shell_command_the_model_asks_for(codex_run):
    last = result(codex_run, "shell")
    assert (codex_run["work"] / "made.txt").read_text().strip() == "codex-was-here"
    assert "Tool result received:" in last and "made.txt" in last, last


def test_codex_applies_a_patch_through_its_freeform_tool(codex_run):
    last = result(codex_run, "patch")
    assert (codex_run["work"] / "hello.txt").read_text() == "hello from codex\n"
    assert "Tool result received:" in last, last
    offered = [t["function"]["name"] for r in codex_run["requests"] for t in r.get("tools", [])]
    assert "apply_patch" in offered and "web_search" not in offered  # the hosted tool was left out


def test_every_codex_request_streamed_through_the_responses_door(codex_run):
    for name in ("shell", "patch"):
        result(codex_run, name)
    assert codex_run["requests"] and all(r["model"] == "fake-model" for r in codex_run["requests"])
    assert "→ 4" not in codex_run["proxy_log"] and "→ 5" not in codex_run["proxy_log"]
    assert "openai→openai:default gpt-5.5→fake-model route=--model stream 200" in codex_run["proxy_log"]
