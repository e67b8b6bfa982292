"""Benchmark: claude_proxy against the backend itself and against claude-code-router, side by side in one run.

    python bench/bench.py [--duration 5] [--connections 10] [--workers 1] [--no-peer] [--json results.json]

Starts on 127.0.0.1: a fast fake OpenAI-compatible backend (JSON, and SSE with 50 content chunks), claude_proxy,
and, when npm is available, @musistudio/claude-code-router (installed into bench/.cache) against the same
backend. Drives each with the same concurrent load (wrk if installed, else the async load generator below, in
its own process) and prints requests/s and p50/p99 latency for a small JSON request, a small streaming request and
a streaming request with a real ~120 KB Claude Code body (bench/data/claude_code_request.json, captured with
bench/capture_claude_code.py); the ratios proxy/direct and proxy/peer; the latency the proxy adds at
concurrency 1; and resident memory with 1000 concurrent slowly trickling streams. Every run is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
CACHE = os.path.join(HERE, ".cache")
CHUNKS = 50


# ---- the fast fake backend (a subcommand, so it runs in its own process) ---------------------------------------

def run_backend(port: int) -> None:
    from aiohttp import web
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    created = int(time.time())

    def frame(delta: dict, finish=None, usage=None) -> bytes:
        chunk = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": created, "model": "fake-model",
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if usage is None else []}
        if usage:
            chunk["usage"] = usage
        return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"

    words = [f"word{i} " for i in range(CHUNKS)]
    stream_frames = [frame({"role": "assistant", "content": ""})] + [frame({"content": w}) for w in words] + [
        frame({}, "stop"), frame({}, usage={"prompt_tokens": 20, "completion_tokens": CHUNKS, "total_tokens": 70}),
        b"data: [DONE]\n\n"]
    stream_body = b"".join(stream_frames)
    json_body = json.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": created, "model": "fake-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! How can I help?"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27}}).encode()

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if b'"stream":true' not in body.replace(b" ", b""):
            return web.Response(body=json_body, content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if b"TRICKLE" in body:  # the memory test: a stream that stays open, one chunk a second
            for f in stream_frames:
                await resp.write(f)
                await asyncio.sleep(1.0)
        else:
            await resp.write(stream_body)
        await resp.write_eof()
        return resp

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, backlog=4096)


# ---- a load generator for machines without wrk (also a subcommand: its own process) ---------------------------

def run_loadgen(url: str, body_file: str, headers: dict, connections: int, duration: float) -> None:
    import aiohttp

    async def main() -> dict:
        body = open(body_file, "rb").read()
        latencies: list[float] = []
        errors = 0
        deadline = time.monotonic() + duration
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            async def worker() -> None:
                nonlocal errors
                while time.monotonic() < deadline:
                    t = time.monotonic()
                    async with session.post(url, data=body, headers=headers) as r:
                        await r.read()
                        if r.status != 200:
                            errors += 1
                    latencies.append(time.monotonic() - t)
            await asyncio.gather(*(worker() for _ in range(connections)))
        latencies.sort()
        return {"rps": len(latencies) / duration, "p50": latencies[len(latencies) // 2] * 1000,
                "p99": latencies[int(len(latencies) * 0.99)] * 1000, "errors": errors}

    print(json.dumps(asyncio.run(main())))


def run_holdstreams(url: str, body_file: str, headers: dict, count: int) -> None:
    """Open ``count`` streams, report when all have their first bytes, hold them until stdin closes."""
    import aiohttp

    async def main() -> None:
        body = open(body_file, "rb").read()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            responses = await asyncio.gather(*(session.post(url, data=body, headers=headers) for _ in range(count)))
            await asyncio.gather(*(r.content.readany() for r in responses))
            ok = sum(1 for r in responses if r.status == 200)
            print(json.dumps({"open": ok}), flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
            for r in responses:
                r.close()

    asyncio.run(main())


# ---- orchestration -------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited early: {proc.args}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port} after {seconds}s: {proc.args}")


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


LOG = os.path.join(tempfile.gettempdir(), "claude_proxy_bench.log")


def spawn(args: list[str], env: dict | None = None, port: int | None = None) -> subprocess.Popen:
    # output to a file, never an unread pipe: a full pipe would block the process being measured
    with open(LOG, "a") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=log, env=env, preexec_fn=raise_nofile,
                                start_new_session=True)
    if port:
        wait_port(port, proc)
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (workers), in MB."""
    total = 0
    pids = [pid]
    try:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
        pids += [int(p) for p in out.split()]
    except OSError:
        pass
    for p in pids:
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def install_ccr() -> str | None:
    if not shutil.which("npm"):
        return None
    binary = os.path.join(CACHE, "ccr", "node_modules", ".bin", "ccr")
    if not os.path.exists(binary):
        os.makedirs(os.path.join(CACHE, "ccr"), exist_ok=True)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", os.path.join(CACHE, "ccr"),
                        "@musistudio/claude-code-router"], check=True, capture_output=True, timeout=300)
    return binary


def start_ccr(binary: str, backend_port: int, port: int, home: str) -> subprocess.Popen:
    os.makedirs(os.path.join(home, ".claude-code-router"), exist_ok=True)
    config = {"LOG": False, "HOST": "127.0.0.1", "PORT": port, "APIKEY": "ccr-bench-key", "API_TIMEOUT_MS": 600000,
              "Providers": [{"name": "fake", "api_base_url": f"http://127.0.0.1:{backend_port}/v1/chat/completions",
                             "api_key": "dummy", "models": ["fake-model"]}],
              "Router": {k: "fake,fake-model" for k in ("default", "background", "think", "longContext")} | {
                  "longContextThreshold": 60000}}
    with open(os.path.join(home, ".claude-code-router", "config.json"), "w") as fh:
        json.dump(config, fh)
    return spawn([binary, "start"], env={**os.environ, "HOME": home}, port=port)


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m)", text)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


def use_wrk() -> bool:
    return bool(shutil.which("wrk")) and os.environ.get("BENCH_NO_WRK") != "1"


def run_load(url: str, body: bytes, headers: dict, connections: int, duration: float, tmp: str) -> dict:
    body_file = os.path.join(tmp, f"body-{abs(hash(body))}.json")
    with open(body_file, "wb") as fh:
        fh.write(body)
    if use_wrk():
        script = os.path.join(tmp, "post.lua")
        with open(script, "w") as fh:
            fh.write('wrk.method = "POST"\n')
            for k, v in headers.items():
                fh.write(f'wrk.headers["{k}"] = "{v}"\n')
            fh.write(f'local f = io.open("{body_file}", "rb")\nwrk.body = f:read("*a")\nf:close()\n')
        seconds = max(1, round(duration))  # wrk takes whole seconds
        out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script, url],
                             capture_output=True, text=True, timeout=duration + 60).stdout
        rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
        p50 = re.search(r"50%\s+([\d.]+\w+)", out)
        p99 = re.search(r"99%\s+([\d.]+\w+)", out)
        bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
        errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        return {"rps": float(rps.group(1)) if rps else 0.0, "p50": _ms(p50.group(1)) if p50 else float("nan"),
                "p99": _ms(p99.group(1)) if p99 else float("nan"),
                "errors": (int(bad.group(1)) if bad else 0) + (sum(map(int, errs.groups())) if errs else 0)}
    out = subprocess.run([sys.executable, __file__, "loadgen", url, body_file, json.dumps(headers), str(connections),
                          str(duration)], capture_output=True, text=True, timeout=duration + 60).stdout
    return json.loads(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load run")
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1, help="claude_proxy --workers")
    parser.add_argument("--streams", type=int, default=1000, help="open streams for the memory figure")
    parser.add_argument("--no-peer", action="store_true", help="skip claude-code-router")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    import claude_proxy
    cc_body = json.load(open(os.path.join(HERE, "data", "claude_code_request.json")))
    cc_body["stream"] = True
    small = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
    anthropic_bodies = {"small JSON": small, "small stream": {**small, "stream": True},
                        "Claude Code 120 KB stream": cc_body}
    openai_bodies = {name: claude_proxy.anthropic_to_openai_request(b, "fake-model")
                     for name, b in anthropic_bodies.items()}

    cores = os.cpu_count()
    tools = "wrk" if use_wrk() else "built-in async load generator"
    print(f"machine: {cores} cores; load: {tools}, {args.connections} connections, {args.duration:g}s per run; "
          f"claude_proxy workers: {args.workers}; orjson: {_has('orjson')}, "
          f"uvloop: {_has('uvloop')}")
    results: dict = {"cores": cores, "load": tools, "connections": args.connections, "runs": {}}
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            bport, pport = free_port(), free_port()
            procs.append(spawn([sys.executable, __file__, "backend", str(bport)], port=bport))
            procs.append(spawn([sys.executable, os.path.join(ROOT, "claude_proxy.py"), "--url",
                                f"127.0.0.1:{bport}/v1", "--model", "fake-model", "--port", str(pport),
                                "--workers", str(args.workers)], port=pport))
            proxy_pid = procs[-1].pid
            targets = {"direct": (f"http://127.0.0.1:{bport}/v1/chat/completions", {
                "Content-Type": "application/json", "Authorization": "Bearer dummy"}),
                "claude_proxy": (f"http://127.0.0.1:{pport}/v1/messages", {
                    "Content-Type": "application/json", "x-api-key": "dummy", "anthropic-version": "2023-06-01"})}
            ccr_pid = None
            if not args.no_peer:
                try:
                    binary = install_ccr()
                except (subprocess.SubprocessError, OSError) as exc:
                    binary = None
                    print(f"claude-code-router not available: {exc}")
                if binary:
                    cport = free_port()
                    procs.append(start_ccr(binary, bport, cport, os.path.join(tmp, "ccr-home")))
                    ccr_pid = procs[-1].pid
                    targets["claude-code-router"] = (f"http://127.0.0.1:{cport}/v1/messages", {
                        "Content-Type": "application/json", "x-api-key": "ccr-bench-key",
                        "anthropic-version": "2023-06-01"})
            time.sleep(0.5)
            for scenario in anthropic_bodies:
                for target, (url, headers) in targets.items():
                    body = openai_bodies[scenario] if target == "direct" else anthropic_bodies[scenario]
                    run_load(url, json.dumps(body).encode(), headers, args.connections, 1.0, tmp)  # warm-up
                    r = run_load(url, json.dumps(body).encode(), headers, args.connections, args.duration, tmp)
                    results["runs"][f"{scenario} | {target}"] = r
            latency = {}
            for target in ("direct", "claude_proxy"):
                url, headers = targets[target]
                body = openai_bodies["small JSON"] if target == "direct" else anthropic_bodies["small JSON"]
                latency[target] = run_load(url, json.dumps(body).encode(), headers, 1, min(args.duration, 3), tmp)
            results["latency_c1"] = latency
            results["memory"] = {}
            for target, pid in (("claude_proxy", proxy_pid), ("claude-code-router", ccr_pid)):
                if pid is None:
                    continue
                url, headers = targets[target]
                body = {**small, "stream": True, "messages": [{"role": "user", "content": "TRICKLE please"}]}
                results["memory"][target] = hold_streams(url, body, headers, args.streams, pid, tmp)
        finally:
            for p in reversed(procs):
                stop(p)
    report(results, list(targets))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


def _has(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def hold_streams(url: str, body: dict, headers: dict, count: int, pid: int, tmp: str) -> dict:
    body_file = os.path.join(tmp, "trickle.json")
    with open(body_file, "w") as fh:
        json.dump(body, fh)
    idle = rss_mb(pid)
    holder = subprocess.Popen([sys.executable, __file__, "holdstreams", url, body_file, json.dumps(headers),
                               str(count)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              preexec_fn=raise_nofile)
    try:
        line = holder.stdout.readline()
        opened = json.loads(line)["open"] if line else 0
        time.sleep(1.0)
        loaded = rss_mb(pid)
    finally:
        holder.stdin.close()
        holder.wait(30)
    return {"streams": opened, "rss_idle_mb": round(idle, 1), "rss_mb": round(loaded, 1)}


def report(results: dict, targets: list[str]) -> None:
    runs = results["runs"]
    print()
    print(f"{'scenario':28} {'target':20} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}"
          f" {'/direct':>8} {'/peer':>7}")
    for key, r in runs.items():
        scenario, target = key.split(" | ")
        direct = runs.get(f"{scenario} | direct", {}).get("rps") or float("nan")
        peer = runs.get(f"{scenario} | claude-code-router", {}).get("rps")
        vs_peer = f"{r['rps'] / peer:7.2f}x" if peer and target == "claude_proxy" else ""
        vs_direct = f"{r['rps'] / direct:7.2f}x" if target != "direct" else ""
        print(f"{scenario:28} {target:20} {r['rps']:9.1f} {r['p50']:8.2f} {r['p99']:8.2f} {r['errors']:6}"
              f" {vs_direct:>8} {vs_peer:>7}")
    lat = results.get("latency_c1", {})
    if lat:
        added = lat["claude_proxy"]["p50"] - lat["direct"]["p50"]
        print(f"\nadded latency at concurrency 1 (p50, small JSON): {added:.3f} ms "
              f"(direct {lat['direct']['p50']:.3f} ms, via claude_proxy {lat['claude_proxy']['p50']:.3f} ms)")
        results["added_latency_ms"] = added
    for target, m in results.get("memory", {}).items():
        print(f"resident memory, {target}: {m['rss_mb']} MB with {m['streams']} open streams "
              f"(idle {m['rss_idle_mb']} MB)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "backend":
        run_backend(int(sys.argv[2]))
    elif len(sys.argv) > 1 and sys.argv[1] == "loadgen":
        run_loadgen(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]))
    elif len(sys.argv) > 1 and sys.argv[1] == "holdstreams":
        run_holdstreams(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), int(sys.argv[5]))
    else:
        main()
