"""Networks people have (issue #14): backends behind an HTTP proxy (HTTPS_PROXY / NO_PROXY, or ``proxy`` per
backend, with credentials kept out of the logs) and private CAs (``--ca-file``, ``ca_file``, ``tls_verify``).
A real CONNECT proxy on 127.0.0.1 in front of the fake backend served over https with a throwaway CA."""

from __future__ import annotations

import asyncio
import base64
import ssl

import anthropic
import pytest
import trustme
from aiohttp import web
from fake_openai import FakeOpenAI

import claude_proxy as cp


class ConnectProxy:
    """A minimal HTTP proxy: CONNECT tunnels, as an https backend is reached through one. Records each tunnel's
    target and Proxy-Authorization."""

    def __init__(self):
        self.tunnels: list[tuple[str, str | None]] = []
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server:
            self.server.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        method, target, _ = head[0].split(" ", 2)
        auth = next((line.split(":", 1)[1].strip() for line in head[1:]
                     if line.lower().startswith("proxy-authorization:")), None)
        self.tunnels.append((target, auth))
        if method != "CONNECT":
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            writer.close()
            return
        host, port = target.rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def tls_backend(loop_thread, ca):
    """The fake OpenAI backend over https, its certificate signed by the throwaway CA."""
    fake = FakeOpenAI()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)

    async def start() -> web.AppRunner:
        runner = web.AppRunner(fake.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        fake.port = runner.addresses[0][1]
        return runner

    runner = loop_thread.run(start())
    yield fake
    loop_thread.run(runner.cleanup())


@pytest.fixture
def connect_proxy(loop_thread):
    proxy = ConnectProxy()
    loop_thread.run(proxy.start())
    yield proxy
    loop_thread.run(proxy.stop())


@pytest.fixture
def ca_file(ca, tmp_path):
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def ask(proxy) -> str:
    client = anthropic.Anthropic(base_url=proxy.url, api_key="k", max_retries=0, timeout=30)
    return client.messages.create(model="claude-sonnet-5", max_tokens=20,
                                  messages=[{"role": "user", "content": "hi"}]).content[0].text


def test_a_private_ca_is_trusted_only_when_given(make_proxy, tls_backend, ca_file):
    url = f"https://127.0.0.1:{tls_backend.port}/v1"
    assert ask(make_proxy(url=url, ca_file=ca_file)).startswith("Hello from fake-model")
    with pytest.raises(anthropic.APIStatusError) as info:
        ask(make_proxy(url=url))
    assert info.value.status_code == 502 and "certificate" in info.value.message.lower()


def test_https_proxy_from_the_environment_and_no_proxy(make_proxy, tls_backend, ca_file, connect_proxy,
                                                      monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{connect_proxy.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    url = f"https://127.0.0.1:{tls_backend.port}/v1"
    assert ask(make_proxy(url=url, ca_file=ca_file)).startswith("Hello from fake-model")
    assert connect_proxy.tunnels == [(f"127.0.0.1:{tls_backend.port}", None)]  # CONNECT, then TLS inside
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert ask(make_proxy(url=url, ca_file=ca_file)).startswith("Hello from fake-model")
    assert len(connect_proxy.tunnels) == 1  # straight there


def test_a_proxy_per_backend_in_the_config_file_keeps_its_password_out_of_the_logs(
        make_proxy, tls_backend, ca_file, connect_proxy, tmp_path, caplog):
    caplog.set_level("DEBUG")
    path = tmp_path / "p.toml"
    path.write_text(f'[[backends]]\nname = "corp"\nurl = "https://127.0.0.1:{tls_backend.port}/v1"\n'
                    f'proxy = "http://alice:s3cr3t-proxy-pw@127.0.0.1:{connect_proxy.port}"\n'
                    f'ca_file = "{ca_file}"\n')
    assert ask(make_proxy(model="fake-model", **cp.load_config_file(str(path)))).startswith("Hello")
    target, auth = connect_proxy.tunnels[-1]
    assert target == f"127.0.0.1:{tls_backend.port}"
    assert auth == "Basic " + base64.b64encode(b"alice:s3cr3t-proxy-pw").decode()
    assert "s3cr3t-proxy-pw" not in caplog.text
    path.write_text('[[backends]]\nname = "corp"\nurl = "https://x"\nproxy = "socks://alice:pw@h:1"\n')
    with pytest.raises(cp.ConfigFileError) as info:
        cp.load_config_file(str(path))
    assert "proxy: expected http://[user:password@]host:port" in str(info.value) and ":pw@" not in str(info.value)


def test_tls_verify_false_skips_the_check_for_that_backend_only(make_proxy, tls_backend, tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(f'[[backends]]\nname = "lab"\nurl = "https://127.0.0.1:{tls_backend.port}/v1"\n'
                    f'tls_verify = false\n')
    assert ask(make_proxy(model="fake-model", **cp.load_config_file(str(path)))).startswith("Hello")
    assert cp.Config(url="https://x/v1").routing.primary.tls_verify is True


def test_ssl_cert_file_and_the_upstream_proxy_flag(tls_backend, ca_file, connect_proxy, loop_thread, tmp_path):
    """A real process: SSL_CERT_FILE names the CA (no --ca-file), --upstream-proxy the proxy."""
    import os
    import subprocess
    import sys

    import httpx
    from conftest import free_port
    port = free_port()
    env = {**os.environ, "SSL_CERT_FILE": ca_file}
    env.pop("HTTPS_PROXY", None)
    proc = subprocess.Popen([sys.executable, cp.__file__, "--url", f"https://127.0.0.1:{tls_backend.port}/v1",
                             "--model", "fake-model", "--port", str(port), "--upstream-proxy",
                             f"http://bob:flag-proxy-pw@127.0.0.1:{connect_proxy.port}"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        proc.stdout.readline()
        r = httpx.post(f"http://127.0.0.1:{port}/v1/messages", timeout=30, json={
            "model": "claude-sonnet-5", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200, r.text
        assert connect_proxy.tunnels[-1][0] == f"127.0.0.1:{tls_backend.port}"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert "flag-proxy-pw" not in err
