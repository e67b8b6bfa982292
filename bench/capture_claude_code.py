"""Capture a realistic Claude Code request body for the benchmark (bench/data/claude_code_request.json).

Runs the real Claude Code CLI (two turns: a Read tool loop, then --continue with a Bash tool loop) against
claude_proxy + the fake OpenAI backend, inside a loopback-only network namespace, with a recorder in front of
the proxy that saves every /v1/messages body. The last, longest one is kept: ~100 KB with a long cached system
prompt, 20+ tools with JSON schemas and a few turns of history with tool results.

    python bench/capture_claude_code.py [--claude PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

RECORDER = textwrap.dedent("""
    import json, sys
    import aiohttp
    from aiohttp import web
    out, target = sys.argv[1], sys.argv[2]
    async def relay(request):
        body = await request.read()
        if request.path == "/v1/messages":
            with open(out, "a") as fh:
                fh.write(body.decode() + "\\n")
        async with aiohttp.ClientSession() as s:
            async with s.request(request.method, target + request.path_qs, data=body,
                                 headers={k: v for k, v in request.headers.items() if k.lower() != "host"}) as r:
                resp = web.StreamResponse(status=r.status, headers={"Content-Type": r.headers.get("Content-Type", "")})
                await resp.prepare(request)
                async for chunk in r.content.iter_any():
                    await resp.write(chunk)
                await resp.write_eof()
                return resp
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", relay)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[3]), print=None, access_log=None)
""")

SCRIPT = textwrap.dedent("""
    ip link set lo up 2>/dev/null || true
    "$PY" "$ROOT/tests/fake_openai.py" --port 18801 &
    "$PY" "$ROOT/claude_proxy.py" --url 127.0.0.1:18801/v1 --port 18802 --model fake-model >/dev/null 2>&1 &
    "$PY" "$TMP/recorder.py" "$TMP/bodies.jsonl" http://127.0.0.1:18802 18803 &
    for i in $(seq 100); do (echo > /dev/tcp/127.0.0.1/18803) 2>/dev/null && break; sleep 0.1; done
    cd "$TMP/work"
    cc() { env -i PATH=/usr/bin:/bin HOME="$TMP/home" TERM=dumb ANTHROPIC_BASE_URL=http://127.0.0.1:18803 \\
        ANTHROPIC_API_KEY=dummy DISABLE_TELEMETRY=1 DISABLE_ERROR_REPORTING=1 DISABLE_AUTOUPDATER=1 \\
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 timeout 120 "$CLAUDE" "$@" --output-format json >/dev/null; }
    cc -p "Read the notes. TOOL_CALL:Read:{\\"file_path\\":\\"$TMP/work/notes.md\\"}" --allowedTools Read \\
        --model claude-sonnet-4-5
    cc --continue -p "Now list the files. TOOL_CALL:Bash:{\\"command\\":\\"ls -la\\"}" --allowedTools "Bash(ls:*)" \\
        --model claude-sonnet-4-5
    kill %1 %2 %3
""")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--claude", default=os.environ.get("CLAUDE_BIN") or shutil.which("claude") or os.path.join(
        ROOT, "tests", ".claude-code", "node_modules", ".bin", "claude"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.makedirs(os.path.join(tmp, "work"))
        os.makedirs(os.path.join(tmp, "home"))
        with open(os.path.join(tmp, "work", "notes.md"), "w") as fh:
            fh.write("# Notes\n\n" + "The proxy must keep the agent loop working on every backend.\n" * 40)
        with open(os.path.join(tmp, "recorder.py"), "w") as fh:
            fh.write(RECORDER)
        env = {**os.environ, "PY": sys.executable, "ROOT": ROOT, "TMP": tmp, "CLAUDE": args.claude}
        subprocess.run(["unshare", "-n", "bash", "-c", SCRIPT], env=env, check=True, timeout=300)
        with open(os.path.join(tmp, "bodies.jsonl"), encoding="utf-8") as fh:
            bodies = [json.loads(line) for line in fh]
    body = max(bodies, key=lambda b: len(b["messages"]))
    dest = os.path.join(HERE, "data", "claude_code_request.json")
    with open(dest, "w") as fh:
        json.dump(body, fh)
    print(f"{len(bodies)} requests recorded; kept one with {len(body['messages'])} messages, "
          f"{len(body.get('tools', []))} tools, {os.path.getsize(dest)} bytes → {dest}")


if __name__ == "__main__":
    main()
