"""Benchmark: claude_proxy against the backend itself and against claude-code-router, side by side in one run.

    python bench/bench.py [--duration 5] [--connections 10] [--workers 1] [--trickle-gap-ms 1] [--no-peer]
                          [--json results.json] [--proxy path/to/claude_proxy.py]

Starts on 127.0.0.1: a fast fake OpenAI-compatible backend (JSON, and SSE with 50 content chunks), claude_proxy,
and, when npm is available, @musistudio/claude-code-router (installed into bench/.cache) against the same
backend. Drives each with the same concurrent load (wrk if installed, else the async load generator below, in
its own process) and prints requests/s, p50/p99 latency and the CPU milliseconds each server process spent per
request, for:

- a small JSON request, a small streaming request and a streaming request with a real ~120 KB Claude Code body
  (bench/data/claude_code_request.json, captured with bench/capture_claude_code.py); the backend writes those
  streams in one piece, so they measure per-request cost;
- a trickled stream: the same 50 chunks, each its own socket write a little apart, as a real model sends them,
  so the proxy reads (and translates) them one at a time and the per-chunk cost shows; through claude_proxy
  translated (Anthropic client) and through claude-code-router;
- the same trickled stream in pass-through (an OpenAI client to claude_proxy's /v1/chat/completions; the
  backend speaks the same dialect, so the proxy relays bytes): the cost of the HTTP plumbing alone.

Also the ratios proxy/direct and proxy/peer; CPU per request translated ÷ pass-through and peer ÷ claude_proxy;
how many network reads claude_proxy sees per trickled stream (a check that the trickle is real); the latency the
proxy adds at concurrency 1; and resident memory with 1000 concurrent slowly trickling streams. Every run is
bounded in time.
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
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CACHE = os.path.join(HERE, ".cache")
CHUNKS = 50
FRAMES = CHUNKS + 4  # role chunk, 50 words, finish chunk, usage chunk, [DONE]
# Words in the user message that tell the fake backend how to send its stream:
TRICKLE = "TRICKLE"  # each frame its own write, --trickle-gap-ms apart (the trickled scenarios)
HOLD = "HOLD-OPEN"  # one frame a second (the memory figure: streams that stay open)
TRICKLED = "trickled stream"
PASS_THROUGH = "trickled stream, pass-through"
SMALL = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}


# ---- the fast fake backend (a subcommand, so it runs in its own process) ---------------------------------------

def run_backend(port: int, trickle_gap: float) -> None:
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
    assert len(stream_frames) == FRAMES
    stream_body = b"".join(stream_frames)
    json_body = json.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": created, "model": "fake-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! How can I help?"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27}}).encode()

    async def trickle(resp: web.StreamResponse, gap: float) -> None:
        # aiohttp hands every write straight to the socket (it buffers only past 64 KB, and the server sets
        # TCP_NODELAY), so each frame leaves as its own TCP segment; the gap lets the proxy read it before the
        # next one lands, as with a real model. Without a gap a busy proxy would find several frames per read.
        for f in stream_frames:
            await resp.write(f)
            await asyncio.sleep(gap)

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if b'"stream":true' not in body.replace(b" ", b""):
            return web.Response(body=json_body, content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if HOLD.encode() in body:
            await trickle(resp, 1.0)
        elif TRICKLE.encode() in body:
            await trickle(resp, trickle_gap)
        else:
            await resp.write(stream_body)  # all 50 chunks in one write: the proxy gets them in one read
        await resp.write_eof()
        return resp

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, backlog=4096)


# ---- claude_proxy with a read counter (a subcommand; only for the check that trickled reads are real) ----------

def run_counting_proxy(out_file: str, proxy_file: str, proxy_args: list[str]) -> None:
    """claude_proxy, unchanged, except that every network read it takes from a backend stream is counted (the
    stream translator and pass-through both read with ``StreamReader.iter_any``). SIGUSR1 writes
    ``{"streams", "reads"}`` to ``out_file``. The timed runs use the plain proxy, never this one."""
    from aiohttp import StreamReader
    sys.path.insert(0, os.path.dirname(os.path.abspath(proxy_file)))
    import claude_proxy
    counts = {"streams": 0, "reads": 0}
    iter_any = StreamReader.iter_any

    async def counted(self):
        counts["streams"] += 1
        async for chunk in iter_any(self):
            counts["reads"] += 1
            yield chunk

    def dump(_signum, _frame) -> None:
        with open(out_file + ".tmp", "w") as fh:
            json.dump(counts, fh)
        os.replace(out_file + ".tmp", out_file)

    StreamReader.iter_any = counted
    signal.signal(signal.SIGUSR1, dump)
    claude_proxy.main(proxy_args)


# ---- a load generator for machines without wrk (also a subcommand: its own process) ---------------------------

def run_loadgen(url: str, body_file: str, headers: dict, connections: int, duration: float) -> None:
    import aiohttp
    with open(body_file, "rb") as fh:
        body = fh.read()

    async def main() -> dict:
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
                "p99": latencies[int(len(latencies) * 0.99)] * 1000, "errors": errors, "requests": len(latencies)}

    print(json.dumps(asyncio.run(main())))


def run_holdstreams(url: str, body_file: str, headers: dict, count: int) -> None:
    """Open ``count`` streams, report when all have their first bytes, hold them until stdin closes."""
    import aiohttp
    with open(body_file, "rb") as fh:
        body = fh.read()

    async def main() -> None:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            responses = await asyncio.gather(*(session.post(url, data=body, headers=headers) for _ in range(count)))
            await asyncio.gather(*(r.content.readany() for r in responses))
            ok = sum(1 for r in responses if r.status == 200)
            print(json.dumps({"open": ok}), flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
            for r in responses:
                r.close()

    asyncio.run(main())


# ---- processes -------------------------------------------------------------------------------------------------

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
    """Called once at start: every process the benchmark starts inherits the limit (1000 streams, 2 sockets each)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


LOG = os.path.join(tempfile.gettempdir(), "claude_proxy_bench.log")


def spawn(args: list[str], env: dict | None = None, port: int | None = None) -> subprocess.Popen:
    # output to a file, never an unread pipe: a full pipe would block the process being measured
    with open(LOG, "a") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=log, env=env, start_new_session=True)
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


# ---- CPU time and memory from /proc ---------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_stat(pid: str) -> list[str] | None:
    """Fields 3… of /proc/PID/stat (the command name, which may hold spaces, cut off)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            text = fh.read()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def listening_session(port: int) -> int:
    """Session id of the process that really serves ``port``. A launcher such as ``ccr start`` may hand the
    server to another process, so the process we spawned is not necessarily the one doing the work; the one
    holding the listening socket is, and its workers share its session."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                lines = fh.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{f[9]}]")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in inodes for fd in fds):
                stat = _proc_stat(pid)
                if stat:
                    return int(stat[3])  # field 6: session
        except OSError:
            continue
    raise RuntimeError(f"no process found listening on {port}")


def session_stats(session: int) -> list[tuple[str, list[str]]]:
    """(pid, stat fields) of every live process in ``session``: a server and its workers."""
    stats = ((pid, _proc_stat(pid)) for pid in filter(str.isdigit, os.listdir("/proc")))
    return [(pid, stat) for pid, stat in stats if stat and int(stat[3]) == session]  # field 6: session


def cpu_seconds(session: int) -> float:
    """User + system CPU time of a server: all its processes, all their threads."""
    return sum(int(stat[11]) + int(stat[12]) for _, stat in session_stats(session)) / CLOCK_TICKS  # utime, stime


def rss_mb(session: int) -> float:
    """Resident memory of a server (all its processes), in MB."""
    total = 0
    for pid, _ in session_stats(session):
        try:
            with open(f"/proc/{pid}/status") as fh:
                total += sum(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))
        except OSError:
            pass
    return total / 1024


# ---- claude-code-router ----------------------------------------------------------------------------------------

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


# ---- load ------------------------------------------------------------------------------------------------------

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m)", text)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


def use_wrk() -> bool:
    return bool(shutil.which("wrk")) and os.environ.get("BENCH_NO_WRK") != "1"


def run_load(url: str, body: bytes, headers: dict, connections: int, duration: float, tmp: str) -> dict:
    """rps, p50/p99 ms, errors and requests (completed) of one load run."""
    body_file = os.path.join(tmp, f"body-{abs(hash(body))}.json")
    with open(body_file, "wb") as fh:
        fh.write(body)
    if use_wrk():
        script = os.path.join(tmp, "post.lua")
        with open(script, "w") as fh:
            fh.write('wrk.method = "POST"\n')
            fh.writelines(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items())
            fh.write(f'local f = io.open("{body_file}", "rb")\nwrk.body = f:read("*a")\nf:close()\n')
        seconds = max(1, round(duration))  # wrk takes whole seconds
        out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script, url],
                             capture_output=True, text=True, timeout=duration + 60, check=False).stdout
        rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
        done = re.search(r"(\d+) requests in", out)
        p50 = re.search(r"50%\s+([\d.]+\w+)", out)
        p99 = re.search(r"99%\s+([\d.]+\w+)", out)
        bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
        errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        return {"rps": float(rps.group(1)) if rps else 0.0, "p50": _ms(p50.group(1)) if p50 else float("nan"),
                "p99": _ms(p99.group(1)) if p99 else float("nan"),
                "errors": (int(bad.group(1)) if bad else 0) + (sum(map(int, errs.groups())) if errs else 0),
                "requests": int(done.group(1)) if done else 0}
    out = subprocess.run([sys.executable, __file__, "loadgen", url, body_file, json.dumps(headers), str(connections),
                          str(duration)], capture_output=True, text=True, timeout=duration + 60, check=False).stdout
    return json.loads(out)


def measured_load(session: int, url: str, body: bytes, headers: dict, connections: int, duration: float,
                  tmp: str) -> dict:
    """One load run, plus the CPU milliseconds the serving process spent per completed request: its CPU time is
    read from /proc right before and after, so the load generator and the other servers are not counted."""
    before = cpu_seconds(session)
    r = run_load(url, body, headers, connections, duration, tmp)
    cpu = cpu_seconds(session) - before
    r["cpu_ms_per_request"] = round(cpu * 1000 / r["requests"], 4) if r.get("requests") else float("nan")
    return r


# ---- scenarios and targets -------------------------------------------------------------------------------------

@dataclass
class Target:
    """A server under load: where each client dialect is sent, and the session whose CPU is its cost."""
    routes: dict[str, tuple[str, dict]]  # "anthropic" | "openai" -> (url, headers)
    port: int
    session: int


@dataclass
class Scenario:
    name: str
    anthropic: dict | None  # the body for proxies; None: proxies get the OpenAI body too (pass-through)
    openai: dict  # the body sent straight to the backend ("direct")
    direct: bool = True  # False: the backend already had this exact request in another scenario

    def request(self, target_name: str, target: Target) -> tuple[str, dict, dict] | None:
        """(url, headers, body) for this target, or None when it is not run (no door for this client dialect)."""
        if target_name == "direct" and not self.direct:
            return None
        dialect = "openai" if target_name == "direct" or self.anthropic is None else "anthropic"
        if dialect not in target.routes:
            return None
        url, headers = target.routes[dialect]
        return url, headers, self.openai if dialect == "openai" or self.anthropic is None else self.anthropic


def make_scenarios() -> list[Scenario]:
    import claude_proxy
    with open(os.path.join(HERE, "data", "claude_code_request.json")) as fh:
        cc_body = json.load(fh)
    cc_body["stream"] = True
    trickled = {**SMALL, "stream": True, "messages": [{"role": "user", "content": f"{TRICKLE} please"}]}

    def scenario(name: str, body: dict, passthrough: bool = False) -> Scenario:
        openai = claude_proxy.anthropic_to_openai_request(body, "fake-model")
        # pass-through: its direct run would repeat the translated twin's, which stands for it in the report
        return Scenario(name, None if passthrough else body, openai, direct=not passthrough)

    return [scenario("small JSON", SMALL), scenario("small stream", {**SMALL, "stream": True}),
            scenario("Claude Code 120 KB stream", cc_body), scenario(TRICKLED, trickled),
            scenario(PASS_THROUGH, trickled, passthrough=True)]


ANTHROPIC_HEADERS = {"Content-Type": "application/json", "anthropic-version": "2023-06-01"}
OPENAI_HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer dummy"}


def start_servers(args: argparse.Namespace, tmp: str, procs: list[subprocess.Popen]) -> dict[str, Target]:
    """Backend, claude_proxy and (unless --no-peer) claude-code-router; the started processes go into ``procs``
    so the caller stops them whatever happens."""
    bport, pport = free_port(), free_port()
    procs.append(spawn([sys.executable, __file__, "backend", str(bport), str(args.trickle_gap_ms / 1000)],
                       port=bport))
    procs.append(spawn([sys.executable, args.proxy, *proxy_args(bport, pport, args.workers)], port=pport))
    proxy = f"http://127.0.0.1:{pport}/v1"
    targets = {
        "direct": Target({"openai": (f"http://127.0.0.1:{bport}/v1/chat/completions", OPENAI_HEADERS)}, bport,
                         listening_session(bport)),
        "claude_proxy": Target({"anthropic": (f"{proxy}/messages", {**ANTHROPIC_HEADERS, "x-api-key": "dummy"}),
                                "openai": (f"{proxy}/chat/completions", OPENAI_HEADERS)}, pport,
                               listening_session(pport))}
    if not args.no_peer:
        try:
            binary = install_ccr()
        except (subprocess.SubprocessError, OSError) as exc:
            binary = None
            print(f"claude-code-router not available: {exc}")
        if binary:
            cport = free_port()
            procs.append(start_ccr(binary, bport, cport, os.path.join(tmp, "ccr-home")))
            targets["claude-code-router"] = Target({"anthropic": (
                f"http://127.0.0.1:{cport}/v1/messages", {**ANTHROPIC_HEADERS, "x-api-key": "ccr-bench-key"})},
                cport, listening_session(cport))
    time.sleep(0.5)
    return targets


def proxy_args(backend_port: int, port: int, workers: int) -> list[str]:
    return ["--url", f"127.0.0.1:{backend_port}/v1", "--model", "fake-model", "--port", str(port),
            "--workers", str(workers)]


def run_scenarios(scenarios: list[Scenario], targets: dict[str, Target], args: argparse.Namespace,
                  tmp: str) -> dict:
    runs = {}
    for scenario in scenarios:
        for name, target in targets.items():
            req = scenario.request(name, target)
            if req is None:
                continue
            url, headers, body = req
            data = json.dumps(body).encode()
            run_load(url, data, headers, args.connections, 1.0, tmp)  # warm-up
            runs[f"{scenario.name} | {name}"] = measured_load(target.session, url, data, headers, args.connections,
                                                              args.duration, tmp)
    return runs


def count_reads(scenarios: list[Scenario], backend_port: int, args: argparse.Namespace, tmp: str) -> dict:
    """Network reads claude_proxy takes per trickled stream, with a read-counting copy of the proxy under the
    same load: about one per frame means each chunk really reached the proxy on its own. The trickle needs a
    gap for that: without one a busy proxy finds a handful of frames per read."""
    port = free_port()
    counts_file = os.path.join(tmp, "reads.json")
    # one worker: the counter lives in the process that answers SIGUSR1
    proc = spawn([sys.executable, __file__, "countreads", counts_file, args.proxy,
                  *proxy_args(backend_port, port, 1)], port=port)
    target = Target({"anthropic": (f"http://127.0.0.1:{port}/v1/messages", {**ANTHROPIC_HEADERS, "x-api-key": "x"}),
                     "openai": (f"http://127.0.0.1:{port}/v1/chat/completions", OPENAI_HEADERS)}, port, 0)
    reads = {}
    try:
        for scenario in scenarios:
            if scenario.name not in (TRICKLED, PASS_THROUGH):
                continue
            req = scenario.request("claude_proxy", target)
            assert req is not None  # claude_proxy has both doors
            url, headers, body = req
            before = _read_counts(proc, counts_file)
            r = run_load(url, json.dumps(body).encode(), headers, args.connections, min(args.duration, 2.0), tmp)
            after = _read_counts(proc, counts_file)
            streams = after["streams"] - before["streams"]
            reads[scenario.name] = {"streams": streams, "errors": r["errors"], "reads_per_stream": round(
                (after["reads"] - before["reads"]) / streams, 1) if streams else 0.0}
    finally:
        stop(proc)
    return reads


def _read_counts(proc: subprocess.Popen, counts_file: str) -> dict:
    if os.path.exists(counts_file):
        os.remove(counts_file)
    proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 5
    while not os.path.exists(counts_file):
        if time.monotonic() > deadline:
            raise RuntimeError("the read-counting proxy did not answer SIGUSR1")
        time.sleep(0.02)
    with open(counts_file) as fh:
        return json.load(fh)


# ---- main ------------------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load run")
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1, help="claude_proxy --workers")
    parser.add_argument("--trickle-gap-ms", type=float, default=1.0,
                        help="pause between the chunks of a trickled stream (long enough for one chunk per read)")
    parser.add_argument("--streams", type=int, default=1000, help="open streams for the memory figure")
    parser.add_argument("--no-peer", action="store_true", help="skip claude-code-router")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--proxy", default=os.path.join(ROOT, "claude_proxy.py"),
                        help="the claude_proxy.py to measure (default: this checkout's; e.g. a copy of another "
                             "commit's, to compare two versions)")
    args = parser.parse_args()
    args.proxy = os.path.abspath(args.proxy)
    sys.path.insert(0, os.path.dirname(args.proxy))  # make_scenarios translates the bodies with that version

    raise_nofile()
    scenarios = make_scenarios()
    cores = os.cpu_count()
    tools = "wrk" if use_wrk() else "built-in async load generator"
    print(f"machine: {cores} cores; load: {tools}, {args.connections} connections, {args.duration:g}s per run; "
          f"claude_proxy workers: {args.workers}; trickle gap {args.trickle_gap_ms:g} ms; "
          f"orjson: {_has('orjson')}, uvloop: {_has('uvloop')}")
    results: dict = {"cores": cores, "load": tools, "connections": args.connections, "duration": args.duration,
                     "proxy": args.proxy, "trickle_gap_ms": args.trickle_gap_ms, "frames_per_stream": FRAMES,
                     "runs": {}}
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            targets = start_servers(args, tmp, procs)
            results["runs"] = run_scenarios(scenarios, targets, args, tmp)
            results["reads_per_stream"] = count_reads(scenarios, targets["direct"].port, args, tmp)
            results["latency_c1"] = latency_c1(scenarios[0], targets, tmp, args)
            results["memory"] = {}
            hold = {**SMALL, "stream": True, "messages": [{"role": "user", "content": HOLD}]}
            for name in ("claude_proxy", "claude-code-router"):
                if name in targets:
                    url, headers = targets[name].routes["anthropic"]
                    results["memory"][name] = hold_streams(url, hold, headers, args.streams, targets[name].session,
                                                           tmp)
        finally:
            for p in reversed(procs):
                stop(p)
    results["ratios"] = ratios(results["runs"])
    report(results)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


def latency_c1(scenario: Scenario, targets: dict[str, Target], tmp: str, args: argparse.Namespace) -> dict:
    latency = {}
    for name in ("direct", "claude_proxy"):
        req = scenario.request(name, targets[name])
        assert req is not None  # small JSON is sent to both
        url, headers, body = req
        latency[name] = run_load(url, json.dumps(body).encode(), headers, 1, min(args.duration, 3), tmp)
    return latency


def _has(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def hold_streams(url: str, body: dict, headers: dict, count: int, session: int, tmp: str) -> dict:
    body_file = os.path.join(tmp, "trickle.json")
    with open(body_file, "w") as fh:
        json.dump(body, fh)
    idle = rss_mb(session)
    holder = subprocess.Popen([sys.executable, __file__, "holdstreams", url, body_file, json.dumps(headers),
                               str(count)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = holder.stdout.readline()
        opened = json.loads(line)["open"] if line else 0
        time.sleep(1.0)
        loaded = rss_mb(session)
    finally:
        holder.stdin.close()
        holder.wait(30)
    return {"streams": opened, "rss_idle_mb": round(idle, 1), "rss_mb": round(loaded, 1)}


# ---- report ----------------------------------------------------------------------------------------------------

def ratios(runs: dict) -> dict:
    """CPU per request: translated ÷ pass-through trickled stream (what translation adds to plumbing; target
    ≤ 1.5), and claude-code-router ÷ claude_proxy per scenario (target ≥ 2.5)."""
    def cpu(scenario: str, target: str) -> float | None:
        return runs.get(f"{scenario} | {target}", {}).get("cpu_ms_per_request")

    out: dict = {}
    translated, plumbing = cpu(TRICKLED, "claude_proxy"), cpu(PASS_THROUGH, "claude_proxy")
    if translated and plumbing:
        out["translated_over_passthrough_cpu"] = round(translated / plumbing, 2)
    peer = {}
    for key in runs:
        scenario, target = key.split(" | ")
        mine, theirs = cpu(scenario, "claude_proxy"), cpu(scenario, "claude-code-router")
        if target == "claude_proxy" and mine and theirs:
            peer[scenario] = round(theirs / mine, 2)
    if peer:
        out["peer_over_proxy_cpu"] = peer
    return out


def report(results: dict) -> None:
    runs = results["runs"]
    print()
    print(f"{'scenario':30} {'target':20} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'CPU ms/req':>10}"
          f" {'/direct':>8} {'/peer':>7}")
    for key, r in runs.items():
        scenario, target = key.split(" | ")
        direct_key = f"{TRICKLED if scenario == PASS_THROUGH else scenario} | direct"  # the same backend request
        direct = runs.get(direct_key, {}).get("rps") or float("nan")
        peer = runs.get(f"{scenario} | claude-code-router", {}).get("rps")
        vs_peer = f"{r['rps'] / peer:7.2f}x" if peer and target == "claude_proxy" else ""
        vs_direct = f"{r['rps'] / direct:7.2f}x" if target != "direct" else ""
        print(f"{scenario:30} {target:20} {r['rps']:9.1f} {r['p50']:8.2f} {r['p99']:8.2f} {r['errors']:6}"
              f" {r['cpu_ms_per_request']:10.3f} {vs_direct:>8} {vs_peer:>7}")
    print("(CPU ms/req: user+system CPU of the serving process per completed request; for direct, the backend's)")
    ratio = results["ratios"]
    if "translated_over_passthrough_cpu" in ratio:
        r = ratio["translated_over_passthrough_cpu"]
        print(f"\nCPU per request, trickled stream, claude_proxy translated ÷ pass-through: {r:.2f}x "
              f"(target ≤ 1.5: {'met' if r <= 1.5 else 'NOT met'})")
    for scenario, r in ratio.get("peer_over_proxy_cpu", {}).items():
        print(f"CPU per request, claude-code-router ÷ claude_proxy, {scenario}: {r:.2f}x "
              f"(target ≥ 2.5: {'met' if r >= 2.5 else 'NOT met'})")
    for scenario, c in results.get("reads_per_stream", {}).items():
        print(f"network reads per stream seen by claude_proxy, {scenario}: {c['reads_per_stream']:g} "
              f"(the backend writes {results['frames_per_stream']} frames; {c['streams']} streams, "
              f"{c['errors']} errors)")
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
        run_backend(int(sys.argv[2]), float(sys.argv[3]))
    elif len(sys.argv) > 1 and sys.argv[1] == "loadgen":
        run_loadgen(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]))
    elif len(sys.argv) > 1 and sys.argv[1] == "holdstreams":
        run_holdstreams(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), int(sys.argv[5]))
    elif len(sys.argv) > 1 and sys.argv[1] == "countreads":
        run_counting_proxy(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        main()
