"""Property-based fuzzing of ``--config`` files: any key (known or not) with any TOML value.

The contract of ``load_config_file(path)``: it raises ``ConfigFileError`` whose message is ``<path>:<line>: ...``
with the line of the offending key (or of its table, when the key is missing) and the key named in the message;
or it returns keyword arguments with which ``Config(**kw)`` (``workers`` aside) is built without raising. Never
any other exception. A second, stricter property holds the accepted settings to the types their flags have
(the README: a ``[server]`` key is "any flag, by its long name with _"): a port is an int in 0..65535, a
timeout a positive finite number, a list of keys a tuple of strings.

The TOML text is written here, by hand, so that the line of every key is known.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import ProxyServer
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import claude_proxy as cp

SETTINGS = settings(max_examples=400, deadline=timedelta(seconds=2), derandomize=True, database=None,
                    report_multiple_bugs=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])



@pytest.fixture(scope="module")
def config_path(tmp_path_factory):
    return str(tmp_path_factory.mktemp("fuzz-config") / "routes.toml")


SET_ENV = "PATH"  # set wherever the tests run
UNSET_ENV = "CLAUDE_PROXY_FUZZ_SURELY_UNSET_0x5f3759df"

# ---- TOML values and their text ---------------------------------------------------------------------------

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=8)
TOML_SCALAR = st.one_of(
    TEXT, st.integers(-(2**63), 2**63 - 1), st.floats(), st.booleans(),
    st.datetimes(timezones=st.sampled_from([None, dt.UTC, dt.timezone(timedelta(hours=-7))])),
    st.dates(), st.times(),
    st.sampled_from(["", " ", "10", "3", "true", "s3cret", "a,b", "verbose", "INFO", "32MiB", "*", "default"]))
TOML_VALUE = st.recursive(TOML_SCALAR, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                               st.dictionaries(TEXT, inner, max_size=3)),
                          max_leaves=5)


def toml_str(s: str) -> str:
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else repr(v)  # inf, -inf, 1e+16 are TOML as Python writes them
    if isinstance(v, str):
        return toml_str(v)
    if isinstance(v, (dt.datetime, dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{toml_str(k)} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(v)


def same(a: Any, b: Any) -> bool:
    """Equality with nan == nan (to check this file's TOML writer against tomllib)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


# ---- a config document, line by line ------------------------------------------------------------------------

@dataclass
class Doc:
    lines: list[str] = field(default_factory=list)
    where: dict[int, tuple[str | None, int, str | None]] = field(default_factory=dict)  # line → (table, i, key)
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "\n".join(self.lines) + "\n"

    def add(self, line: str, table: str | None = None, index: int = 0, key: str | None = None,
            header: bool = False) -> None:
        self.lines.append(line)
        if header or key is not None:
            self.where[len(self.lines)] = (table, index, key)

    def keys_of(self, table: str | None, index: int) -> set[str]:
        if table is None:
            return set(self.data)
        entry = self.data.get(table)
        if isinstance(entry, list):
            entry = entry[index] if index < len(entry) else {}
        return set(entry) if isinstance(entry, dict) else set()


SERVER_GOOD = {
    "host": st.sampled_from(["127.0.0.1", "0.0.0.0", "localhost", "::1"]),
    "port": st.integers(0, 65535), "max_tokens": st.integers(1, 200_000),
    "reasoning_effort": st.sampled_from(["off", "auto", "minimal", "low", "medium", "high"]),
    "connect_timeout": st.one_of(st.integers(1, 60), st.floats(0.01, 60)),
    "read_timeout": st.one_of(st.integers(1, 600), st.floats(0.01, 600)),
    "retries": st.integers(0, 10), "max_body": st.one_of(st.integers(1, 2**40), st.sampled_from(
        ["32MiB", "512k", "1048576", "1G"])),
    "log_level": st.sampled_from(["debug", "info", "warning", "error"]),
    "proxy_keys": st.lists(st.sampled_from(["k1", "s3cret", "sk-proxy-0123"]), max_size=2),
    "cors_origins": st.lists(st.sampled_from(["https://app.example", "*", "http://localhost:3000"]), max_size=2),
    "drain_timeout": st.one_of(st.integers(0, 60), st.floats(0, 60)),
    "ping_interval": st.one_of(st.integers(1, 60), st.floats(0.01, 60)),
    "max_connections": st.integers(1, 5000),
    "allow_url_routing": st.lists(st.sampled_from(["api.groq.com", "openrouter.ai"]), max_size=2),
    "workers": st.integers(1, 256),
    **{k: st.sampled_from(["deepseek-chat", "llama-3.3-70b", "gpt-4o"]) for k in
       ("model", "haiku_model", "sonnet_model", "opus_model")},
}
BACKEND_KEYS = ["name", "url", "api_key", "api_key_env", "backend", "max_tokens", "headers"]
ROUTE_KEYS = ["match", "backend", "model", "fallbacks"]
KNOWN_KEYS = set(SERVER_GOOD) | set(BACKEND_KEYS) | set(ROUTE_KEYS) | {"server", "backends", "routes"}
UNKNOWN_KEYS = st.sampled_from(["unknown", "Port", "proxy-keys", "url2", "ñame", "timeout", "with space"])
NAMES = ["ds", "groq", "local", "b-1", "x.y"]
URLS = st.sampled_from(["api.deepseek.com/v1", "http://127.0.0.1:8000/v1", "localhost:11434/v1",
                        "https://api.anthropic.com"])


def backend_good(names: list[str]) -> dict[str, st.SearchStrategy]:
    return {"url": URLS, "api_key": st.sampled_from(["sk-abc", "k"]), "api_key_env": st.sampled_from(
        [SET_ENV, SET_ENV, UNSET_ENV]), "backend": st.sampled_from(["openai", "anthropic"]),
        "max_tokens": st.integers(1, 100_000), "headers": st.dictionaries(
            st.sampled_from(["X-Title", "HTTP-Referer"]), st.sampled_from(["claude_proxy", "x"]), max_size=2)}


def route_good(names: list[str]) -> dict[str, st.SearchStrategy]:
    targets = [*names, "default"]
    return {"match": st.sampled_from(["*haiku*", "experiment-*", "*", "claude-*"]),
            "backend": st.sampled_from(targets), "model": st.sampled_from(["deepseek-chat", "m"]),
            "fallbacks": st.lists(st.one_of(st.sampled_from(targets), st.sampled_from(targets).map(
                lambda n: n + ":fallback-model")), max_size=2)}


def one_in(n: int) -> st.SearchStrategy[bool]:
    """True about one time in ``n`` (a middle value: Hypothesis favours the ends of a range), shrinking to False."""
    return st.integers(0, n - 1).map(lambda i: i == n // 2)


@st.composite
def key_line(draw: Any, doc: Doc, table: str | None, index: int, key: str, value: Any) -> None:
    """``key = value``: the key bare, "quoted" or 'literal', indented or not, with a comment after or not."""
    if re.fullmatch(r"[A-Za-z0-9_-]+", key):
        shown = draw(st.sampled_from([key, key, key, f'"{key}"', f"'{key}'"]))
    else:
        shown = toml_str(key)
    indent = draw(st.sampled_from(["", "", "  "]))
    eq = draw(st.sampled_from([" = ", "=", "  =  "]))
    comment = draw(st.sampled_from(["", "", "  # set by hand"]))
    doc.add(f"{indent}{shown}{eq}{toml_value(value)}{comment}", table, index, key)


@st.composite
def entry_values(draw: Any, good: dict[str, st.SearchStrategy], required: dict[str, Any],
                 wrongness: int) -> dict[str, Any]:
    """Some of the known keys (the ``required`` ones usually), each with a good value or, one time in
    ``wrongness``, any TOML value; sometimes an unknown key."""
    out: dict[str, Any] = {}
    for key, value in required.items():
        if not draw(one_in(10)):
            out[key] = value
    for key in draw(st.lists(st.sampled_from(sorted(good)), max_size=4, unique=True)):
        out[key] = draw(good[key])
    for key in list(out):
        if draw(one_in(wrongness)):
            out[key] = draw(TOML_VALUE)
    if draw(one_in(8)):
        out[draw(UNKNOWN_KEYS)] = draw(TOML_VALUE)
    return out


@st.composite
def config_docs(draw: Any) -> Doc:
    doc = Doc()
    wrongness = draw(st.sampled_from([8, 3, 20]))  # one value in 8 (3, 20) of any type
    if draw(st.booleans()):
        doc.add("# claude_proxy routes")
    names = draw(st.lists(st.sampled_from(NAMES), max_size=3, unique=True))
    top = None
    if draw(one_in(8)):  # a top-level key: unknown, or a known table given as a plain value
        top = draw(st.one_of(UNKNOWN_KEYS, st.sampled_from(["server", "backends", "routes"])))
        value = draw(TOML_VALUE)
        doc.data[top] = value
        draw(key_line(doc, None, 0, top, value))
    groups: dict[str, list[tuple[str, int, dict[str, Any]]]] = {}
    if draw(st.booleans()) and top != "server":
        groups["server"] = [("server", 0, draw(entry_values(SERVER_GOOD, {}, wrongness)))]
    if top != "backends":
        groups["backends"] = [("backends", i, draw(entry_values(backend_good(names), {
            "name": name, "url": draw(URLS)}, wrongness))) for i, name in enumerate(names)]
    if top != "routes":
        good = route_good(names)
        groups["routes"] = [("routes", i, draw(entry_values(good, {"match": draw(good["match"]), "backend": draw(
            good["backend"])}, wrongness))) for i in range(draw(st.integers(0, 3)))]
    if draw(one_in(10)):  # an unknown table
        name = draw(st.sampled_from(["extra", "Server", "backend"]))
        groups[name] = [(name, 0, {"a": 1})]
    # Tables in any order, [[backends]] and [[routes]] interleaved, each array keeping its own order (the first
    # backend is the default).
    queues = {k: list(v) for k, v in groups.items() if v}
    order = []
    while queues:
        k = draw(st.sampled_from(sorted(queues)))
        order.append(queues[k].pop(0))
        if not queues[k]:
            del queues[k]
    for table, index, values in order:
        if draw(st.booleans()):
            doc.add("")
        is_array = table in ("backends", "routes")
        doc.add(f"[[{table}]]" if is_array else f"[{table}]", table, index, None if table in
                ("server", "backends", "routes") else table, header=True)
        if is_array:
            doc.data.setdefault(table, []).append(values)
        else:
            doc.data[table] = values
        for key, value in values.items():
            draw(key_line(doc, table, index, key, value))
    return doc


# ---- the contract ---------------------------------------------------------------------------------------------

def names_key(message: str, key: str) -> bool:
    forms = {key, key[:-1]} if key.endswith("s") else {key}  # "fallback 'x'" names fallbacks
    return any(re.search(rf"(?<![\w-]){re.escape(k)}(?![\w-])", message, re.IGNORECASE) for k in forms)


def write(path: str, doc: Doc) -> None:
    text = doc.text
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    parsed = tomllib.loads(text)
    assert same(parsed, doc.data), ("the test's TOML writer is wrong", text, parsed, doc.data)


def check_error(path: str, doc: Doc, message: str) -> None:
    m = re.match(re.escape(path) + r":(\d+): (.*)", message, re.DOTALL)
    assert m, f"a config error must start with {path}:<line>: -- got {message!r}\n{doc.text}"
    line, text = int(m.group(1)), m.group(2)
    assert line in doc.where, f"line {line} holds no key and no table header: {message!r}\n{doc.text}"
    table, index, key = doc.where[line]
    if key is not None:
        assert names_key(text, key), f"the message points at line {line} ({key} = ...) but does not name " \
                                     f"{key!r}: {message!r}\n{doc.text}"
        return
    # a [table] / [[table]] header: the complaint is about a key the table lacks (or the table itself)
    present = doc.keys_of(table, index)
    named = [k for k in KNOWN_KEYS if names_key(text, k)]
    assert any(k not in present for k in named), (
        f"the message points at the header on line {line} but names no key missing from that table "
        f"(named: {named}; present: {sorted(present)}): {message!r}\n{doc.text}")


def load(path: str, doc: Doc) -> dict | None:
    """The contract: ConfigFileError naming the line and the key, or keyword arguments Config accepts."""
    write(path, doc)
    try:
        kw = cp.load_config_file(path)
    except cp.ConfigFileError as exc:
        check_error(path, doc, str(exc))
        return None
    assert isinstance(kw, dict)
    return kw


def build(kw: dict) -> tuple[cp.Config, Any]:
    kw = dict(kw)
    workers = kw.pop("workers", None)
    return cp.Config(**kw), workers


def check_well_typed(config: cp.Config, workers: Any) -> None:
    """What the flags of the same names would have allowed (click types of ``--port``, ``--retries``...)."""
    def number(name: str, low: float, above: bool = False) -> None:
        v = getattr(config, name)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and (
            v > low if above else v >= low)
        assert ok, f"{name} = {v!r}"

    def integer(name: str, v: Any, low: int, high: int | None = None) -> None:
        assert isinstance(v, int) and not isinstance(v, bool) and v >= low and (high is None or v <= high), \
            f"{name} = {v!r}"

    assert isinstance(config.host, str) and config.host.strip(), f"host = {config.host!r}"
    integer("port", config.port, 0, 65535)
    if config.max_tokens is not None:
        integer("max_tokens", config.max_tokens, 1)
    assert config.reasoning_effort in cp.REASONING_EFFORT_CHOICES, config.reasoning_effort
    for name in ("connect_timeout", "read_timeout", "ping_interval"):
        number(name, 0, above=True)
    number("drain_timeout", 0)
    integer("retries", config.retries, 0, 10)
    integer("max_connections", config.max_connections, 1)
    try:
        size = cp.parse_size(config.max_body)  # the CLI passes the file's max_body through parse_size
    except (ValueError, TypeError):
        size = None
    assert not isinstance(config.max_body, bool) and size is not None, f"max_body = {config.max_body!r}"
    integer("max_body", size, 1)
    assert isinstance(config.log_level, str) and config.log_level.lower() in ("debug", "info", "warning", "error"), \
        f"log_level = {config.log_level!r}"
    for name in ("proxy_keys", "cors_origins", "allow_url_routing"):
        v = getattr(config, name)
        assert isinstance(v, tuple) and all(isinstance(x, str) and x for x in v), f"{name} = {v!r}"
    for name in ("model", "haiku_model", "sonnet_model", "opus_model"):
        v = getattr(config, name)
        assert v is None or isinstance(v, str), f"{name} = {v!r}"
    if workers is not None:
        integer("workers", workers, 1, 256)
    for url in [config.url, *(b.url for b in config.backends)]:
        try:
            urlsplit(url).port  # noqa: B018 - raises on a port that is not a number or out of range
        except ValueError:
            raise AssertionError(f"url {url!r} has an invalid port") from None
    for b in config.backends:
        assert isinstance(b.name, str) and isinstance(b.url, str) and b.dialect in cp.BACKENDS, b
        assert b.api_key is None or isinstance(b.api_key, str), f"backend {b.name}: api_key = {b.api_key!r}"
        if b.max_tokens is not None:
            integer(f"backend {b.name}: max_tokens", b.max_tokens, 1)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in b.headers), b.headers
    for r in config.routes:
        assert isinstance(r.match, str) and isinstance(r.backend, str), r
        assert r.model is None or isinstance(r.model, str), f"route {r.match}: model = {r.model!r}"
        assert all(isinstance(n, str) and (m is None or isinstance(m, str)) for n, m in r.fallbacks), r


# ---- the properties -------------------------------------------------------------------------------------------

@SETTINGS
@given(doc=config_docs())
def test_a_config_file_names_its_mistake_or_builds_a_config(config_path, doc):
    kw = load(config_path, doc)
    if kw is not None:
        build(kw)


@SETTINGS
@given(doc=config_docs())
def test_an_accepted_config_file_has_the_types_of_the_flags(config_path, doc):
    """Stricter than the contract above: what the loader accepts must also be what the flags would accept
    (else the mistake surfaces later: a TypeError on the first retry, a ValueError from logging at start-up, a
    bind to port 70000). Files the loader or Config mishandle are the test above's to report."""
    try:
        kw = load(config_path, doc)
        if kw is None:
            return
        config, workers = build(kw)
    except Exception:  # noqa: BLE001 - reported by test_a_config_file_names_its_mistake_or_builds_a_config
        assume(False)
    check_well_typed(config, workers)


@st.composite
def one_wrong_value(draw: Any) -> tuple[Doc, str, int]:
    """A valid file with exactly one key of one table given any TOML value: the only thing that can be wrong."""
    doc = Doc()
    table = draw(st.sampled_from(["server", "backends", "routes"]))
    good_server = {"port": 8082}
    good_backend = {"name": "ds", "url": "api.deepseek.com/v1"}
    good_route = {"match": "*haiku*", "backend": "default", "model": "deepseek-chat"}  # not "ds": see name
    keys = {"server": sorted(SERVER_GOOD), "backends": BACKEND_KEYS, "routes": ROUTE_KEYS}[table]
    key = draw(st.sampled_from(keys))
    value = draw(st.one_of(TOML_VALUE, st.sampled_from([[], {}, "", 0, -1, True, 70000, 1.5])))
    for t, values in (("server", good_server), ("backends", good_backend), ("routes", good_route)):
        values = {**values, key: value} if t == table else values
        doc.add(f"[[{t}]]" if t != "server" else "[server]", t, 0, None, header=True)
        doc.data[t] = [values] if t != "server" else values
        for k, v in values.items():
            draw(key_line(doc, t, 0, k, v))
        doc.add("")
    line = next(n for n, w in doc.where.items() if w == (table, 0, key))
    return doc, key, line


@SETTINGS
@given(case=one_wrong_value())
def test_one_wrong_value_is_reported_on_its_own_line(config_path, case):
    doc, key, line = case
    write(config_path, doc)
    try:
        kw = cp.load_config_file(config_path)
    except cp.ConfigFileError as exc:
        prefix = f"{config_path}:{line}: "
        assert str(exc).startswith(prefix) and names_key(str(exc)[len(prefix):], key), (
            f"only {key} (line {line}) is wrong, but the message is {str(exc)!r}\n{doc.text}")
        return
    build(kw)


# ---- the exact cases ------------------------------------------------------------------------------------------

EXACT = [("server", "proxy_keys", "s3cret"), ("server", "cors_origins", "x"), ("server", "allow_url_routing", "h"),
         ("server", "connect_timeout", "10"), ("server", "log_level", "verbose"), ("server", "retries", "3"),
         ("server", "port", 70000), ("server", "max_tokens", True), ("server", "host", ""),
         ("server", "read_timeout", float("nan")), ("backends", "max_tokens", True),
         ("backends", "url", "api.example.com:notaport"), ("backends", "api_key", ["k"]),
         ("backends", "api_key_env", UNSET_ENV), ("backends", "url", ""),
         ("routes", "fallbacks", "default"), ("routes", "fallbacks", 5), ("routes", "backend", ["default"])]


@pytest.mark.parametrize("table,key,value", EXACT, ids=[f"{t}.{k}={v!r}" for t, k, v in EXACT])
def test_exact_cases(config_path, table, key, value):
    doc = Doc()
    base = {"server": {}, "backends": {"name": "ds", "url": "api.deepseek.com/v1"},
            "routes": {"match": "*", "backend": "default"}}[table]
    values = {**base, key: value}
    doc.add(f"[{table}]" if table == "server" else f"[[{table}]]", table, 0, None, header=True)
    for k, v in values.items():
        doc.add(f"{k} = {toml_value(v)}", table, 0, k)
    doc.data[table] = values if table == "server" else [values]
    kw = load(config_path, doc)
    if kw is not None:
        check_well_typed(*build(kw))


TOP_LEVEL = {"an_unknown_table": ("[[backends]]\nname = \"ds\"\nurl = \"x.example\"\n[extra]\na = 1\n", 4, "extra"),
             "backends_not_an_array_of_tables": ("backends = 5\n", 1, "backends"),
             "server_not_a_table": ("server = \"x\"\n", 1, "server"),
             "a_line_separator_inside_a_string": ("[server]\nmodel = \"a\u2028b\"\nprot = 1\n", 3, "prot"),
             "a_next_line_char_inside_a_string": ("[server]\nmodel = \"a\u0085b\"\nprot = 1\n", 3, "prot")}


@pytest.mark.parametrize("text,line,key", TOP_LEVEL.values(), ids=TOP_LEVEL.keys())
def test_mistakes_outside_the_known_tables_name_their_line(config_path, text, line, key):
    """Lines are counted as TOML counts them (only \\n ends a line; U+2028 or U+0085 inside a string does not)."""
    with open(config_path, "w", encoding="utf-8") as fh:
        fh.write(text)
    with pytest.raises(cp.ConfigFileError) as info:
        cp.load_config_file(config_path)
    prefix = f"{config_path}:{line}: "
    assert str(info.value).startswith(prefix) and names_key(str(info.value)[len(prefix):], key), str(info.value)


LIST_SETTINGS = {"proxy_keys": "s3cret", "cors_origins": "https://app.example", "allow_url_routing": "api.ex.com"}


@pytest.mark.parametrize("key,value", LIST_SETTINGS.items(), ids=LIST_SETTINGS.keys())
def test_a_string_for_a_list_is_one_item_never_its_characters(config_path, key, value):
    doc = Doc()
    doc.add("[server]", "server", 0, None, header=True)
    doc.add(f"{key} = {toml_value(value)}", "server", 0, key)
    doc.data["server"] = {key: value}
    kw = load(config_path, doc)
    if kw is None:
        return  # an error naming the line is fine
    config, _ = build(kw)
    assert getattr(config, key) == (value,), f"{key} = {value!r} became {getattr(config, key)!r}"


def test_a_proxy_key_string_does_not_admit_its_characters(config_path, loop_thread):
    import httpx
    with open(config_path, "w") as fh:
        fh.write('[server]\nproxy_keys = "s3cret"\n')
    try:
        kw = cp.load_config_file(config_path)
    except cp.ConfigFileError as exc:
        assert str(exc).startswith(f"{config_path}:2: ") and "proxy_keys" in str(exc), str(exc)
        return
    config, _ = build(kw)
    server = ProxyServer(loop_thread, config)
    try:
        body = {"model": "claude-x", "messages": [{"role": "user", "content": "hi"}]}

        def status(key: str) -> int:
            return httpx.post(server.url + "/v1/messages/count_tokens", json=body, timeout=5,
                              headers={"x-api-key": key, "anthropic-version": "2023-06-01"}).status_code
        for key in ("s", "3", "c", "r", "e", "t"):
            assert status(key) == 401, f"proxy_keys = \"s3cret\" lets in x-api-key: {key}"
        assert status("s3cret") == 200
    finally:
        server.close()


def test_the_writer_round_trips():
    """This file's TOML writer against tomllib, on the awkward values (the properties rely on it)."""
    values = ["", "a\"b\\c", "\u0000\u001f\u007f", "日本🙂", 0, -(2**63), 2**63 - 1, 1.5, -0.0, 1e300, 5e-324,
              float("inf"), float("-inf"), float("nan"), True, dt.datetime(1979, 5, 27, 7, 32, 0, 999),
              dt.datetime(1, 1, 1, tzinfo=dt.UTC), dt.date(2024, 2, 29), dt.time(23, 59, 59, 1),
              [1, "a", [True]], {"k": {"n": [1.0]}, "with space": 1}]
    for v in values:
        parsed = tomllib.loads(f"x = {toml_value(v)}\n")["x"]
        assert same(parsed, v), (v, parsed)
    assert os.environ.get(SET_ENV) and not os.environ.get(UNSET_ENV)
