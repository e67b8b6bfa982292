"""Settings of the wrong type, from the config file or from Python, stop start-up with a readable error
(issue #9, defect 1). Random config files are fuzzed in test_fuzz_config.py."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
from test_routing import SCRIPT

import claude_proxy as cp


@pytest.mark.parametrize("line,message", [
    ('proxy_keys = "s3cret"', 'proxy_keys: expected a list of strings, got a string'),
    ('cors_origins = "https://a.example"', "cors_origins: expected a list of strings, got a string"),
    ('allow_url_routing = "api.groq.com"', "allow_url_routing: expected a list of strings, got a string"),
    ('connect_timeout = "10"', 'connect_timeout: expected a number above 0, got a string "10"'),
    ('log_level = "verbose"', 'log_level: expected one of debug, info, warning, error, got a string "verbose"'),
    ('retries = "3"', 'retries: expected an integer from 0 to 10, got a string "3"'),
    ("port = 70000", "port: expected an integer from 0 to 65535, got an integer 70000"),
    ("max_tokens = true", "max_tokens: expected an integer of at least 1, got a boolean true"),
    ("proxy_keys = [1]", "proxy_keys: expected a list of strings, got a list"),
    ('max_body = "lots"', 'max_body: expected a size like 32MiB or 1048576, got a string "lots"'),
    ('max_body = "9' + "9" * 400 + '"', "max_body: expected a size like 32MiB or 1048576, got a string"),
    ("ping_interval = 1e-9", "ping_interval: expected a number of at least 0.01, got a number 1e-"),
    ("read_timeout = 0", "read_timeout: expected a number above 0, got an integer 0"),
    ("workers = 0", "workers: expected an integer from 1 to 256"),
])
def test_server_values_of_the_wrong_type_name_file_line_and_key(tmp_path, line, message):
    path = tmp_path / "proxy.toml"
    path.write_text(f"# settings\n[server]\nport = 8090\n{line}\n" if not line.startswith("port") else
                    f"# settings\n[server]\nhost = '127.0.0.1'\n{line}\n")
    with pytest.raises(cp.ConfigFileError) as info:
        cp.load_config_file(str(path))
    assert str(info.value).startswith(f"{path}:4: {message}")


@pytest.mark.parametrize("entry,message", [
    ("[[backends]]\nname = 'a'\nurl = 5\n", "url: expected a non-empty string, got an integer 5"),
    ("[[backends]]\nname = 'a'\nurl = 'x.example'\nmax_tokens = '9'\n", "max_tokens: expected an integer"),
    ("[[backends]]\nname = 'a'\nurl = 'x.example'\nheaders = {X = 1}\n", "headers: expected a table of strings"),
    ("[[backends]]\nname = 'a'\nurl = 'x.example'\napi_key = ['sk-secret-1234']\n", "api_key: expected a non-empty"),
    ("[[backends]]\nname = 'a'\nurl = 'x.example:port'\n", "invalid port"),
    ("[[routes]]\nmatch = '*'\nbackend = 'default'\nfallbacks = 'default'\n", "fallbacks: expected a list"),
    ("[[routes]]\nbackend = 'default'\nmatch = ['*']\n", "match: expected a non-empty string"),
])
def test_backend_and_route_values_are_checked_too(tmp_path, entry, message):
    path = tmp_path / "proxy.toml"
    path.write_text(entry)
    with pytest.raises(cp.ConfigFileError) as info:
        cp.load_config_file(str(path))
    assert message in str(info.value)
    assert str(info.value).startswith(f"{path}:{entry.count(chr(10))}:")


def test_a_string_is_one_item_never_its_characters():
    config = cp.Config(proxy_keys="s3cret", cors_origins="https://a.example/", allow_url_routing="API.groq.com")
    assert config.proxy_keys == ("s3cret",)
    assert config.cors_origins == ("https://a.example",)
    assert config.allow_url_routing == ("api.groq.com",)


def test_a_string_proxy_key_does_not_let_its_first_letter_in(make_proxy):
    proxy = make_proxy(proxy_keys="s3cret")
    body = {"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    for key, status in (("s", 401), ("s3cret", 200)):
        r = httpx.post(proxy.url + "/v1/messages", json=body, headers={"x-api-key": key}, timeout=10)
        assert r.status_code == status, (key, r.text)


@pytest.mark.parametrize("kwargs,message", [
    ({"connect_timeout": "10"}, "--connect-timeout: expected a number above 0"),
    ({"retries": "3"}, "--retries: expected an integer from 0 to 10"),
    ({"log_level": "verbose"}, "--log-level: expected one of debug, info, warning, error"),
    ({"max_body": "lots"}, "--max-body: expected a size"),
])
def test_python_callers_get_the_same_checks(kwargs, message):
    with pytest.raises(ValueError) as info:
        cp.Config(**kwargs)
    assert message in str(info.value)


def test_startup_with_a_mistyped_value_prints_one_line_not_a_traceback(tmp_path):
    path = tmp_path / "proxy.toml"
    path.write_text("[server]\nlog_level = 'verbose'\n")
    out = subprocess.run([sys.executable, SCRIPT, "--config", str(path)], capture_output=True, text=True, timeout=30,
                         check=False)
    assert out.returncode != 0
    assert f"{path}:2: log_level: expected one of debug, info, warning, error" in out.stderr
    assert "Traceback" not in out.stderr


def test_mistakes_in_secret_values_never_show_the_value(tmp_path):
    for text in ("[server]\nproxy_keys = 'hunter2-proxy-key'\n",
                 "[[backends]]\nname = 'a'\nurl = 'x.example'\nheaders = {Authorization = ['Bearer sk-or-v1-SECRET']}\n",
                 "[[backends]]\nname = 'a'\nurl = 'x.example'\napi_key = ['sk-or-v1-SECRET']\n"):
        path = tmp_path / "proxy.toml"
        path.write_text(text)
        with pytest.raises(cp.ConfigFileError) as info:
            cp.load_config_file(str(path))
        assert "hunter2" not in str(info.value) and "SECRET" not in str(info.value), info.value


def test_a_mistake_in_an_inline_array_of_tables_names_its_line(tmp_path):
    """Found by the config fuzzer: ``backends = [{ }]`` has no [[backends]] header to point at."""
    path = tmp_path / "proxy.toml"
    path.write_text('# backends written inline\nbackends = [{  }]\n')
    with pytest.raises(cp.ConfigFileError, match=r"proxy\.toml:2: \[\[backends\]\] needs a name"):
        cp.load_config_file(str(path))
