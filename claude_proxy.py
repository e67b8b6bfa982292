#!/usr/bin/env python3
# /// script
# requires-python = ">=3.11"
# dependencies = [
#     "aiohttp>=3.9,<4",
#     "click>=8.1,<9",
# ]
# ///
"""claude_proxy: an API translator between the Anthropic Messages and OpenAI Chat Completions dialects.

Anthropic front door: Claude Code, the ``anthropic`` SDK and other Anthropic clients call ``POST /v1/messages``;
the proxy translates each request to ``POST {url}/chat/completions`` on OpenAI, Gemini, DeepSeek, Groq,
OpenRouter, Ollama, vLLM or llama.cpp, and translates the answer (JSON or SSE stream) back, event for event.

OpenAI front door: LibreChat, SillyTavern, Open WebUI and the ``openai`` SDK call ``POST /v1/chat/completions``
and reach Claude through an Anthropic backend (``--backend anthropic``). Same-dialect pairs are passed through.

Usage::

    # a local Ollama, no key at all
    python claude_proxy.py --model qwen2.5-coder:32b

    # DeepSeek for everything Claude Code asks for
    python claude_proxy.py --url api.deepseek.com/v1 --api-key sk-... --model deepseek-chat

    # OpenAI-only tools (LibreChat, SillyTavern) reach Claude at http://127.0.0.1:8082/v1
    python claude_proxy.py --backend anthropic --api-key sk-ant-... --model claude-sonnet-4-5

Then point Claude Code at it::

    ANTHROPIC_BASE_URL=http://127.0.0.1:8082 ANTHROPIC_API_KEY=unused claude

The module is importable: translators are pure functions (``anthropic_to_openai_request``,
``openai_to_anthropic_response``, ``openai_to_anthropic_request``, ``anthropic_to_openai_response``), the stream
translators are ``OpenAIToAnthropicStream`` and ``AnthropicToOpenAIStream``, SSE parsing is ``SSEParser``, and
``make_app(config)`` builds the aiohttp application.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import codecs
import collections
import contextlib
import dataclasses
import fnmatch
import functools
import hashlib
import hmac
import ipaddress
import json
import logging
import math
import os
import random
import re
import secrets
import shlex
import shutil
import signal
import socket
import ssl
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, Self
from urllib.parse import urlsplit

try:
    import aiohttp
    from aiohttp import web
except ImportError as _missing:  # run before `pip install -r requirements.txt`: say so, not a traceback
    if __name__ == "__main__":
        sys.exit(f"claude_proxy needs aiohttp and click ({_missing}).\n"
                 f"Install them with: python3 -m pip install -r requirements.txt")
    raise

# One encoder, not one per call; ASCII-only, so a lone surrogate the standard library's parser let in (orjson
# refuses them) is written as an escape rather than failing to encode as UTF-8 halfway through a stream.
_ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"))
json_loads: Callable[[str | bytes], Any]

try:  # optional speed-up; the standard library is the fallback
    import orjson  # type: ignore[import-not-found,unused-ignore]

    def json_dumps(obj: Any) -> str:
        try:
            return orjson.dumps(obj).decode()
        except TypeError:  # nested deeper than orjson's 255 levels: the standard library goes to ~1000
            return _ENCODER.encode(obj)

    json_loads = orjson.loads
except ImportError:  # pragma: no cover - depends on the environment
    def json_dumps(obj: Any) -> str:
        return _ENCODER.encode(obj)

    json_loads = json.loads

__version__ = "0.3.0"
log = logging.getLogger("claude_proxy")


# ======================================================================================================
# 1. Configuration
# ======================================================================================================

DEFAULT_URL = "http://localhost:11434/v1"
DEFAULT_ANTHROPIC_URL = "https://api.anthropic.com"
BACKENDS = ("openai", "anthropic", "responses")
TIERS = ("haiku", "sonnet", "opus")
REASONING_EFFORT_CHOICES = ("off", "auto", "minimal", "low", "medium", "high")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
# Mid-conversation system turns: kept in place, and folded into user turns once a backend refuses them (unset);
# or decided up front for a backend known either way.
SYSTEM_TURNS = ("keep", "fold")
WEB_SEARCH_KEY_ENV = "CLAUDE_PROXY_WEB_SEARCH_KEY"
# Web search providers, and the API address of those that have one (SearXNG is self-hosted: its address is needed).
WEB_SEARCH_PROVIDERS = ("searxng", "brave", "tavily")
WEB_SEARCH_URLS = {"brave": "https://api.search.brave.com/res/v1/web/search", "tavily": "https://api.tavily.com/search"}


def normalize_backend_url(url: str) -> str:
    """Give a bare host a scheme and strip what users paste by habit (trailing ``/`` or ``/chat/completions``).

    ``https://`` is assumed, except for loopback hosts where a local server (Ollama, vLLM) almost never has TLS.
    """
    url = url.strip()
    if not url:
        raise ValueError("backend URL is empty")
    if "://" not in url:
        host = url.split("/", 1)[0]
        hostname = host.rsplit(":", 1)[0].strip("[]") if not host.startswith("[") else host[1:].split("]")[0]
        url = ("http://" if _is_loopback_name(hostname) else "https://") + url
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ValueError(f"backend URL has an invalid port: {url!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"backend URL must be http(s)://host[:port][/path], got {url!r}")
    url = url.rstrip("/")
    for suffix in ("/chat/completions", "/completions", "/messages"):
        url = url.removesuffix(suffix)
    return url


def _is_loopback_name(host: str) -> bool:
    if host in ("localhost", "::1") or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_size(text: str | int) -> int:
    """``32MiB``, ``32M``, ``512k``, ``1048576`` → bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    m = re.fullmatch(r"\s*(\d{1,15}(?:\.\d{1,6})?)\s*([kmg]?)(?:i?b)?\s*", str(text), re.IGNORECASE)
    if not m:
        raise ValueError(f"expected a size like 32MiB or 1048576, got {str(text)[:40]!r}")
    return int(float(m.group(1)) * 1024 ** " kmg".index(m.group(2).lower() or " "))


def str_list(value: Any) -> tuple[str, ...]:
    """A list setting from a flag (repeatable, comma-separated) or Python: a bare string is one item, never a
    sequence of characters."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(x, str) for x in items):
        raise ValueError(f"expected a list of strings, got {describe_value(value)}")
    return tuple(x.strip() for item in items for x in item.split(",") if x.strip())


def describe_value(value: Any, secret: bool = False) -> str:
    """A value as a mistake shows it: its type, then itself, shortened (a secret one: its type alone)."""
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
             tuple: "a list", dict: "a table"}
    kind = kinds.get(type(value), f"a {type(value).__name__}")
    if secret:
        return kind
    shown = json_dumps(value) if isinstance(value, (bool, int, float, str)) else str(value)
    return f"{kind} {shown[:60]}{'…' if len(shown) > 60 else ''}"


@dataclass(frozen=True)
class Setting:
    """The type of one setting, shared by the flags' values, ``Config`` and the config file."""
    kind: str  # "str", "int", "float", "bool", "choice", "list", "names" (a string or a list), "size", "table"
    low: float | None = None  # smallest allowed (for "float" with ``open_low``: must be above it)
    high: float | None = None
    choices: tuple[str, ...] = ()
    open_low: bool = False
    secret: bool = False  # a mistake shows the value's type only, never the value (keys, headers)

    def check(self, value: Any) -> Any:
        """``value`` as the setting holds it, or ValueError saying what was expected and what came."""
        converted = self._convert(value)
        if converted is None:
            raise ValueError(f"expected {self.expected()}, got {describe_value(value, self.secret)}")
        return converted

    def expected(self) -> str:
        return {"list": "a list of strings", "names": "a string or a list of strings", "size": "a size like 32MiB or 1048576", "table": "a table of strings",
                "choice": f"one of {', '.join(self.choices)}", "str": "a non-empty string", "bool": "true or false",
                "int": f"an integer{self._range()}", "float": f"a number{self._range()}"}[self.kind]

    def _convert(self, value: Any) -> Any:
        """The value as the setting holds it; None when it does not fit."""
        if self.kind in ("list", "names"):
            value = [value] if self.kind == "names" and isinstance(value, str) else value
            return str_list(value) if isinstance(value, (list, tuple)) and all(
                isinstance(x, str) for x in value) else None
        if self.kind == "table":
            ok = isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
            return tuple(value.items()) if ok else None
        if self.kind == "choice":
            return value.lower() if isinstance(value, str) and value.lower() in self.choices else None
        if self.kind == "str":
            return value if isinstance(value, str) and value.strip() else None
        if self.kind == "bool":
            return value if isinstance(value, bool) else None
        if self.kind == "size":
            try:
                number: Any = parse_size(value) if isinstance(value, (int, str)) and not isinstance(value, bool) \
                    else None
            except ValueError:
                return None
        else:
            numeric = (int,) if self.kind == "int" else (int, float)
            ok = isinstance(value, numeric) and not isinstance(value, bool) and math.isfinite(value)
            number = (value if self.kind == "int" else float(value)) if ok else None
        return number if number is not None and self._in_range(number) else None

    def _in_range(self, number: float) -> bool:
        too_low = self.low is not None and (number <= self.low if self.open_low else number < self.low)
        return not too_low and not (self.high is not None and number > self.high)

    def _range(self) -> str:
        if self.low is not None and self.high is not None:
            return f" from {self.low:g} to {self.high:g}"
        if self.low is not None:
            return f" {'above' if self.open_low else 'of at least'} {self.low:g}"
        return ""


POSITIVE_SECONDS = Setting("float", 0, open_low=True)
# Every [server] key and the flag of the same name (flags use "-" for "_").
SERVER_SETTINGS = {
    "host": Setting("str"), "port": Setting("int", 0, 65535), "max_tokens": Setting("int", 1),
    "reasoning_effort": Setting("choice", choices=REASONING_EFFORT_CHOICES), "connect_timeout": POSITIVE_SECONDS,
    "read_timeout": POSITIVE_SECONDS, "retries": Setting("int", 0, 10), "max_body": Setting("size", 1),
    "log_level": Setting("choice", choices=LOG_LEVELS), "log_format": Setting("choice", choices=LOG_FORMATS),
    "proxy_keys": Setting("list", secret=True),
    "cors_origins": Setting("list"), "drain_timeout": Setting("float", 0), "ping_interval": Setting("float", 0.01),
    "max_connections": Setting("int", 1), "allow_url_routing": Setting("list"), "workers": Setting("int", 1, 256),
    "system_turns": Setting("choice", choices=SYSTEM_TURNS), "context_window": Setting("int", 1),
    "model": Setting("str"), "haiku_model": Setting("str"), "sonnet_model": Setting("str"),
    "opus_model": Setting("str"), "web_search": Setting("choice", choices=WEB_SEARCH_PROVIDERS),
    "web_search_url": Setting("str"), "web_search_key": Setting("str", secret=True),
    "web_search_max_results": Setting("int", 1, 50), "web_search_timeout": POSITIVE_SECONDS,
    "upstream_proxy": Setting("str", secret=True), "ca_file": Setting("str"),
}
WEB_SEARCH_SETTINGS = {"provider": Setting("choice", choices=WEB_SEARCH_PROVIDERS), "url": Setting("str"),
                       "api_key": Setting("str", secret=True), "api_key_env": Setting("str"),
                       "max_results": Setting("int", 1, 50), "timeout": POSITIVE_SECONDS}
BACKEND_SETTINGS = {
    "name": Setting("str"), "url": Setting("str"), "api_key": Setting("str", secret=True),
    "api_keys": Setting("list", secret=True), "api_key_env": Setting("names"),
    "backend": Setting("choice", choices=BACKENDS), "max_tokens": Setting("int", 1),
    "headers": Setting("table", secret=True), "system_turns": Setting("choice", choices=SYSTEM_TURNS),
    "context_window": Setting("int", 1), "cooldown_failures": Setting("int", 1),
    "cooldown_seconds": Setting("float", 0), "proxy": Setting("str", secret=True), "ca_file": Setting("str"),
    "tls_verify": Setting("bool"), "price_input": Setting("float", 0), "price_output": Setting("float", 0),
}
ROUTE_CONDITIONS = {"thinking": Setting("bool"), "min_input_tokens": Setting("int", 0), "images": Setting("bool"),
                    "web_search": Setting("bool"), "tools": Setting("bool"), "subagent": Setting("bool")}
ROUTE_SETTINGS = {"match": Setting("str"), "backend": Setting("str"), "model": Setting("str"),
                  "fallbacks": Setting("list"), "context_window": Setting("int", 1), "name": Setting("str"),
                  "price_input": Setting("float", 0), "price_output": Setting("float", 0), **ROUTE_CONDITIONS}


@dataclass(frozen=True)
class Backend:
    """One upstream service: where it is, how to authenticate, which dialect it speaks."""
    name: str
    url: str
    api_key: str | None = None
    dialect: str = "openai"
    max_tokens: int | None = None
    headers: tuple[tuple[str, str], ...] = ()
    system_turns: str | None = None  # "keep" | "fold" | None: keep until the backend refuses them
    context_window: int | None = None  # tokens, where known: overflow errors can then always give both numbers
    api_keys: tuple[str, ...] = ()  # a pool, taken in turn (``api_key`` is the first)
    cooldown_failures: int = 3  # failures in a row (connection errors, 5xx) after which it is skipped …
    cooldown_seconds: float = 30.0  # … for this long, in favour of its route's fallbacks
    proxy: str | None = None  # an HTTP proxy for it (else HTTPS_PROXY / HTTP_PROXY / NO_PROXY decide)
    ca_file: str | None = None  # the CA bundle its certificate is checked against (else the system's)
    tls_verify: bool = True
    price_input: float | None = None  # per million tokens, for the cost in /usage
    price_output: float | None = None

    def __post_init__(self) -> None:
        if self.api_key and not self.api_keys:
            object.__setattr__(self, "api_keys", (self.api_key,))
        object.__setattr__(self, "api_key", self.api_keys[0] if self.api_keys else None)

    @property
    def chat_url(self) -> str:
        return self.url + "/chat/completions"

    @property
    def anthropic_url(self) -> str:
        """``{url}/v1``: both ``api.anthropic.com`` and ``api.anthropic.com/v1`` are what users type."""
        return self.url if self.url.endswith("/v1") else self.url + "/v1"

    @property
    def endpoint(self) -> str:
        return {"anthropic": self.anthropic_url + "/messages", "responses": self.url + "/responses"}.get(
            self.dialect, self.chat_url)


@dataclass(frozen=True)
class WebSearch:
    """The search provider that answers the web searches the proxy runs for backends that cannot."""
    provider: str
    url: str
    api_key: str | None = None
    max_results: int = 8
    timeout: float = 15.0  # seconds for one search: a slow provider must not hold the answer for long


@dataclass(frozen=True)
class Route:
    """Requests whose model matches ``match`` (a case-insensitive glob) and that meet every condition set go to
    ``backend`` as ``model`` (None: as requested); on 429/5xx/connection errors before the first byte the
    ``fallbacks`` are tried in order. ``name`` is what the log line calls it."""
    match: str
    backend: str
    model: str | None = None
    fallbacks: tuple[tuple[str, str | None], ...] = ()
    context_window: int | None = None  # of ``model`` (or the requested one) on ``backend``; else the backend's
    name: str | None = None
    thinking: bool | None = None  # the request enables thinking (or is not thinking)
    min_input_tokens: int | None = None  # the estimate of its input is at least this
    images: bool | None = None  # it carries an image anywhere
    web_search: bool | None = None  # it offers the web search server tool
    tools: bool | None = None  # it offers any tools
    subagent: bool | None = None  # a Claude Code subagent sent it (x-claude-code-agent-id)
    doors: tuple[str, ...] = ()  # only for requests through these front doors (set by the proxy, not the file)
    price_input: float | None = None  # per million tokens (else the backend's), for the cost in /usage
    price_output: float | None = None

    def matches(self, requested: str) -> bool:
        return fnmatch.fnmatchcase(requested.lower(), self.match.lower())

    def applies(self, requested: str, facts: RequestFacts | None) -> bool:
        if not self.matches(requested):
            return False
        if self.doors and (facts is None or facts.door not in self.doors):
            return False
        for name in ("thinking", "images", "web_search", "tools", "subagent"):
            wanted = getattr(self, name)
            if wanted is not None and (facts is None or getattr(facts, name) != wanted):
                return False
        return self.min_input_tokens is None or (facts is not None and facts.input_tokens >= self.min_input_tokens)


CLAUDE_NAME_GLOBS = ("*claude*", "*haiku*", "*sonnet*", "*opus*")
# The names Codex CLI asks for (it shapes its request by the name, so it keeps one it knows): on the Responses
# door they go to --model as Claude names do on the Anthropic door, unless the backend is OpenAI's own.
OPENAI_NAME_GLOBS = ("gpt-*", "o[0-9]*", "codex-*", "*-codex*")
OPENAI_OWN = re.compile(r"^https://api\.openai\.com(/|$)")
CLAUDE_TIER_NAMES = {"haiku": "claude-haiku-4-5", "sonnet": "claude-sonnet-4-5", "opus": "claude-opus-4-1"}


@dataclass(frozen=True)
class Routing:
    """Where each request goes: the backends by name, the routes in order (first match wins) and the default
    backend. Built once from the settings."""
    backends: dict[str, Backend]
    routes: tuple[Route, ...]
    default: str

    @classmethod
    def build(cls, config: Config) -> Routing:
        table = {b.name: b for b in config.backends}
        assert config.url, "normalised by Config before routing is built"
        table.setdefault("default", Backend("default", config.url, None, config.backend,
                                            system_turns=config.system_turns, context_window=config.context_window,
                                            api_keys=str_list(config.api_key or ()), proxy=config.upstream_proxy,
                                            ca_file=config.ca_file))
        default = config.default_backend or "default"
        if default not in table:
            raise ValueError(f"default backend {default!r} is not defined")
        # Flags come first (they override the file), then the file's routes, then the catch-all.
        routes = [Route(f"*{tier}*", default, config.tier_model(tier), name=f"--{tier}-model") for tier in TIERS
                  if config.tier_model(tier)]
        if config.model:
            routes += [Route(glob, default, config.model, name="--model") for glob in CLAUDE_NAME_GLOBS]
            if not OPENAI_OWN.match(table[default].url):
                routes += [Route(glob, default, config.model, name="--model", doors=("responses",))
                           for glob in OPENAI_NAME_GLOBS]
        routes += [r if r.name else dataclasses.replace(r, name=f"#{i}") for i, r in enumerate(config.routes, 1)]
        routes += [Route("*", default, None, name="default")]
        for r in routes:
            for name in [r.backend] + [f[0] for f in r.fallbacks]:
                if name not in table:
                    raise ValueError(f"route {r.match!r} names backend {name!r}, which is not defined")
        return cls(table, tuple(routes), default)

    @property
    def primary(self) -> Backend:
        """The default backend: the flags' one, or the --config one that replaces it."""
        return self.backends[self.default]

    def route(self, requested: str, facts: RequestFacts | None = None) -> tuple[str, list[tuple[Backend, str]]]:
        """Where a request for ``requested`` goes, and the name of the route that sent it there: the first route
        whose glob and conditions hold, then its fallbacks; ``BACKEND,MODEL`` straight to that backend.

        By default a tier word (haiku/sonnet/opus) picks its override; any other Claude name gets ``--model``;
        a name that is neither goes to the backend as named, so ``ANTHROPIC_MODEL=deepseek-reasoner`` just works.
        """
        backend, comma, model = requested.partition(",")
        if comma and backend in self.backends and model:
            return f"{backend},", [(self.backends[backend], model)]
        route = next(r for r in self.routes if r.applies(requested, facts))  # the catch-all always applies
        return route.name or "", [(self.backends[route.backend], route.model or requested)] + [
            (self.backends[b], m or requested) for b, m in route.fallbacks]

    def candidates(self, requested: str, facts: RequestFacts | None = None) -> list[tuple[Backend, str]]:
        return self.route(requested, facts)[1]

    def backend_model(self, requested: str) -> str:
        return self.candidates(requested)[0][1]

    def mapped_models(self) -> list[tuple[str, Backend, str]]:
        """(client-facing id, backend, backend model) for ``/v1/models``: the Claude tier names where a route
        maps them, and every model a route names."""
        out: list[tuple[str, Backend, str]] = []
        for name in CLAUDE_TIER_NAMES.values():
            backend, target = self.candidates(name)[0]
            if target != name:
                out.append((name, backend, target))
        for route in self.routes:
            for bname, model in [(route.backend, route.model), *route.fallbacks]:
                if model:
                    out.append((model, self.backends[bname], model))
        return list(dict.fromkeys(out))

    def window(self, backend: Backend, model: str) -> int | None:
        """The configured context window of ``model`` on ``backend``: its route's, else the backend's."""
        return next((r.context_window for r in self.routes if r.context_window and r.backend == backend.name
                     and (r.model == model if r.model else r.matches(model))), backend.context_window)


@dataclass
class Config:
    """The settings, from flags, the environment and the config file; checked and normalised on creation."""
    url: str | None = None  # None: a local Ollama, or api.anthropic.com with --backend anthropic
    backend: str = "openai"
    api_key: str | None = None
    model: str | None = None
    haiku_model: str | None = None
    sonnet_model: str | None = None
    opus_model: str | None = None
    host: str = "127.0.0.1"
    port: int = 8082
    max_tokens: int | None = None
    reasoning_effort: str = "off"
    connect_timeout: float = 10.0
    read_timeout: float = 600.0
    retries: int = 2
    max_body: int = 32 * 1024 * 1024
    log_level: str = "info"
    log_format: str = "text"
    proxy_keys: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    drain_timeout: float = 30.0
    ping_interval: float = 15.0
    max_connections: int = 1000
    workers: int = 1
    system_turns: str | None = None  # for the flags' backend; [[backends]] entries have their own
    context_window: int | None = None  # likewise
    web_search: str | None = None  # the provider; None: searches answer "unavailable"
    web_search_url: str | None = None
    web_search_key: str | None = None
    web_search_max_results: int = 8
    web_search_timeout: float = 15.0
    upstream_proxy: str | None = None  # for backends that name none
    ca_file: str | None = None  # likewise
    backends: tuple[Backend, ...] = ()  # from --config
    routes: tuple[Route, ...] = ()  # from --config
    default_backend: str | None = None  # a --config backend that replaces the flags' one as the default
    allow_url_routing: tuple[str, ...] = ()
    routing: Routing = field(init=False, repr=False)
    search: WebSearch | None = field(init=False, repr=False)
    secret_values: tuple[str, ...] = field(init=False, repr=False)  # every key it holds: kept out of logs
    loopback_only: bool = field(init=False)  # read on every request (the Host check): decided once

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        for name, setting in SERVER_SETTINGS.items():
            value = getattr(self, name)
            if value is not None:
                try:
                    setattr(self, name, str_list(value) if setting.kind == "list" else setting.check(value))
                except ValueError as exc:
                    raise ValueError(f"--{name.replace('_', '-')}: {exc}") from None
        self.url = normalize_backend_url(self.url or (
            DEFAULT_ANTHROPIC_URL if self.backend == "anthropic" else DEFAULT_URL))
        self.cors_origins = tuple(o.rstrip("/") for o in self.cors_origins)
        self.allow_url_routing = tuple(h.lower() for h in self.allow_url_routing)
        for key in ("upstream_proxy", "ca_file"):
            problem = _network_setting_problem(key.replace("upstream_", ""), getattr(self, key))
            if problem:
                raise ValueError(f"--{key.replace('_', '-')}: {problem}")
        if self.upstream_proxy or self.ca_file:  # the defaults of every backend that sets none itself
            self.backends = tuple(dataclasses.replace(b, proxy=b.proxy or self.upstream_proxy,
                                                      ca_file=b.ca_file or self.ca_file) for b in self.backends)
        self.routing = Routing.build(self)
        self.search = self._web_search()
        self.secret_values = tuple(k for b in self.routing.backends.values() for k in b.api_keys) + \
            self.proxy_keys + ((self.web_search_key,) if self.web_search_key else ()) + tuple(
                urlsplit(b.proxy).password or "" for b in self.routing.backends.values() if b.proxy)
        self.loopback_only = _is_loopback_name(self.host.strip("[]"))

    def tier_model(self, tier: str) -> str | None:
        return getattr(self, f"{tier}_model")

    def _web_search(self) -> WebSearch | None:
        if self.web_search is None:
            if self.web_search_url or self.web_search_key:
                raise ValueError("--web-search-url and --web-search-key need --web-search searxng|brave|tavily")
            return None
        url = self.web_search_url or WEB_SEARCH_URLS.get(self.web_search)
        if not url:
            raise ValueError(f"--web-search {self.web_search} needs --web-search-url (the address of your "
                             f"{self.web_search} server)")
        if self.web_search != "searxng" and not self.web_search_key:
            raise ValueError(f"--web-search {self.web_search} needs --web-search-key (or {WEB_SEARCH_KEY_ENV})")
        try:
            url = normalize_backend_url(url)
        except ValueError as exc:
            raise ValueError(f"--web-search-url: {str(exc).replace('backend URL', 'URL')}") from None
        return WebSearch(self.web_search, url, self.web_search_key, self.web_search_max_results,
                         self.web_search_timeout)


# ---- the --config file (TOML) ---------------------------------------------------------------------------

class ConfigFileError(ValueError):
    pass


def _line_of(text: str, table: str | None, index: int, key: str | None) -> int | None:
    """1-based line of ``key`` inside the ``index``-th ``[[table]]`` (or ``[table]``), or of a top-level ``key``
    (a ``key = …`` line or a ``[key]`` header), for error messages."""
    lines = text.split("\n")  # TOML's line ends; splitlines() would also split at U+2028 inside strings
    header = re.compile(rf"\s*\[\[?\s*{re.escape(table or key or '')}\s*\]\]?\s*(#.*)?\r?$")
    assignment = re.compile(rf"\s*[\"']?{re.escape(key or table or '')}[\"']?\s*=")
    if table is None or key is None:  # a top-level key, or a whole table: its header, else its assignment
        found = [i for i, line in enumerate(lines) if header.match(line)] or [
            i for i, line in enumerate(lines) if assignment.match(line) and not _inside_table(lines, i)]
        return found[min(index, len(found) - 1)] + 1 if found else None
    starts = [i for i, line in enumerate(lines) if header.match(line)]
    if not starts:  # written inline (backends = [{ … }]): the line of that assignment
        return _line_of(text, None, 0, table)
    if index >= len(starts):
        return None
    for i in range(starts[index] + 1, len(lines)):
        if re.match(r"\s*\[", lines[i]):
            break
        if assignment.match(lines[i]):
            return i + 1
    return starts[index] + 1


def _inside_table(lines: list[str], i: int) -> bool:
    return any(re.match(r"\s*\[", line) for line in lines[:i])


class _ConfigText:
    """A parsed config file and its text, so that every mistake can name its line."""

    def __init__(self, path: str):
        import tomllib
        self.path = path
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
        except OSError as exc:
            raise ConfigFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
        self.text = raw.decode("utf-8", "replace")
        try:
            self.data = tomllib.loads(self.text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigFileError(f"{path}: {exc}") from None

    def fail(self, message: str, table: str | None, index: int = 0, key: str | None = None) -> ConfigFileError:
        line = _line_of(self.text, table, index, key)
        return ConfigFileError(f"{self.path}{f':{line}' if line else ''}: {message}")

    def checked(self, entry: dict, settings: dict[str, Setting], table: str, index: int = 0) -> dict[str, Any]:
        """``entry`` with every value checked against its setting; unknown keys and wrong types name their line."""
        out = {}
        shown = f"[{table}]" if table in ("server", "web_search") else f"[[{table}]]"
        for key, value in entry.items():
            if key not in settings:
                raise self.fail(f"unknown key {key!r} in {shown} (known: {', '.join(sorted(settings))})", table,
                                index, key)
            try:
                out[key] = settings[key].check(value)
            except ValueError as exc:
                raise self.fail(f"{key}: {exc}", table, index, key) from None
        return out

    def entries(self, table: str, settings: dict[str, Setting]) -> Iterable[tuple[int, dict]]:
        """The checked entries of an array of tables."""
        items = self.data.get(table, [])
        if not isinstance(items, list):
            raise self.fail(f"{table} must be written [[{table}]]", table)
        for i, entry in enumerate(items):
            if not isinstance(entry, dict):
                raise self.fail(f"each [[{table}]] entry must be a table", table, i)
            yield i, self.checked(entry, settings, table, i)


def load_config_file(path: str) -> dict[str, Any]:
    """Read a --config TOML file into Config keyword arguments; every mistake names its line."""
    doc = _ConfigText(path)
    for key in doc.data:
        if key not in ("backends", "routes", "server", "web_search"):
            raise doc.fail(f"unknown key {key!r} (expected [[backends]], [[routes]], [server] or [web_search])", None,
                           0, key)
    server = doc.data.get("server", {})
    if not isinstance(server, dict):
        raise doc.fail("[server] must be a table", "server")
    out = doc.checked(server, SERVER_SETTINGS, "server")
    out.update(_config_web_search(doc))
    backends = _config_backends(doc)
    out["backends"] = tuple(backends)
    out["routes"] = tuple(_config_routes(doc, {b.name for b in backends} | {"default"}))
    if backends:
        out["default_backend"] = backends[0].name
    try:
        Config(**out)  # what is left to check is how the settings go together
    except ValueError as exc:
        raise doc.fail(str(exc), None) from None
    return out


def _config_web_search(doc: _ConfigText) -> dict[str, Any]:
    """The [web_search] table as Config keyword arguments."""
    table = doc.data.get("web_search", {})
    if not isinstance(table, dict):
        raise doc.fail("[web_search] must be a table", "web_search")
    entry = doc.checked(table, WEB_SEARCH_SETTINGS, "web_search")
    if "api_key_env" in entry:
        entry["api_key"] = os.environ.get(entry.pop("api_key_env")) or None
        if entry["api_key"] is None:
            raise doc.fail(f"web_search: api_key_env: environment variable {table['api_key_env']} is not set",
                           "web_search", 0, "api_key_env")
    if entry and "provider" not in entry:
        raise doc.fail("[web_search] needs provider = \"searxng\", \"brave\" or \"tavily\"", "web_search")
    return {"web_search" if k == "provider" else "web_search_key" if k == "api_key" else f"web_search_{k}": v
            for k, v in entry.items()}


def _config_backends(doc: _ConfigText) -> list[Backend]:
    backends: list[Backend] = []
    for i, b in doc.entries("backends", BACKEND_SETTINGS):
        name = b.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise doc.fail("[[backends]] needs a name (letters, digits, _ . -)", "backends", i, "name")
        if any(x.name == name for x in backends):
            raise doc.fail(f"backend {name!r} is defined twice", "backends", i, "name")
        if "url" not in b:
            raise doc.fail(f"backend {name!r} needs a url", "backends", i, "url")
        keys = tuple(b.get("api_keys", ())) or ((b["api_key"],) if "api_key" in b else ())
        for variable in b.get("api_key_env", ()):
            if not os.environ.get(variable):
                raise doc.fail(f"backend {name!r}: api_key_env: environment variable {variable} is not set",
                               "backends", i, "api_key_env")
            keys += tuple(str_list(os.environ[variable]))
        try:
            url = normalize_backend_url(b["url"])
        except ValueError as exc:
            raise doc.fail(f"backend {name!r}: {exc}", "backends", i, "url") from None
        for key in ("proxy", "ca_file"):
            problem = _network_setting_problem(key, b.get(key))
            if problem:
                raise doc.fail(f"backend {name!r}: {key}: {problem}", "backends", i, key)
        backends.append(Backend(name, url, None, b.get("backend", "openai"), b.get("max_tokens"), b.get("headers", ()),
                                b.get("system_turns"), b.get("context_window"), keys,
                                **{k: b[k] for k in ("cooldown_failures", "cooldown_seconds", "proxy", "ca_file",
                                                     "tls_verify", "price_input", "price_output") if k in b}))
    return backends


def _network_setting_problem(key: str, value: Any) -> str | None:
    """What is wrong with a proxy URL or a CA file, if anything (the proxy's credentials are never shown)."""
    if value is None:
        return None
    if key == "proxy":
        parts = urlsplit(value)
        return None if parts.scheme in ("http", "https") and parts.hostname else \
            f"expected http://[user:password@]host:port, got {redact_url(value)!r}"
    return None if os.path.isfile(value) else f"no such file: {value}"


def _config_routes(doc: _ConfigText, names: set[str]) -> list[Route]:
    routes = []
    for i, r in doc.entries("routes", ROUTE_SETTINGS):
        if "match" not in r:
            raise doc.fail("[[routes]] needs match = \"<glob>\"", "routes", i, "match")
        if r.get("backend") not in names:
            raise doc.fail(f"route {r['match']!r} names backend {r.get('backend')!r}, which is not defined "
                           f"(defined: {', '.join(sorted(names))})", "routes", i, "backend")
        fallbacks = []
        for fb in r.get("fallbacks", ()):
            bname, _, model = fb.partition(":")
            if bname not in names:
                raise doc.fail(f"route {r['match']!r}: fallback {fb!r} names backend {bname!r}, which is not "
                               f"defined", "routes", i, "fallbacks")
            fallbacks.append((bname, model or None))
        routes.append(Route(r["match"], r["backend"], r.get("model"), tuple(fallbacks), r.get("context_window"),
                            **{k: r[k] for k in ("name", "price_input", "price_output", *ROUTE_CONDITIONS) if k in r}))
    return routes


def redact_key(key: str | None) -> str:
    if not key:
        return "none"
    return f"{key[:3]}…{key[-4:]}" if len(key) > 12 else "***"


# ======================================================================================================
# 2. Errors
# ======================================================================================================

# Anthropic error type for each HTTP status the proxy can answer with (Anthropic's errors page).
ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 402: "billing_error", 403: "permission_error",
    404: "not_found_error", 408: "timeout_error", 413: "request_too_large", 429: "rate_limit_error",
    500: "api_error", 502: "api_error", 503: "overloaded_error", 504: "timeout_error", 529: "overloaded_error",
}
OPENAI_ERROR_TYPES = {
    "invalid_request_error": "invalid_request_error", "authentication_error": "authentication_error",
    "permission_error": "permission_error", "not_found_error": "invalid_request_error",
    "rate_limit_error": "rate_limit_error", "request_too_large": "invalid_request_error",
    "billing_error": "insufficient_quota", "overloaded_error": "service_unavailable_error",
    "timeout_error": "timeout_error", "api_error": "server_error",
}


class ProxyError(Exception):
    """Every failure the proxy reports: an HTTP status, an Anthropic error type and a human message."""

    def __init__(self, status: int, message: str, kind: str | None = None, headers: dict[str, str] | None = None,
                 retryable: bool | None = None):
        super().__init__(message)
        self.status = status
        self.kind = kind or ANTHROPIC_ERROR_TYPES.get(status) or (
            "invalid_request_error" if status < 500 else "api_error")
        self.message = message
        self.headers = headers or {}
        # Whether the same request may succeed if sent again (SDKs read x-should-retry): not for a proxy bug or
        # an answer the backend will shape the same way next time.
        self.retryable = status in (408, 429) or status >= 500 if retryable is None else retryable
        self.overflow: tuple[int | None, int | None] | None = None  # (prompt, window): the context is too small
        self.overflow_detail = ""

    def anthropic_body(self, request_id: str | None = None) -> dict:
        body: dict[str, Any] = {"type": "error", "error": {"type": self.kind, "message": self.message}}
        if request_id:
            body["request_id"] = request_id
        return body

    def openai_body(self) -> dict:
        if self.overflow is not None:  # OpenAI's own words, which OpenAI clients know
            prompt, window = self.overflow
            message = (f"This model's maximum context length is {window} tokens. However, your messages resulted "
                       f"in {prompt} tokens." if prompt and window else self.message)
            return {"error": {"message": message, "type": "invalid_request_error", "param": "messages",
                              "code": "context_length_exceeded"}}
        return {"error": {"message": self.message, "type": OPENAI_ERROR_TYPES.get(self.kind, self.kind),
                          "param": None, "code": self.kind}}


def bad_request(message: str) -> ProxyError:
    return ProxyError(400, message, "invalid_request_error")


def malformed(what: str) -> ProxyError:
    """A backend answer the proxy cannot translate; the handler adds which backend sent it."""
    return ProxyError(502, f"malformed answer: {what}", "api_error", retryable=False)


def _backend_message(body: str) -> str:
    """The backend's own words from an error body in any of the shapes OpenAI-compatible servers use."""
    text = body.strip()
    if not text:
        return ""
    try:
        data = json_loads(text)
    except ValueError:
        data = None
    if isinstance(data, list) and data and isinstance(data[0], dict):
        data = data[0]  # Gemini sometimes wraps the error in a list
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, str):
            return err
        if isinstance(err, dict):
            for key in ("message", "msg", "detail", "error"):
                val = err.get(key)
                if isinstance(val, str) and val:
                    return val
                if isinstance(val, dict) and isinstance(val.get("message"), str):
                    return val["message"]
        for key in ("message", "detail"):
            if isinstance(data.get(key), str):
                return data[key]
        return text[:500]
    if text.lstrip().startswith("<"):
        title = re.search(r"<title>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
        snippet = title.group(1).strip() if title else re.sub(r"<[^>]+>", " ", text)
        return "backend answered with an HTML page: " + " ".join(snippet.split())[:200]
    return text[:500]


# A prompt longer than the context window, as each server words it: (pattern, group of the prompt's tokens,
# group of the window). OpenAI (twice), vLLM and DeepSeek (twice), Gemini, Anthropic, llama.cpp's error fields.
_OVERFLOW_NUMBERS = (
    (re.compile(r"maximum context length is (\d+) tokens\. However, your messages resulted in (\d+) tokens", re.IGNORECASE), 2, 1),
    (re.compile(r"configured limit of (\d+) tokens\.?\s*Your messages resulted in (\d+) tokens", re.IGNORECASE), 2, 1),
    (re.compile(r"maximum context length is (\d+) tokens.*?\((\d+) in the messages", re.IGNORECASE | re.DOTALL), 2, 1),
    (re.compile(r"maximum context length is (\d+) tokens.{0,40}?request has (\d+) input tokens", re.IGNORECASE | re.DOTALL), 2, 1),
    (re.compile(r"input token count \((\d+)\) exceeds the maximum number of tokens allowed \((\d+)\)", re.IGNORECASE), 1, 2),
    (re.compile(r"prompt is too long[^0-9]*(\d+)\s*tokens?\s*>\s*(\d+)", re.IGNORECASE), 1, 2),
    (re.compile(r"n_prompt_tokens\W+(\d+).*?n_ctx\W+(\d+)", re.IGNORECASE | re.DOTALL), 1, 2),
)
# The general shapes, for servers that word it their own way.
_OVERFLOW_WORDING = re.compile(r"context[_ ]length[_ ]exceeded|exceed_context_size|maximum context length|context "
                               r"(?:window|size|length) (?:exceeded|is too small)|exceeds? the (?:available )?"
                               r"context|prompt is too long|too many (?:input |prompt )?tokens|input tokens exceed|"
                               r"input token count", re.IGNORECASE)


def context_overflow(text: str) -> tuple[int | None, int | None] | None:
    """(prompt tokens, context window) when ``text`` says the prompt alone does not fit, with what numbers it
    gives; None otherwise, including a prompt that fits with only ``max_tokens`` too large."""
    for pattern, prompt_group, window_group in _OVERFLOW_NUMBERS:
        m = pattern.search(text)
        if m:
            prompt, window = int(m.group(prompt_group)), int(m.group(window_group))
            return (prompt, window) if prompt >= window else None
    return (None, None) if _OVERFLOW_WORDING.search(text) else None


def prompt_too_long(prompt: int | None, window: int | None, detail: str) -> ProxyError:
    r"""Anthropic's own overflow error, which Claude Code recovers from by compacting the conversation: it reads
    both numbers with ``/prompt is too long[^0-9]*(\d+)\s*tokens?\s*>\s*(\d+)/i``."""
    numbers = f": {prompt} tokens > {window} maximum" if prompt and window else ""
    error = ProxyError(400, f"prompt is too long{numbers} ({detail})", "invalid_request_error")
    error.overflow = (prompt, window)
    error.overflow_detail = detail
    return error


def error_from_backend(status: int, body: str, headers: Any, backend: str) -> ProxyError:
    """Map a non-2xx backend answer to the status and error type Anthropic itself would use."""
    message = _backend_message(body) or f"backend answered HTTP {status} with an empty body"
    overflow = context_overflow(body) if 400 <= status < 500 else None
    if overflow is not None:
        return prompt_too_long(*overflow, f"{message} (backend {backend} answered HTTP {status})")
    message = f"{message} (backend {backend} answered HTTP {status})"
    out_headers = {}
    retry_after = headers.get("retry-after") if headers is not None else None
    if retry_after:
        out_headers["retry-after"] = retry_after
    if status == 422:
        status = 400
    if status in ANTHROPIC_ERROR_TYPES:
        return ProxyError(status, message, headers=out_headers)
    if 400 <= status < 500:
        return ProxyError(status, message, "invalid_request_error", out_headers)
    return ProxyError(status if 500 <= status < 600 else 502, message, "api_error", out_headers)


def scrub(text: str, secrets_: Iterable[str | None]) -> str:
    """Remove keys from text that may travel to a client or a log (backends echo keys in 401 bodies)."""
    for s in secrets_:
        if s and len(s) >= 4 and s in text:
            text = text.replace(s, redact_key(s))
    return text


def redact_url(url: str) -> str:
    """A URL for logs: query values (Gemini-style ``?key=``) and userinfo hidden."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = re.sub(r"=([^&]*)", "=***", parts.query)
    return parts._replace(netloc=netloc, query=query).geturl()


_BASE64_RUN = re.compile(r"([A-Za-z0-9+/]{120})[A-Za-z0-9+/=]{200,}")


def loggable_body(obj: Any, secrets_: Iterable[str | None] = (), limit: int = 4000) -> str:
    """A body for debug logs: base64 blobs shortened, keys removed, the whole truncated."""
    if isinstance(obj, bytes):
        text = obj.decode("utf-8", "replace")
    else:
        text = obj if isinstance(obj, str) else json_dumps(obj)
    text = scrub(_BASE64_RUN.sub(r"\1…", text), secrets_)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} chars in all)"


# ======================================================================================================
# 3. Request and response translators (pure: dict in, dict out)
# ======================================================================================================

# Block types an Anthropic client may legitimately send. Anything else is a 400 naming the type.
KNOWN_BLOCK_TYPES = {
    "text", "image", "document", "search_result", "tool_use", "tool_result", "thinking", "redacted_thinking",
    "tool_reference", "server_tool_use", "web_search_tool_result", "web_fetch_tool_result",
    "code_execution_tool_result", "bash_code_execution_tool_result", "text_editor_code_execution_tool_result",
    "tool_search_tool_result", "container_upload", "mcp_tool_use", "mcp_tool_result", "mid_conv_system",
}
# JSON-schema keywords Gemini's OpenAI endpoint rejects with "Unknown name ... Cannot find field".
SCHEMA_DROP_KEYS = {
    "$schema", "$id", "$comment", "$anchor", "additionalProperties", "unevaluatedProperties", "patternProperties",
    "propertyNames", "default", "examples", "title", "deprecated", "readOnly", "writeOnly", "contentEncoding",
    "contentMediaType", "exclusiveMinimum", "exclusiveMaximum", "dependentRequired", "dependentSchemas", "if",
    "then", "else", "not", "minContains", "maxContains", "unevaluatedItems", "strict", "_index",
}
FORMATS_KEPT = {"enum", "date-time", "int32", "int64", "float", "double"}
OPENAI_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
TOOL_ID_OK = re.compile(r"^[a-zA-Z0-9_-]+$")
FINISH_TO_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                  "function_call": "tool_use", "content_filter": "refusal", "eos": "end_turn"}
# Models whose OpenAI API wants max_completion_tokens and rejects non-default sampling parameters.
OPENAI_REASONING_MODEL = re.compile(r"^(?:openai/)?(?:o\d|gpt-5)", re.IGNORECASE)


def unique_tool_names(names: Iterable[str], allowed: re.Pattern, limit: int) -> dict[str, str]:
    """Each tool name → a name the other side accepts, unique within the request, so that calls map back
    exactly (``a.b`` and ``a_b`` must not both become ``a_b``). Accepted names keep themselves; the others are
    cleaned, and get a short hash of the original when cleaning made them too long or taken."""
    names = list(dict.fromkeys(names))
    out = {name: name for name in names if allowed.fullmatch(name)}
    taken = set(out)
    for name in names:
        if name in out:
            continue
        base = re.sub(r"[^a-zA-Z0-9_-]", "_", name) or "tool"
        clean, digest = base, hashlib.sha256(name.encode()).hexdigest()[:8]
        if len(clean) > limit or clean in taken:
            clean = f"{base[:limit - 9]}_{digest}"
        n = 1
        while clean in taken:  # only names made to collide on purpose get here: a counter always ends it
            suffix = f"_{digest}_{n}"
            clean, n = base[:limit - len(suffix)] + suffix, n + 1
        out[name] = clean
        taken.add(clean)
    return out


def _tool_names_in(body: dict) -> Iterable[str]:
    """Every tool name a request of either dialect mentions: its tools, the calls in its history, its choice."""
    def name(obj: Any) -> Any:
        fn = obj.get("function") if isinstance(obj, dict) else None
        return fn.get("name") if isinstance(fn, dict) else obj.get("name") if isinstance(obj, dict) else None

    found = [name(t) for key in ("tools", "functions") for t in _list(body.get(key))]
    for msg in _list(body.get("messages")):
        if isinstance(msg, dict):
            found += [b.get("name") for b in _list(msg.get("content")) if isinstance(b, dict) and b.get(
                "type") == "tool_use"]
            found += [name(c) for c in _list(msg.get("tool_calls"))] + [name({"function": msg.get("function_call")})]
    found += [name(body.get("tool_choice")), name({"function": body.get("function_call")})]
    return [n for n in found if isinstance(n, str) and n]


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def openai_tool_names(body: dict) -> dict[str, str]:
    """Anthropic client's tool name → the function name an OpenAI backend gets (``^[a-zA-Z0-9_-]{1,64}$``)."""
    return unique_tool_names(_tool_names_in(body), OPENAI_TOOL_NAME, 64)


def sanitize_tool_id(tool_id: Any, prefix: str = "toolu_") -> str:
    if isinstance(tool_id, str) and TOOL_ID_OK.match(tool_id):
        return tool_id
    if isinstance(tool_id, str) and tool_id:
        return re.sub(r"[^a-zA-Z0-9_-]", "_", tool_id)
    return prefix + secrets.token_hex(12)


# Gemini 3 refuses a tool-call turn whose thought_signature is not sent back. The proxy keeps no state, so the
# signature travels inside the tool_use id Claude Code echoes: "<id>__gts_<base64url(signature)>".
SIGNATURE_MARK = "__gts_"


def tool_id_with_signature(tool_id: str, call: dict) -> str:
    extra = call.get("extra_content")
    google = extra.get("google") if isinstance(extra, dict) else None
    signature = google.get("thought_signature") if isinstance(google, dict) else None
    if not isinstance(signature, str) or not signature:
        return tool_id
    return tool_id + SIGNATURE_MARK + base64.urlsafe_b64encode(signature.encode()).decode().rstrip("=")


def split_tool_id(tool_id: str) -> tuple[str, str | None]:
    """(the backend's id, its thought signature or None) from an id made by ``tool_id_with_signature``."""
    base, mark, encoded = tool_id.partition(SIGNATURE_MARK)
    if not mark:
        return tool_id, None
    try:
        return base, base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return base, None


def sanitize_schema(schema: Any, defs: dict | None = None, depth: int = 0) -> Any:
    """Reduce a JSON Schema to the subset every OpenAI-compatible backend accepts (Gemini is the strictest).

    ``$ref`` is inlined, ``const`` becomes a one-value ``enum``, ``oneOf`` becomes ``anyOf``, type lists become a
    single type plus ``nullable``; property *names* are never touched, only keywords.
    """
    if depth > 40:
        return {}
    if isinstance(schema, list):
        return [sanitize_schema(s, defs, depth + 1) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if defs is None:
        defs = {**schema.get("definitions", {}), **schema.get("$defs", {})}
    if "$ref" in schema and isinstance(schema["$ref"], str):
        target = defs.get(schema["$ref"].rsplit("/", 1)[-1])
        merged = {**(target if isinstance(target, dict) else {}), **{k: v for k, v in schema.items() if k != "$ref"}}
        return sanitize_schema(merged, defs, depth + 1) if target is not None else {"type": "object"}
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in SCHEMA_DROP_KEYS or key in ("$defs", "definitions"):
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: sanitize_schema(sub, defs, depth + 1) for name, sub in value.items()}
        elif key in ("items", "anyOf", "oneOf", "allOf", "prefixItems"):
            out["anyOf" if key == "oneOf" else key] = sanitize_schema(value, defs, depth + 1)
        elif key == "const":
            out["enum"] = [value]
        elif key == "type" and isinstance(value, list):
            types = [t for t in value if t != "null"]
            out["type"] = types[0] if types else "string"
            if len(types) < len(value):
                out["nullable"] = True
        elif key == "format" and value not in FORMATS_KEPT:
            continue
        elif key == "required":
            if isinstance(value, list):
                out[key] = [r for r in value if isinstance(r, str)]
        else:
            out[key] = value
    if "allOf" in out and isinstance(out["allOf"], list):
        parts = out.pop("allOf")
        for part in parts:
            if isinstance(part, dict):
                for k, v in part.items():
                    if k == "properties":
                        out.setdefault("properties", {}).update(v)
                    elif k == "required":
                        out["required"] = list(dict.fromkeys(out.get("required", []) + v))
                    else:
                        out.setdefault(k, v)
    if out.get("required") and isinstance(out.get("properties"), dict):
        out["required"] = [r for r in out["required"] if r in out["properties"]]
        if not out["required"]:
            del out["required"]
    if "enum" in out and "type" not in out and all(isinstance(v, str) for v in out["enum"]):
        out["type"] = "string"
    return out


_SCHEMA_CACHE: dict[str, dict] = {}


def sanitized_parameters(schema: dict, where: str) -> dict:
    """``sanitize_schema`` for a tool's parameters, memoised: clients resend the same tools every turn. The
    result is shared between requests and must not be mutated (it is only ever serialised)."""
    key = json_dumps(schema)
    hit = _SCHEMA_CACHE.get(key)
    if hit is None:
        check_schema(schema, where)
        hit = sanitize_schema(schema)
        hit.setdefault("type", "object")
        if hit.get("type") == "object":
            hit.setdefault("properties", {})
        if len(_SCHEMA_CACHE) >= 1024:
            _SCHEMA_CACHE.pop(next(iter(_SCHEMA_CACHE)))
        _SCHEMA_CACHE[key] = hit
    return hit


SCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties", "dependentSchemas")
SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
SCHEMA_SUBSCHEMAS = ("items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames")


SCHEMA_VALUES = {  # keyword → (what it must be, the check): where another value would break the sanitiser
    "enum": ("a list", lambda v: isinstance(v, list)),
}


def check_schema(schema: Any, where: str, depth: int = 0) -> None:
    """Reject a tool schema whose structure is not JSON Schema (``properties: [1]``), naming the path to the
    fault: the sanitiser and every backend rely on that structure. Keywords' other values are the backend's
    business."""
    if isinstance(schema, bool):
        return
    _expect(isinstance(schema, dict), f"{where}: expected a JSON Schema object")
    _expect(depth < 64, f"{where}: the schema is nested more than 64 levels deep")
    for key in SCHEMA_MAPS:
        if key in schema:
            _expect(isinstance(schema[key], dict), f"{where}.{key}: expected an object of schemas")
            for name, sub in schema[key].items():
                check_schema(sub, f"{where}.{key}.{name}", depth + 1)
    for key in SCHEMA_LISTS:
        if key in schema:
            _expect(isinstance(schema[key], list), f"{where}.{key}: expected a list of schemas")
            for i, sub in enumerate(schema[key]):
                check_schema(sub, f"{where}.{key}.{i}", depth + 1)
    for key in SCHEMA_SUBSCHEMAS:
        if key in schema:
            subs = schema[key] if key == "items" and isinstance(schema[key], list) else [schema[key]]
            for i, sub in enumerate(subs):
                check_schema(sub, f"{where}.{key}" + (f".{i}" if len(subs) > 1 else ""), depth + 1)
    for key, (what, ok) in SCHEMA_VALUES.items():
        if key in schema:
            _expect(ok(schema[key]), f"{where}.{key}: expected {what}")


def _expect(cond: object, message: str) -> None:
    if not cond:
        raise bad_request(message)


def _object(value: Any, where: str) -> dict:
    _expect(isinstance(value, dict), f"{where}: expected an object")
    return value


def _text_of(content: Any, where: str, only_text: bool = True) -> str:
    """Text of a string or a list of text blocks: system prompts and turns (where any other block is a 400),
    or a document's or search result's content (where other blocks are skipped)."""
    if isinstance(content, str):
        return content
    _expect(isinstance(content, list), f"{where}: expected a string or a list of text blocks")
    parts = []
    for i, block in enumerate(content):
        _expect(isinstance(block, dict), f"{where}.{i}: expected an object")
        kind = block.get("type", "text")
        if kind == "text":
            _expect(isinstance(block.get("text"), str), f"{where}.{i}.text: expected a string")
            parts.append(block["text"])
        elif kind == "mid_conv_system":
            parts.append(_text_of(block.get("content", ""), f"{where}.{i}.content"))
        elif only_text:
            raise bad_request(f"{where}.{i}: block type {kind!r} is not allowed here (text only)")
    return "\n\n".join(p for p in parts if p)


def _image_part(block: dict, where: str) -> dict:
    source = _object(block.get("source"), f"{where}.source")
    if source.get("type") == "base64":
        _expect(isinstance(source.get("data"), str), f"{where}.source.data: expected a base64 string")
        media = source.get("media_type") or "image/png"
        _expect(isinstance(media, str), f"{where}.source.media_type: expected a string")
        return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{source['data']}"}}
    if source.get("type") == "url":
        _expect(isinstance(source.get("url"), str), f"{where}.source.url: expected a string")
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    if source.get("type") == "file":
        return {"type": "text", "text": f"[image file {source.get('file_id', '')}: not available to this model]"}
    raise bad_request(f"{where}.source.type: expected 'base64' or 'url', got {source.get('type')!r}")


def _document_part(block: dict, where: str) -> dict:
    """PDFs become an OpenAI ``file`` part; text-ish documents become text."""
    source = _object(block.get("source"), f"{where}.source")
    title = block.get("title") if isinstance(block.get("title"), str) else None
    head = f"Document: {title}\n" if title else ""
    kind = source.get("type")
    if kind == "base64":
        media = source.get("media_type") or "application/pdf"
        data = source.get("data")
        if not isinstance(media, str) or not isinstance(data, str):
            raise bad_request(f"{where}.source.{'data' if isinstance(media, str) else 'media_type'}: expected a string")
        if media.startswith("text/"):
            try:
                return {"type": "text", "text": head + base64.b64decode(data).decode("utf-8", "replace")}
            except (ValueError, TypeError):
                raise bad_request(f"{where}.source.data: not valid base64") from None
        name = title or ("document.pdf" if media == "application/pdf" else "document")
        return {"type": "file", "file": {"filename": name, "file_data": f"data:{media};base64,{data}"}}
    if kind == "text":
        _expect(isinstance(source.get("data"), str), f"{where}.source.data: expected a string")
        return {"type": "text", "text": head + source["data"]}
    if kind == "content":
        return {"type": "text", "text": head + _text_of(source.get("content"), f"{where}.source.content", only_text=False)}
    if kind == "url":
        _expect(isinstance(source.get("url"), str), f"{where}.source.url: expected a string")
        return {"type": "text", "text": f"{head}[document at {source['url']}]"}
    if kind == "file":
        return {"type": "text", "text": f"{head}[document file {source.get('file_id', '')}]"}
    raise bad_request(f"{where}.source.type: unsupported document source {kind!r}")


def _search_result_text(block: dict, where: str) -> str:
    for key in ("title", "source"):
        _expect(isinstance(block.get(key, ""), str), f"{where}.{key}: expected a string")
    body = _text_of(block.get("content") or [], f"{where}.content", only_text=False)
    return f"Search result: {block.get('title', '')} ({block.get('source', '')})\n{body}"


def _server_block_text(block: dict) -> str:
    """Server-tool history (web search etc.) cannot be replayed to another model; keep what it said as text."""
    kind = block.get("type")
    if kind in ("server_tool_use", "mcp_tool_use"):
        return f"[{block.get('name', 'server tool')} called with {json_dumps(block.get('input', {}))}]"
    content = block.get("content")
    if isinstance(content, list):
        lines = []
        for item in content:
            if isinstance(item, dict):
                lines.append(next((item[k] for k in ("title", "text", "url") if isinstance(item.get(k), str)), ""))
        return f"[{kind}]\n" + "\n".join(x for x in lines if x)
    if isinstance(content, dict):
        return f"[{kind}] " + json_dumps(content)[:2000]
    return f"[{kind}] {content if content is not None else ''}"


def _tool_result_parts(block: dict, where: str) -> tuple[str, list[dict]]:
    """(text for the tool message, parts that must travel in a following user message)."""
    content = block.get("content", "")
    texts: list[str] = []
    extra: list[dict] = []
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for j, item in enumerate(content):
            iw = f"{where}.content.{j}"
            _expect(isinstance(item, dict), f"{iw}: expected an object")
            kind = item.get("type")
            if kind == "text":
                texts.append(str(item.get("text", "")))
            elif kind == "image":
                extra.append(_image_part(item, iw))
                texts.append("[image attached in the next message]")
            elif kind == "document":
                part = _document_part(item, iw)
                if part["type"] == "text":
                    texts.append(part["text"])
                else:
                    extra.append(part)
                    texts.append("[document attached in the next message]")
            elif kind == "tool_reference":
                texts.append(f"Tool loaded: {item.get('tool_name', '')}")
            elif kind == "search_result":
                texts.append(_search_result_text(item, iw))
            else:
                raise bad_request(f"{iw}.type: {kind!r} is not allowed in a tool_result")
    elif content is not None:
        raise bad_request(f"{where}.content: expected a string or a list of blocks")
    text = "\n".join(t for t in texts if t)
    if block.get("is_error"):
        text = "Error: " + (text or "the tool failed")
    return (text or "(no output)"), extra


def _user_content(parts: list[dict]) -> str | list[dict]:
    """A plain string when there is only text: several backends (DeepSeek, older Ollama) reject part lists."""
    if all(p["type"] == "text" for p in parts):
        return "\n\n".join(p["text"] for p in parts)
    return parts


def _convert_messages(messages: list, openai_messages: list[dict], names: dict[str, str]) -> None:
    pending_tool_ids: list[str] = []  # tool_calls of the last assistant turn still owed a tool message
    for i, msg in enumerate(messages):
        where = f"messages.{i}"
        _expect(isinstance(msg, dict), f"{where}: expected an object")
        role = msg.get("role")
        content = msg.get("content")
        _expect(role in ("user", "assistant", "system"),
                f"{where}.role: expected 'user', 'assistant' or 'system', got {role!r}")
        _expect(isinstance(content, (str, list)), f"{where}.content: expected a string or a list of blocks")
        if role != "user" and pending_tool_ids:
            _answer_missing_tools(openai_messages, pending_tool_ids)
        if role == "system":
            text = _text_of(content, f"{where}.content")
            if text:
                openai_messages.append({"role": "system", "content": text})
            continue
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for j, block in enumerate(blocks):
            _expect(isinstance(block, dict), f"{where}.content.{j}: expected an object")
            kind = block.get("type")
            _expect(isinstance(kind, str), f"{where}.content.{j}.type: missing")
            _expect(kind in KNOWN_BLOCK_TYPES, f"{where}.content.{j}.type: unknown content block type {kind!r}")
        if role == "assistant":
            openai_messages.append(_assistant_message(blocks, where, names))
            pending_tool_ids = [c["id"] for c in openai_messages[-1].get("tool_calls", [])]
        else:
            _user_messages(blocks, where, openai_messages, pending_tool_ids)  # answers every pending call
    if pending_tool_ids:
        _answer_missing_tools(openai_messages, pending_tool_ids)


def _answer_missing_tools(out: list[dict], pending: list[str]) -> None:
    # OpenAI rejects a tool_calls turn not followed by one tool message per id.
    for tool_id in pending:
        out.append({"role": "tool", "tool_call_id": tool_id, "content": "(no result)"})
    pending.clear()


def _assistant_message(blocks: list[dict], where: str, names: dict[str, str]) -> dict:
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict] = []
    for j, block in enumerate(blocks):
        kind = block["type"]
        if kind == "text":
            _expect(isinstance(block.get("text"), str), f"{where}.content.{j}.text: expected a string")
            texts.append(block["text"])
        elif kind == "thinking":
            if isinstance(block.get("thinking"), str) and block["thinking"]:
                reasoning.append(block["thinking"])
        elif kind == "redacted_thinking":
            continue
        elif kind == "tool_use":
            _expect(isinstance(block.get("name"), str) and block["name"],
                    f"{where}.content.{j}.name: expected a tool name")
            tool_input = block.get("input", {})
            _expect(isinstance(tool_input, dict), f"{where}.content.{j}.input: expected an object")
            call_id, signature = split_tool_id(sanitize_tool_id(block.get("id")))
            call: dict[str, Any] = {"id": call_id, "type": "function", "function": {
                "name": names[block["name"]], "arguments": json_dumps(tool_input)}}
            if signature:
                call["extra_content"] = {"google": {"thought_signature": signature}}
            calls.append(call)
        elif kind in ("server_tool_use", "web_search_tool_result", "web_fetch_tool_result", "mcp_tool_use",
                      "mcp_tool_result", "code_execution_tool_result", "bash_code_execution_tool_result",
                      "text_editor_code_execution_tool_result", "tool_search_tool_result"):
            texts.append(_server_block_text(block))
        else:
            raise bad_request(f"{where}.content.{j}.type: {kind!r} is not allowed in an assistant message")
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        msg["tool_calls"] = calls
    elif msg["content"] is None:
        msg["content"] = ""
    if reasoning:
        # DeepSeek (thinking mode) rejects a tool-call turn whose reasoning is not passed back.
        msg["reasoning_content"] = "\n\n".join(reasoning)
    return msg


def _user_messages(blocks: list[dict], where: str, out: list[dict], pending: list[str]) -> None:
    parts: list[dict] = []
    moved: list[dict] = []  # images/documents from tool results: tool messages cannot carry them
    for j, block in enumerate(blocks):
        kind = block["type"]
        bw = f"{where}.content.{j}"
        if kind == "tool_result":
            tool_id = split_tool_id(sanitize_tool_id(block.get("tool_use_id")))[0]
            text, extra = _tool_result_parts(block, bw)
            if tool_id in pending:
                pending.remove(tool_id)
                # Insert before the user parts of this turn: OpenAI wants tool messages right after the call.
                out.append({"role": "tool", "tool_call_id": tool_id, "content": text})
            else:
                parts.append({"type": "text", "text": f"[result of tool call {tool_id}]\n{text}"})
            moved.extend(extra)
        elif kind == "text":
            _expect(isinstance(block.get("text"), str), f"{bw}.text: expected a string")
            if block["text"]:
                parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            parts.append(_image_part(block, bw))
        elif kind == "document":
            parts.append(_document_part(block, bw))
        elif kind == "search_result":
            parts.append({"type": "text", "text": _search_result_text(block, bw)})
        elif kind == "tool_reference":
            parts.append({"type": "text", "text": f"Tool loaded: {block.get('tool_name', '')}"})
        elif kind in ("thinking", "redacted_thinking", "container_upload"):
            continue
        else:
            parts.append({"type": "text", "text": _server_block_text(block)})
    if pending:
        _answer_missing_tools(out, pending)
    parts = moved + parts if moved else parts
    if parts:
        out.append({"role": "user", "content": _user_content(parts)})
    elif not out or out[-1]["role"] != "tool":
        out.append({"role": "user", "content": "(empty message)"})


# Anthropic's server tools that the proxy runs itself for backends that cannot (type prefix → what the model is
# told of the function it gets instead, named as the tool is). It calls the function with a "query".
PROXY_SERVER_TOOLS = {
    "web_search_": "Search the web. Answers with the title, URL and a snippet of each result.",
    "tool_search_tool_regex": "Find tools that are not loaded yet: the query is a Python regular expression, "
                              "matched against each tool's name and description. The tools found can be called "
                              "from then on.",
    "tool_search_tool_bm25": "Find tools that are not loaded yet: the query is words, matched against each "
                             "tool's name and description. The tools found can be called from then on.",
}


def proxy_server_tool(tool: Any) -> str | None:
    """The PROXY_SERVER_TOOLS entry a tool definition is, if any."""
    ttype = tool.get("type") if isinstance(tool, dict) else None
    return next((p for p in PROXY_SERVER_TOOLS if isinstance(ttype, str) and ttype.startswith(p)), None)


def _server_tool_function(tool: dict, kind: str) -> dict:
    _expect(isinstance(tool.get("name"), str) and tool["name"], f"a {tool['type']} tool needs a name")
    return {"type": "function", "function": {"name": tool["name"], "description": PROXY_SERVER_TOOLS[kind],
                                             "parameters": {"type": "object", "required": ["query"], "properties": {
                                                 "query": {"type": "string", "description": "What to search for"}}}}}


def deferred_loaded(body: dict) -> set[str]:
    """The deferred tools a conversation has loaded (walked only when the request defers some)."""
    deferred = any(isinstance(t, dict) and t.get("defer_loading") is True for t in _list(body.get("tools")))
    return referenced_tools(body.get("messages")) if deferred else set()


def referenced_tools(messages: Any) -> set[str]:
    """The tools a conversation has loaded: named by ``tool_reference`` blocks (in tool results, as Claude Code's
    ToolSearch answers, or in a tool search's result). A deferred tool is offered only once loaded."""
    found: set[str] = set()

    def visit(value: Any) -> None:
        if isinstance(value, dict):
            if value.get("type") == "tool_reference" and isinstance(value.get("tool_name"), str):
                found.add(value["tool_name"])
            for key in ("content", "tool_references"):
                visit(value.get(key))
        elif isinstance(value, list):
            for item in value:
                visit(item)

    visit(messages)
    return found


def find_tools(tools: list[dict], query: str, kind: str, limit: int = 5) -> list[str]:
    """The deferred tools (``defer_loading``) that a tool search finds: ``query`` a regular expression searched in
    each tool's name and description (``tool_search_tool_regex``), or words ranked by BM25 over them; the
    best ``limit``. A regular expression that does not compile raises ``re.error``."""
    deferred = [t for t in tools if isinstance(t, dict) and t.get("defer_loading") is True
                and isinstance(t.get("name"), str)]
    docs = [f"{t['name']} {t.get('description') or ''}" for t in deferred]
    if kind == "tool_search_tool_regex":
        pattern = re.compile(query[:200], re.IGNORECASE)
        return [t["name"] for t, doc in zip(deferred, docs, strict=True) if pattern.search(doc)][:limit]
    return [deferred[i]["name"] for i in _bm25_ranking(docs, query)[:limit]]


def _bm25_ranking(docs: list[str], query: str, k1: float = 1.2, b: float = 0.75) -> list[int]:
    """Indexes of the documents that share a word with ``query``, best first (Okapi BM25). Names split at
    ``_``, ``-``, ``.`` and case changes, so that ``mcp__github__create_issue`` matches "create issue"."""
    def words(text: str) -> list[str]:
        return re.findall(r"[a-z0-9]+", re.sub(r"([a-z])([A-Z])", r"\1 \2", text).lower())

    tokenized = [words(d) for d in docs]
    avg = sum(map(len, tokenized)) / len(tokenized) if tokenized else 1.0
    terms = set(words(query))
    scores = []
    for i, doc in enumerate(tokenized):
        score = 0.0
        for term in terms:
            tf = doc.count(term)
            if tf:
                df = sum(1 for d in tokenized if term in d)
                idf = math.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
                score += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(doc) / (avg or 1.0)))
        if score > 0:
            scores.append((-score, i))
    return [i for _, i in sorted(scores)]


def _convert_tools(tools: Any, tool_choice: Any, names: dict[str, str],
                   loaded: set[str] | None = None) -> tuple[list[dict], Any, bool | None]:
    """OpenAI function tools for Anthropic ones: a deferred tool (``defer_loading``) only once ``loaded``; the
    server tools the proxy runs as functions; other server tools left out."""
    _expect(tools is None or isinstance(tools, list), "tools: expected a list")
    out = []
    for i, tool in enumerate(tools or []):
        _expect(isinstance(tool, dict), f"tools.{i}: expected an object")
        ttype = tool.get("type")
        server = proxy_server_tool(tool)
        if server:
            out.append(_server_tool_function(tool, server))
            continue
        if ttype not in (None, "custom") and "input_schema" not in tool:
            continue  # other server tools (code_execution, web_fetch, ...) run at Anthropic; no backend can
        name = tool.get("name")
        _expect(isinstance(name, str) and name, f"tools.{i}.name: expected a non-empty string")
        if tool.get("defer_loading") is True and name not in (loaded or set()):
            continue
        schema = tool.get("input_schema") or {"type": "object", "properties": {}}
        _expect(isinstance(schema, dict), f"tools.{i}.input_schema: expected an object")
        params = sanitized_parameters(schema, f"tools.{i}.input_schema")
        fn: dict[str, Any] = {"name": names[name], "parameters": params}
        if isinstance(tool.get("description"), str) and tool["description"]:
            fn["description"] = tool["description"]
        out.append({"type": "function", "function": fn})
    choice: Any = None
    parallel: bool | None = None
    if tool_choice is not None:
        _expect(isinstance(tool_choice, dict) and isinstance(tool_choice.get("type"), str),
                "tool_choice: expected an object with a type")
        ctype = tool_choice["type"]
        if ctype == "auto":
            choice = "auto"
        elif ctype == "any":
            choice = "required"
        elif ctype == "none":
            choice = "none"
        elif ctype == "tool":
            _expect(isinstance(tool_choice.get("name"), str), "tool_choice.name: expected the tool's name")
            choice = {"type": "function", "function": {"name": names.get(tool_choice["name"], tool_choice["name"])}}
        else:
            raise bad_request(f"tool_choice.type: expected auto, any, tool or none, got {ctype!r}")
        if tool_choice.get("disable_parallel_tool_use") is True:
            parallel = False
    if not out:
        return [], None, None
    return out, choice, parallel


def effort_for_budget(budget: Any) -> str:
    """The reasoning effort that matches an Anthropic thinking budget."""
    budget = budget if isinstance(budget, int) else 0
    return "low" if budget < 4096 else "medium" if budget < 16384 else "high"


def output_tokens_key(payload: dict) -> str:
    return next((k for k in ("max_completion_tokens", "max_output_tokens") if k in payload), "max_tokens")


def cap_output_tokens(payload: dict, cap: int | None) -> dict:
    """``payload`` asking for at most ``cap`` output tokens, with a thinking budget that still fits under the
    limit (Anthropic wants 1024 ≤ budget_tokens < max_tokens; where that cannot hold, thinking is left out)."""
    key = output_tokens_key(payload)
    limit = payload.get(key)
    if not isinstance(limit, int):
        return payload
    if cap and limit > cap:
        payload, limit = {**payload, key: cap}, cap
    thinking = payload.get("thinking")
    budget = thinking.get("budget_tokens") if isinstance(thinking, dict) else None
    if isinstance(thinking, dict) and isinstance(budget, int) and budget >= limit:
        if limit > 1024:
            return {**payload, "thinking": {**thinking, "budget_tokens": max(1024, limit // 2)}}
        return {k: v for k, v in payload.items() if k != "thinking"}
    return payload


def _reasoning_effort(body: dict, mode: str) -> str | None:
    if mode == "off":
        return None
    if mode != "auto":
        return mode
    thinking = body.get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") == "disabled":
        return None
    effort = (body.get("output_config") or {}).get("effort") if isinstance(body.get("output_config"), dict) else None
    if thinking.get("type") == "enabled":
        return effort_for_budget(thinking.get("budget_tokens"))
    if effort in ("low", "medium", "high"):
        return effort
    return "high" if effort in ("xhigh", "max") else "medium"


def validate_messages_request(body: Any, count_only: bool = False) -> None:
    """Reject what Anthropic rejects, with the field path in the message; ignore what it merely adds."""
    _expect(isinstance(body, dict), "request body must be a JSON object")
    _expect(isinstance(body.get("model"), str) and body["model"].strip() != "",
            "model: field required (a non-empty string)")
    _expect(isinstance(body.get("messages"), list), "messages: field required (a list of messages)")
    _expect(len(body["messages"]) > 0 or count_only, "messages: at least one message is required")
    if not count_only:
        mt = body.get("max_tokens")
        _expect(isinstance(mt, int) and not isinstance(mt, bool), "max_tokens: field required (an integer)")
        _expect(0 <= mt <= 10_000_000, f"max_tokens: must be between 0 and 10000000, got {mt}")
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            v = body[key]
            _expect(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
                    f"{key}: expected a number")
            _expect(0 <= v <= 1, f"{key}: must be between 0 and 1, got {v}")
    if body.get("stop_sequences") is not None:
        ss = body["stop_sequences"]
        _expect(isinstance(ss, list) and all(isinstance(s, str) for s in ss),
                "stop_sequences: expected a list of strings")
    if body.get("stream") is not None:
        _expect(isinstance(body["stream"], bool), "stream: expected a boolean")
    if body.get("system") is not None:
        _text_of(body["system"], "system")


def anthropic_to_openai_request(body: dict, backend_model: str, max_tokens_cap: int | None = None,
                                reasoning_effort: str = "off", names: dict[str, str] | None = None) -> dict:
    """Translate a validated Anthropic Messages request into an OpenAI Chat Completions request. ``names``:
    ``openai_tool_names(body)``, when the caller has it already."""
    validate_messages_request(body)
    messages: list[dict] = []
    system = body.get("system")
    if system is not None:
        text = _text_of(system, "system")
        if text:
            messages.append({"role": "system", "content": text})
    names = openai_tool_names(body) if names is None else names
    _convert_messages(body["messages"], messages, names)
    out: dict[str, Any] = {"model": backend_model, "messages": messages}
    max_tokens = max(1, body["max_tokens"])  # 0 is Anthropic's cache pre-warm; backends need at least 1
    if max_tokens_cap:
        max_tokens = min(max_tokens, max_tokens_cap)
    reasoning_model = bool(OPENAI_REASONING_MODEL.match(backend_model))
    out["max_completion_tokens" if reasoning_model else "max_tokens"] = max_tokens
    if body.get("temperature") is not None and not reasoning_model:
        out["temperature"] = body["temperature"]
    if body.get("top_p") is not None and not reasoning_model:
        out["top_p"] = body["top_p"]
    stops = [s for s in body.get("stop_sequences") or [] if s]
    if stops:
        out["stop"] = stops[:4]  # OpenAI accepts at most four
    tools, choice, parallel = _convert_tools(body.get("tools"), body.get("tool_choice"), names,
                                             deferred_loaded(body))
    if tools:
        out["tools"] = tools
        if choice is not None:
            out["tool_choice"] = choice
        if parallel is not None:
            out["parallel_tool_calls"] = parallel
    effort = _reasoning_effort(body, reasoning_effort)
    if effort:
        out["reasoning_effort"] = effort
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


def fold_system_turns(payload: dict) -> dict:
    """``payload`` with every system message after the first turn folded into the user turn that follows it, as
    ``<system-reminder>`` text (the form Claude Code itself uses); a system turn at the end joins, or becomes, the
    final user turn. For chat templates that accept a system message only first (Qwen 3 on vLLM, llama.cpp,
    Ollama, SGLang). The leading system message is left alone: changing it would change the prompt's prefix
    every turn and defeat the backend's prefix cache."""
    messages = payload.get("messages")
    if not isinstance(messages, list):
        return payload
    out: list[dict] = []
    held: list[str] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):  # a pass-through client's mistake is the backend's to refuse
            out.append(msg)
        elif msg.get("role") == "system" and i > 0:
            held.append(f"<system-reminder>\n{_content_text(msg.get('content'), 'system')}\n</system-reminder>")
        elif msg.get("role") == "user" and held:
            out.append(_with_text(msg, "\n\n".join(held), first=True))
            held = []
        else:
            out.append(msg)
    if held:
        if out and out[-1].get("role") == "user":
            out[-1] = _with_text(out[-1], "\n\n".join(held), first=False)
        else:
            out.append({"role": "user", "content": "\n\n".join(held)})
    return {**payload, "messages": out}


_NINE_ALNUM = re.compile(r"[a-zA-Z0-9]{9}")
_BASE62 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def nine_char_id(tool_id: str) -> str:
    """A tool-call id as Mistral wants it (exactly 9 of ``[a-zA-Z0-9]``): the same for a call and its result,
    computed, not stored. An id already of that form is its own, so the backend's own ids survive the round
    trip through the client."""
    if _NINE_ALNUM.fullmatch(tool_id):
        return tool_id
    number = int.from_bytes(hashlib.sha256(tool_id.encode()).digest()[:8], "big")
    return "".join(_BASE62[(number // 62 ** i) % 62] for i in range(9))


def with_nine_char_ids(payload: dict) -> dict:
    """``payload`` with every tool-call id, in calls and in results, made 9 alphanumeric characters."""
    def message(msg: Any) -> Any:
        if not isinstance(msg, dict):
            return msg
        if isinstance(msg.get("tool_call_id"), str):
            msg = {**msg, "tool_call_id": nine_char_id(msg["tool_call_id"])}
        if isinstance(msg.get("tool_calls"), list):
            msg = {**msg, "tool_calls": [{**c, "id": nine_char_id(c["id"])} if isinstance(c, dict) and isinstance(
                c.get("id"), str) else c for c in msg["tool_calls"]]}
        return msg
    return {**payload, "messages": [message(m) for m in _list(payload.get("messages"))]}


def without_message_fields(payload: dict, fields: frozenset[str]) -> dict:
    """``payload`` without the given extension fields in its messages and their tool calls (``reasoning_content``
    for DeepSeek, ``extra_content`` for Gemini), for servers that validate messages strictly."""
    def strip(obj: dict) -> dict:
        return {k: v for k, v in obj.items() if k not in fields}
    messages = [m if not isinstance(m, dict) else strip(
        {**m, "tool_calls": [strip(c) if isinstance(c, dict) else c for c in m["tool_calls"]]}
        if isinstance(m.get("tool_calls"), list) else m) for m in _list(payload.get("messages"))]
    return {**payload, "messages": messages}


def _with_text(msg: dict, text: str, first: bool) -> dict:
    """A user message with ``text`` added before (``first``) or after what it says."""
    content = msg.get("content")
    if isinstance(content, list):
        part = [{"type": "text", "text": text}]
        return {**msg, "content": part + content if first else content + part}
    pieces = [text, content] if first else [content, text]
    return {**msg, "content": "\n\n".join(p for p in pieces if p)}


UNPARSED_ARGUMENTS = "_unparsed_arguments"  # the key that carries arguments no repair could read
_CODE_FENCE = re.compile(r"^\s*```[\w-]*\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)


def _parse_tool_arguments(args: Any) -> dict:
    """Tool arguments as an object, repaired the ways models get them wrong: a Markdown fence around the JSON,
    an object encoded twice as a string, a Python dict (single quotes, True/False/None), trailing commas, JSON
    the model stopped writing half-way (closed rather than lost). Empty means ``{}``. What no repair can read is
    passed on under ``_unparsed_arguments``, never dropped: the client's own check then tells the model."""
    if isinstance(args, dict):
        return args
    if not isinstance(args, str) or not args.strip():
        return {}
    fenced = _CODE_FENCE.match(args)
    text = fenced.group(1) if fenced else args
    for attempt in (_as_json, _as_python_literal, _repair_json):
        value = attempt(text)
        if isinstance(value, str) and value.strip().startswith("{"):  # an object encoded twice
            value = _as_json(value)
        if isinstance(value, dict):
            return value
        if value is not None and attempt is _as_json:
            return {"value": value}
    return {UNPARSED_ARGUMENTS: args}


def _as_json(text: str) -> Any:
    try:
        return json_loads(text)
    except ValueError:
        return None


def _as_python_literal(text: str) -> Any:
    """``{'file_path': '/x', 'limit': None}``: a model writing Python instead of JSON. Only literals are read."""
    if not text.lstrip().startswith("{") or len(text) > 1_000_000:
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    return value if isinstance(value, dict) and all(isinstance(k, str) for k in value) else None


def _repair_json(text: str) -> dict | None:
    """Close the strings and brackets of a JSON object the model stopped writing half-way."""
    stack = []
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]" and stack:
            stack.pop()
    candidate = text + ('"' if in_str else "") + "".join(reversed(stack))
    for attempt in (candidate, re.sub(r",\s*([}\]])", r"\1", candidate)):
        try:
            value = json_loads(attempt)
            return value if isinstance(value, dict) else None
        except ValueError:
            continue
    return None


# ---- tool calls written as text -----------------------------------------------------------------------
# When a server's tool parser is off or does not know the model (vLLM without --enable-auto-tool-choice,
# llama.cpp without --jinja, an Ollama template without tools, LM Studio), the model's call arrives as text in its
# family's markup. Each entry: the marker that opens it, the one that closes it (None: it runs to the end of the
# answer), and the reader of what lies between.

def _hermes_glm_or_qwen_coder(body: str) -> list[tuple[str, Any]] | None:
    """``<tool_call>`` bodies: Hermes/Qwen JSON, Qwen3-Coder ``<function=…>``, or GLM ``NAME<arg_key>…``."""
    body = body.strip()
    if body.startswith("{"):
        return _json_calls(body)
    if body.startswith("<function="):
        return _qwen_coder_calls(body)
    glm = _GLM_CALL.fullmatch(body)
    if glm is None:
        return None
    return [(glm.group(1).strip(), _GLM_ARG.findall(glm.group(2)))]


_GLM_CALL = re.compile(r"([^<>\n{}]+?)\s*((?:<arg_key>.*?</arg_key>\s*<arg_value>.*?</arg_value>\s*)*)", re.DOTALL)
_GLM_ARG = re.compile(r"<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>", re.DOTALL)
_QWEN_CODER_CALL = re.compile(r"<function=([^>\n]+)>(.*?)(?:</function>|$)", re.DOTALL)
_QWEN_CODER_PARAM = re.compile(r"<parameter=([^>\n]+)>(.*?)(?:</parameter>|(?=<parameter=)|$)", re.DOTALL)


def _qwen_coder_calls(body: str) -> list[tuple[str, Any]] | None:
    calls = [(name.strip(), [(k.strip(), v.removeprefix("\n").removesuffix("\n"))
                             for k, v in _QWEN_CODER_PARAM.findall(params)])
             for name, params in _QWEN_CODER_CALL.findall(body)]
    return calls or None


def _json_calls(body: str) -> list[tuple[str, Any]] | None:
    """JSON calls: one object, a list of them, or several one after another (Llama 3 separates them with ``;``);
    each ``{"name": …, "arguments" | "parameters": …}``."""
    values = _json_values(body)
    if values is None:
        values = [_as_python_literal(body.strip())]
    items = values[0] if len(values) == 1 and isinstance(values[0], list) else values
    calls = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            return None
        calls.append((item["name"], item.get("arguments", item.get("parameters", {}))))
    return calls or None


_JSON_DECODER = json.JSONDecoder()


def _json_values(text: str, separators: str = " \t\r\n;,") -> list[Any] | None:
    """The JSON values ``text`` holds one after another (separated by nothing but ``separators``), or None."""
    values: list[Any] = []
    at = 0
    while True:
        while at < len(text) and text[at] in separators:
            at += 1
        if at == len(text):
            return values or None
        try:
            value, at = _JSON_DECODER.raw_decode(text, at)
        except ValueError:
            return None
        values.append(value)


def _bare_calls(body: str) -> list[tuple[str, Any]] | None:
    """Calls whose markers a server stripped as special tokens: ``NAME{…}`` one after another (Mistral v11 and
    later), ``functions.NAME:0{…}`` (Kimi K2)."""
    calls, at = [], 0
    while at < len(body):
        head = _BARE_CALL_HEAD.match(body, at)
        if head is None:
            return None
        try:
            args, at = _JSON_DECODER.raw_decode(body, head.end())
        except ValueError:
            return None
        calls.append((head.group(1), args))
        at = len(body) if not body[at:].strip() else at
    return calls or None


_BARE_CALL_HEAD = re.compile(r"\s*(?:functions\.)?([\w.-]+?)(?::\d+)?(?=\{)")


def _mistral_calls(body: str) -> list[tuple[str, Any]] | None:
    """After ``[TOOL_CALLS]``: a JSON list (before v11), or ``NAME[ARGS]{…}`` per call (v11 and later; the
    marker repeats before each, and ``[CALL_ID]…`` may precede ``[ARGS]``)."""
    if body.lstrip().startswith("["):
        return _json_calls(body.strip())
    calls = []
    for part in body.split("[TOOL_CALLS]"):
        name, sep, args = part.partition("[ARGS]")
        if not sep:
            return None
        calls.append((name.partition("[CALL_ID]")[0].strip(), args.strip()))
    return calls


def _kimi_calls(body: str) -> list[tuple[str, Any]] | None:
    """``<|tool_call_begin|>functions.NAME:0<|tool_call_argument_begin|>{…}<|tool_call_end|>`` per call."""
    calls = [(re.sub(r"^functions\.|:\d+$", "", call_id.strip()), args)
             for call_id, args in _KIMI_CALL.findall(body)]
    return calls or None


_KIMI_CALL = re.compile(r"(?:<\|tool_call_begin\|>)?\s*([^<|]+?)\s*<\|tool_call_argument_begin\|>(.*?)"
                        r"(?:<\|tool_call_end\|>|$)", re.DOTALL)


def _deepseek_calls(body: str) -> list[tuple[str, Any]] | None:
    """V3: ``<｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME`` and a fenced JSON body; V3.1 and later:
    ``<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{…}``. Each ends with ``<｜tool▁call▁end｜>``."""
    calls = []
    for head, rest in _DEEPSEEK_CALL.findall(body):
        if head.strip() == "function":
            name, _, args = rest.partition("\n")
            calls.append((name.strip(), args))
        else:
            calls.append((head.strip(), rest))
    return calls or None


_DEEPSEEK_CALL = re.compile(r"\s*(?:<｜tool▁call▁begin｜>)?(.*?)<｜tool▁sep｜>(.*?)(?:<｜tool▁call▁end｜>|$)", re.DOTALL)

Markup = tuple[str, str | None, Callable[[str], list[tuple[str, Any]] | None]]
TEXT_CALL_MARKUP: tuple[Markup, ...] = (
    ("<tool_call>", "</tool_call>", _hermes_glm_or_qwen_coder),  # Hermes, Qwen 2.5/3, Qwen3-Coder, GLM 4.5+
    ("<function=", "</function>", _qwen_coder_calls),  # Qwen3-Coder without its <tool_call> wrapper
    ("[TOOL_CALLS]", None, _mistral_calls),  # Mistral
    ("<|python_tag|>", None, _json_calls),  # Llama 3
    ("<|tool_calls_section_begin|>", "<|tool_calls_section_end|>", _kimi_calls),  # Kimi K2
    ("<|tool_call_section_begin|>", "<|tool_call_section_end|>", _kimi_calls),  # (newer templates)
    ("<|tool_call_begin|>", "<|tool_call_end|>", _kimi_calls),  # Kimi K2, the section markers stripped
    ("<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>", _deepseek_calls),  # DeepSeek V3 and later
    ("<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", _deepseek_calls),
)
# Llama 3: an answer that is nothing but {"name": …, "parameters": …}; also a bare list of such calls (Mistral's,
# its marker stripped as a special token). And an answer that starts with an offered tool's name and "{".
_WHOLE_MESSAGE: Markup = ("", None, _json_calls)
_BARE_MESSAGE: Markup = ("", None, _bare_calls)
# Each marker has its first character nowhere else in it: a marker's start at the end of the text so far can only
# begin at the last of these characters.
_MARKUP_OPENERS = tuple(sorted({start[0] for start, _, _ in TEXT_CALL_MARKUP}))


class TextToolCalls:
    """Finds tool calls a model wrote as text (see TEXT_CALL_MARKUP) in an answer that arrives piece by piece.

    ``feed(text)`` and, when the answer's text is over, ``flush()`` return ("text", str) and ("call", fragment)
    items, the fragment shaped like an OpenAI tool call. Text before markup flows as it comes; a possible start of
    markup is held back only until it is decided, and markup only until it closes. Markup whose calls name a tool
    that was not offered is text, as it was written. ``offered`` maps each offered tool's name to its parameters'
    JSON schema, which types the values of the formats that write them as strings (Qwen3-Coder, GLM)."""

    def __init__(self, offered: dict[str, Any]):
        self.offered = offered
        self.held = ""
        self.markup: Markup | None = None  # the markup being read, if any
        self.at_start = True  # nothing but whitespace so far: the whole answer may be one JSON call
        self.after_call = False  # whitespace right after a call is not text

    def feed(self, text: str) -> list[tuple[str, Any]]:
        self.held += text
        out: list[tuple[str, Any]] = []
        while self.held:
            if self.markup is not None:
                start, end, _ = self.markup
                close = self.held.find(end, len(start)) if end else -1
                if close < 0:
                    break
                out += self._decide(self.held[:close + len(end or "")])
                self.held = self.held[close + len(end or ""):]
                continue
            if self.after_call or self.at_start:
                stripped = self.held.lstrip()
                if not stripped:
                    break
                whole = self._whole_message(stripped) if self.at_start else False
                if whole is None:
                    break  # the start of a marker, or of a whole-message call: not decided yet
                if isinstance(whole, tuple):
                    self.markup, self.held = whole, stripped
                    continue
                if self.after_call:
                    self.held = stripped
                self.at_start = self.after_call = False
            out += self._text_until_markup()
            if self.markup is None:
                break
        return out

    def _whole_message(self, head: str) -> Markup | bool | None:
        """Whether an answer that begins with ``head`` is one call (the reader for it), is not (False), or
        cannot be told yet (None)."""
        if any(m[0].startswith(head) for m in TEXT_CALL_MARKUP):
            return None
        if head[0] in "{[":
            return False if any(head.startswith(m[0]) for m in TEXT_CALL_MARKUP) else _WHOLE_MESSAGE
        bare = _BARE_CALL_HEAD.match(head)
        if bare and bare.group(1) in self.offered:
            return _BARE_MESSAGE
        name = re.match(r"(?:functions\.)?([\w.-]*)(?::\d*)?$", head) if len(head) < 100 else None
        if name and ("functions.".startswith(head) or any(n.startswith(name.group(1)) for n in self.offered)):
            return None
        return False

    def _text_until_markup(self) -> list[tuple[str, Any]]:
        """Pass on the text before the first markup (or before a possible start of one at the end)."""
        held = self.held
        last = max(held.rfind(c) for c in _MARKUP_OPENERS)
        if last < 0:
            self.held = ""
            return [("text", held)]
        found = [(held.find(m[0]), m) for m in TEXT_CALL_MARKUP if m[0] in held]
        if found:
            at, self.markup = min(found, key=lambda f: f[0])
        else:
            tail = held[last:]
            at = last if any(m[0].startswith(tail) for m in TEXT_CALL_MARKUP) else len(held)
        self.held = held[at:]
        return [("text", held[:at])] if at else []

    def flush(self) -> list[tuple[str, Any]]:
        """The answer's text is over: what is held back, as what it turned out to be."""
        held, self.held = self.held, ""
        out = self._decide(held) if self.markup is not None else [("text", held.strip() if self.after_call else held)]
        self.at_start = self.after_call = False
        return [item for item in out if item[1]]

    def _decide(self, markup: str) -> list[tuple[str, Any]]:
        """Markup read to its end: the calls it holds when they name offered tools, else the text it is."""
        start, end, read = self.markup or _WHOLE_MESSAGE
        self.markup = None
        body = markup[len(start):len(markup) - len(end or "")] if end and markup.endswith(end) else markup[len(
            start):]
        calls = read(body)
        if not calls or not all(isinstance(n, str) and n in self.offered for n, _ in calls):
            self.at_start = False
            return [("text", markup)]
        self.after_call = True
        return [("call", {"function": {"name": name, "arguments": self._arguments(name, args)}})
                for name, args in calls]

    def _arguments(self, name: str, args: Any) -> Any:
        """Arguments as the assembler takes them: JSON text or an object; key/value pairs typed by the schema."""
        if not isinstance(args, list):
            return args if isinstance(args, (str, dict)) else json_dumps(args)
        schema = self.offered.get(name)
        props = schema.get("properties") if isinstance(schema, dict) else None
        return {key: _typed_value(value, (props or {}).get(key)) for key, value in args}


def _typed_value(text: str, schema: Any) -> Any:
    """A parameter value written as text, as the type its schema asks for: a string where it asks for one (or
    names no type), else the JSON (or Python literal) it reads as; the text itself when it reads as nothing."""
    kinds = schema.get("type") if isinstance(schema, dict) else None
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if "string" in kinds or kinds == [None]:
        return text
    value = _as_json(text.strip())
    if value is None and text.strip() in ("True", "False", "None"):
        value = {"True": True, "False": False, "None": None}[text.strip()]
    elif value is None:
        value = _as_python_literal(text.strip())
    return text if value is None and text.strip() not in ("null", "None") else value


def take_text_tool_calls(text: str, offered: dict[str, Any]) -> tuple[str, list[dict]]:
    """A whole answer's text without the tool calls written in it, and those calls (as OpenAI tool calls)."""
    finder = TextToolCalls(offered)
    items = finder.feed(text) + finder.flush()
    return "".join(v for k, v in items if k == "text"), [v for k, v in items if k == "call"]


def offered_functions(payload: dict) -> dict[str, Any]:
    """The function tools an OpenAI request offers (name → parameters schema); none when it forbids calls."""
    if payload.get("tool_choice") == "none":
        return {}
    return {fn["name"]: fn.get("parameters") for t in _list(payload.get("tools")) if isinstance(t, dict)
            for fn in [t.get("function")] if isinstance(fn, dict) and isinstance(fn.get("name"), str)}


def _stop_reason(finish: Any, has_tools: bool, matched: str | None) -> str:
    if finish == "length":
        return "max_tokens"  # even with tool calls: the last one was cut off, and must not be run as if whole
    if has_tools:
        return "tool_use"  # some backends say "stop" for tool calls (vLLM, Ollama, forced tool_choice)
    if matched is not None:
        return "stop_sequence"
    return FINISH_TO_STOP.get(finish, "end_turn") if isinstance(finish, str) else "end_turn"


def _matched_stop(choice: dict, stop_sequences: list[str] | None) -> str | None:
    # vLLM reports the matched string as stop_reason, SGLang as matched_stop; OpenAI does not say.
    for key in ("stop_reason", "matched_stop"):
        val = choice.get(key)
        if isinstance(val, str) and stop_sequences and val in stop_sequences:
            return val
    return None


def token_count(value: Any) -> int | None:
    """A token count from a backend's usage, or None for anything that is not a count ("12", -1, true)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def anthropic_usage(usage: Any) -> dict[str, int] | None:
    """OpenAI usage → Anthropic usage (Anthropic's input_tokens excludes cache reads); None when the backend
    gave no usable counts, so the estimate stands in."""
    if not isinstance(usage, dict):
        return None
    prompt, completion = token_count(usage.get("prompt_tokens")), token_count(usage.get("completion_tokens"))
    if prompt is None or completion is None:
        return None
    details = usage.get("prompt_tokens_details")
    cached = token_count(details.get("cached_tokens")) if isinstance(details, dict) else None
    cached = min(prompt, cached or token_count(usage.get("prompt_cache_hit_tokens")) or 0)
    return {"input_tokens": prompt - cached, "output_tokens": completion, "cache_read_input_tokens": cached,
            "cache_creation_input_tokens": 0}


def new_message_id(backend_id: Any = None) -> str:
    if isinstance(backend_id, str) and backend_id:
        clean = re.sub(r"[^a-zA-Z0-9_-]", "", backend_id)[:40]
        if clean:
            return "msg_" + clean.removeprefix("chatcmpl-")
    return "msg_" + secrets.token_hex(12)


def _content_text(content: Any, where: str) -> str:
    """The text of an answer's ``content``: a string, or (some backends, even in JSON mode) a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    if content is not None:
        raise malformed(f"{where}.content is {describe_value(content)}, not a string")
    return ""


_THINK_BLOCK = re.compile(r"\s*<think>(.*?)(?:</think>\s*|$)", re.DOTALL)


def first_choice(chunk: Any) -> dict | None:
    """The first choice of an OpenAI answer or stream chunk; None for a chunk without one (Azure's
    prompt-filter chunk, the usage-only chunk). An error inside, or a wrong shape, raises."""
    if not isinstance(chunk, dict):
        raise malformed(f"the answer is {describe_value(chunk)}, not an object")
    if chunk.get("error"):
        raise ProxyError(502, "backend error mid-stream: " + _backend_message(json_dumps(chunk)), "api_error")
    choices = chunk.get("choices")
    if choices is None or choices == []:
        return None
    if not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise malformed(f"choices is {describe_value(choices)}, not a list of objects")
    return choices[0]


def openai_to_anthropic_response(resp: Any, requested_model: str, tool_names: dict[str, str] | None = None,
                                 stop_sequences: list[str] | None = None, input_estimate: int = 0,
                                 offered_tools: dict[str, Any] | None = None) -> dict:
    """Translate an OpenAI chat.completion into an Anthropic Message; a malformed one raises a 502.
    ``offered_tools`` (name → parameters schema, see ``offered_functions``): calls written as text count."""
    choice = first_choice(resp)
    if choice is None:
        raise malformed("the answer has no choices")
    message = choice.get("message") or {}
    if not isinstance(message, dict):
        raise malformed(f"choices[0].message is {describe_value(message)}, not an object")
    content: list[dict] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = _content_text(message.get("content"), "choices[0].message")
    think = _THINK_BLOCK.match(text) if not content else None
    if think:  # reasoning inlined as <think>…</think> (DeepSeek-R1/QwQ on Ollama, llama.cpp)
        content.append({"type": "thinking", "thinking": think.group(1).strip(), "signature": ""})
        text = text[think.end():]
    text_calls: list[dict] = []
    if text and offered_tools:
        text, text_calls = take_text_tool_calls(text, offered_tools)
    if text:
        content.append({"type": "text", "text": text})
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        content.append({"type": "text", "text": refusal})
    calls = message.get("tool_calls") or []
    if isinstance(message.get("function_call"), dict):  # the legacy single function call
        calls = [{"function": message["function_call"]}]
    if not isinstance(calls, list):
        raise malformed(f"choices[0].message.tool_calls is {describe_value(calls)}, not a list")
    calls = text_calls + calls
    said = [b.get("text") or b.get("thinking") or "" for b in content]
    for call in calls:
        block, words = _tool_use_block(call, tool_names or {})
        content.append(block)
        said.append(words)
    has_tools = bool(calls)
    matched = _matched_stop(choice, stop_sequences)
    stop = "refusal" if refusal and not has_tools else _stop_reason(choice.get("finish_reason"), has_tools, matched)
    usage = anthropic_usage(resp.get("usage") or choice.get("usage")) or {
        "input_tokens": input_estimate, "output_tokens": estimate_output_tokens(said),
        "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}
    return {"id": new_message_id(resp.get("id")), "type": "message", "role": "assistant", "model": requested_model,
            "content": content, "stop_reason": stop, "stop_sequence": matched if stop == "stop_sequence" else None,
            "usage": usage}


def tool_call_fields(call: dict) -> tuple[str | None, str | None, str]:
    """(id, name, arguments text) of an OpenAI tool call or stream fragment; a wrong type is a malformed answer."""
    fn = call.get("function", {})
    if not isinstance(fn, dict):
        raise malformed(f"tool_calls[].function is {describe_value(fn)}, not an object")
    name = fn.get("name", call.get("name"))
    if name is not None and not isinstance(name, str):
        raise malformed(f"tool_calls[].function.name is {describe_value(name)}, not a string")
    args = fn.get("arguments", call.get("arguments"))
    if isinstance(args, dict):  # some backends send arguments as an object
        args = json_dumps(args)
    if args is not None and not isinstance(args, str):
        raise malformed(f"tool_calls[].function.arguments is {describe_value(args)}, not a string")
    call_id = call.get("id")
    return (call_id if isinstance(call_id, str) and call_id else None), (name or None), (args or "")


def _tool_use_block(call: Any, names: dict[str, str]) -> tuple[dict, str]:
    """One OpenAI tool call as a tool_use block, checked like the stream's fragments are; and what it said."""
    if not isinstance(call, dict):
        raise malformed(f"a tool call is {describe_value(call)}, not an object")
    call_id, name, args = tool_call_fields(call)
    name = name or "unknown_tool"
    return {"type": "tool_use", "id": tool_id_with_signature(sanitize_tool_id(call_id), call),
            "name": names.get(name, name), "input": _parse_tool_arguments(args)}, name + args


def estimate_output_tokens(said: Iterable[str]) -> int:
    """Output tokens of an answer whose backend reported none, from everything it said (text, thinking, tool
    names and arguments): the one estimator, for streams and JSON answers alike."""
    return max(1, estimate_text_tokens("".join(said)))


# ---- max_tokens limits named in backend errors ------------------------------------------------------

_LIMIT_PATTERNS = [
    re.compile(r"valid range of max_tokens is \[\s*\d+\s*,\s*(\d+)\s*\]", re.IGNORECASE),  # DeepSeek
    re.compile(r"supports at most (\d+) completion tokens", re.IGNORECASE),  # OpenAI
    re.compile(r"max_tokens: \d+ > (\d+), which is the maximum", re.IGNORECASE),  # Anthropic
    re.compile(r"max(?:imum)?[_ ](?:completion[_ ])?tokens?`?\s*(?:must be|should be|is|of)?\s*(?:less than or equal "
               r"to|<=|at most|no more than|up to|limited to|lower than)\s*`?(\d+)", re.IGNORECASE),  # Groq, generic
    re.compile(r"max(?:imum)?[_ ]tokens?.{0,80}?(?:maximum|max|limit|upper bound)(?: value)?(?: for [`\w]+)?"
               r"(?: is| of)?\s*:?\s*`?(\d+)", re.IGNORECASE),
]
# vLLM and DeepSeek: "maximum context length is N tokens. However, you requested M tokens (X in the messages, Y in
# the completion)"; vLLM now: "'max_tokens' ... is too large: Y. This model's maximum context length is N tokens
# and your request has X input tokens". Context minus prompt is what is left for the answer.
_CONTEXT_PATTERN = re.compile(r"maximum context length is (\d+) tokens(?:.*?\((\d+) in the messages|"
                              r" and your request has (\d+) input tokens)", re.IGNORECASE | re.DOTALL)


def max_tokens_limit_from_error(message: str, requested: int) -> int | None:
    """The output limit a backend names when it refuses ``max_tokens``, if it names one below the request."""
    m = _CONTEXT_PATTERN.search(message)
    if m:
        limit = int(m.group(1)) - int(m.group(2) or m.group(3))
        return limit if 0 < limit < requested else None
    if not re.search(r"max[_ ]?(?:completion[_ ])?tokens|completion tokens|output tokens", message, re.IGNORECASE):
        return None
    for pattern in _LIMIT_PATTERNS:
        m = pattern.search(message)
        if m:
            limit = int(m.group(1))
            if 0 < limit < requested:
                return limit
    return None


# ---- token counting -------------------------------------------------------------------------------

# Pieces a BPE tokenizer treats alike: words, digit runs, whitespace runs, single symbols, non-ASCII characters.
_TOKEN_PIECE = re.compile(r" ?[A-Za-z]+| ?\d+|\n+|[ \t]+|[^\sA-Za-z\d\x80-\uffff]+|[\x80-\uffff]")
_ESTIMATE_CACHE: dict[tuple[int, int], int] = {}
_ESTIMATE_CACHE_MAX = 4096


def estimate_text_tokens(text: Any) -> int:
    """A calibrated estimate of BPE tokens (within ~10% of cl100k/Claude tokenizers on prose, code and JSON).

    Short words are one token, long words about one per four letters; digits go in threes; runs of
    punctuation cost about one per two characters; non-ASCII characters cost about one each. Long texts are
    cached by hash: Claude Code resends the same system prompt, tools and history every turn.
    """
    if not text:
        return 0
    if not isinstance(text, str):  # counting must never fail on odd input: count what it would serialise to
        text = json_dumps(text)
    cacheable = len(text) >= 64
    if cacheable:
        key = (hash(text), len(text))
        hit = _ESTIMATE_CACHE.get(key)
        if hit is not None:
            return hit
    total = 0.0
    for piece in _TOKEN_PIECE.findall(text):
        c = piece[-1]
        n = len(piece)
        if c.isalpha() and c.isascii():
            letters = n - (piece[0] == " ")
            total += 1 if letters <= 6 else 1 + (letters - 6) / 4.0
        elif c.isdigit():
            total += math.ceil((n - (piece[0] == " ")) / 3)
        elif c == "\n":
            total += 0.5 + 0.25 * (n - 1)
        elif c in " \t":
            total += 1 if n > 1 else 0.3
        elif ord(c) >= 0x80:
            total += 1.1 if ord(c) >= 0x2E80 else 0.6
        else:
            total += 0.6 + 0.45 * (n - 1)
    result = max(1, round(total))
    if cacheable:
        if len(_ESTIMATE_CACHE) >= _ESTIMATE_CACHE_MAX:
            _ESTIMATE_CACHE.pop(next(iter(_ESTIMATE_CACHE)))  # oldest first
        _ESTIMATE_CACHE[key] = result
    return result


def _block_tokens(block: Any) -> float:
    try:
        return _block_tokens_unchecked(block)
    except (TypeError, AttributeError, ValueError):  # malformed block: count its text, never fail
        return estimate_text_tokens(json_dumps(block) if not isinstance(block, str) else block)


def _block_tokens_unchecked(block: Any) -> float:
    if isinstance(block, str):
        return estimate_text_tokens(block)
    if not isinstance(block, dict):
        return estimate_text_tokens(json_dumps(block))
    kind = block.get("type")
    if kind == "text":
        return estimate_text_tokens(block.get("text", "")) + 1
    if kind == "image":
        return 1600  # Anthropic caps an image near 1,568 tokens; most screenshots reach the cap
    if kind == "document":
        data = (block.get("source") or {}).get("data")
        return max(100, len(data) // 8) if isinstance(data, str) else 500
    if kind in ("thinking", "redacted_thinking"):
        return 0  # previous turns' thinking does not count toward the context (Anthropic docs)
    if kind == "tool_use":
        return 8 + estimate_text_tokens(block.get("name", "")) + estimate_text_tokens(json_dumps(block.get("input")))
    if kind == "tool_result":
        content = block.get("content", "")
        items = content if isinstance(content, list) else [content]
        return 6 + sum(_block_tokens(c) for c in items)
    return estimate_text_tokens(json_dumps(block))


def count_request_tokens(body: dict) -> int:
    """Input tokens of an Anthropic request: system, messages and tool definitions."""
    total = 0.0
    system = body.get("system")
    if isinstance(system, str):
        total += estimate_text_tokens(system)
    elif isinstance(system, list):
        total += sum(_block_tokens(b) for b in system)
    messages = body.get("messages")
    for msg in messages if isinstance(messages, list) else []:
        if not isinstance(msg, dict):
            continue
        total += 4
        content = msg.get("content")
        if isinstance(content, str):
            total += estimate_text_tokens(content)
        elif isinstance(content, list):
            total += sum(_block_tokens(b) for b in content)
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        total += 300  # the tool-use preamble the API adds whenever tools are present
        for tool in tools:
            if isinstance(tool, dict):
                total += 10 + estimate_text_tokens(tool.get("name", "")) + estimate_text_tokens(
                    tool.get("description", ""))
                if "input_schema" in tool:
                    total += estimate_text_tokens(json_dumps(tool["input_schema"]))
    return max(1, round(total))


class RequestFacts:
    """What a request is, as route conditions ask it: judged from its body (either dialect) and headers, each
    fact only when a route asks for it."""

    def __init__(self, body: dict, headers: Any = None, door: str = "anthropic"):
        self.body, self.headers, self.door = body, headers, door

    @functools.cached_property
    def thinking(self) -> bool:
        thinking = self.body.get("thinking")
        return (isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")) or \
            self.body.get("reasoning_effort") not in (None, "none")

    @functools.cached_property
    def tools(self) -> bool:
        return bool(_list(self.body.get("tools")) or _list(self.body.get("functions")))

    @functools.cached_property
    def web_search(self) -> bool:
        return any(isinstance(t, dict) and str(t.get("type", "")).startswith("web_search_")
                   for t in _list(self.body.get("tools"))) or self.body.get("web_search_options") is not None

    @functools.cached_property
    def images(self) -> bool:
        return _has_image(self.body.get("messages"))

    @functools.cached_property
    def subagent(self) -> bool:
        return bool(self.headers and self.headers.get("x-claude-code-agent-id"))

    @functools.cached_property
    def input_tokens(self) -> int:
        return count_request_tokens(self.body)


def _has_image(value: Any) -> bool:
    """Whether messages carry an image anywhere, tool results included (Anthropic ``image`` blocks, OpenAI
    ``image_url`` parts)."""
    if isinstance(value, list):
        return any(_has_image(v) for v in value)
    if isinstance(value, dict):
        return value.get("type") in ("image", "image_url") or _has_image(value.get("content"))
    return False


# ---- direction 2: OpenAI Chat Completions client → Anthropic backend ------------------------------------

ANTHROPIC_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
STOP_TO_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop", "max_tokens": "length",
                  "model_context_window_exceeded": "length", "tool_use": "tool_calls", "refusal": "content_filter"}
EFFORT_BUDGET = {"minimal": 1024, "low": 1024, "medium": 2048, "high": 4096, "xhigh": 8192, "max": 16384}
IMAGE_MEDIA_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp"}
JSON_TOOL = "json_response"  # the forced tool that carries response_format json_schema
DEFAULT_OUTPUT_TOKENS = 8192  # for OpenAI clients that send no max_tokens (Anthropic requires one)
_DATA_URL = re.compile(r"^data:([\w/+.-]+)?(?:;[\w=-]+)*;base64,(.*)$", re.DOTALL)
_EMAILISH = re.compile(r"@|^\+?[\d\s().-]{7,}$")


def claude_tool_names(body: dict) -> dict[str, str]:
    """OpenAI client's function name → the tool name an Anthropic backend gets (``^[a-zA-Z0-9_-]{1,128}$``)."""
    return unique_tool_names(_tool_names_in(body), ANTHROPIC_TOOL_NAME, 128)


def _openai_text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    _expect(isinstance(content, list), f"{where}: expected a string or a list of content parts")
    texts = []
    for j, part in enumerate(content):
        _expect(isinstance(part, dict), f"{where}[{j}]: expected an object")
        if part.get("type") in ("text", "input_text", "output_text"):
            _expect(isinstance(part.get("text"), str), f"{where}[{j}].text: expected a string")
            texts.append(part["text"])
        elif part.get("type") == "refusal":
            texts.append(str(part.get("refusal", "")))
    return "\n".join(texts)


def _openai_user_blocks(content: Any, where: str) -> list[dict]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    _expect(isinstance(content, list), f"{where}: expected a string or a list of content parts")
    blocks: list[dict] = []
    for j, part in enumerate(content):
        pw = f"{where}[{j}]"
        _expect(isinstance(part, dict) and isinstance(part.get("type"), str), f"{pw}: expected a typed part")
        kind = part["type"]
        if kind in ("text", "input_text"):
            _expect(isinstance(part.get("text"), str), f"{pw}.text: expected a string")
            blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str) or not url:
                raise bad_request(f"{pw}.image_url.url: expected a URL")
            blocks.append(_image_block(url, pw))
        elif kind == "file":
            blocks.append(_file_block(part.get("file") or {}, pw))
        elif kind in ("input_audio", "audio"):
            continue  # Anthropic has no audio input; Anthropic's own compat layer strips it too
        else:
            raise bad_request(f"{pw}.type: unsupported content part type {kind!r}")
    return blocks


def _image_block(url: str, where: str) -> dict:
    m = _DATA_URL.match(url)
    if m:
        media = (m.group(1) or "image/png").lower()
        _expect(media in IMAGE_MEDIA_TYPES, f"{where}: image type {media} is not supported "
                                            f"(use {', '.join(sorted(IMAGE_MEDIA_TYPES))})")
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": m.group(2)}}
    _expect(url.startswith(("http://", "https://")), f"{where}: image URL must be http(s) or a base64 data URL")
    return {"type": "image", "source": {"type": "url", "url": url}}


def _file_block(file: dict, where: str) -> dict:
    _expect(isinstance(file, dict), f"{where}.file: expected an object")
    data = file.get("file_data")
    name = file.get("filename") if isinstance(file.get("filename"), str) else None
    if isinstance(data, str):
        m = _DATA_URL.match(data)
        media, payload = ((m.group(1) or "application/pdf").lower(), m.group(2)) if m else ("application/pdf", data)
        if media == "application/pdf":
            block: dict[str, Any] = {"type": "document", "source": {
                "type": "base64", "media_type": "application/pdf", "data": payload}}
        elif media.startswith("text/") or media in ("application/json", "application/xml"):
            try:
                text = base64.b64decode(payload).decode("utf-8", "replace")
            except ValueError:
                raise bad_request(f"{where}.file.file_data: not valid base64") from None
            block = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": text}}
        elif media in IMAGE_MEDIA_TYPES:
            return {"type": "image", "source": {"type": "base64", "media_type": media, "data": payload}}
        else:
            raise bad_request(f"{where}.file: files of type {media} cannot be sent to Claude (PDF, text, images)")
        if name:
            block["title"] = name
        return block
    if isinstance(file.get("file_id"), str):
        return {"type": "text", "text": f"[file {name or file['file_id']} was attached but is not available here]"}
    raise bad_request(f"{where}.file: expected file_data (a data URL) or file_id")


def _tool_call_blocks(calls: Any, where: str, names_in: dict[str, str]) -> list[dict]:
    _expect(isinstance(calls, list), f"{where}.tool_calls: expected a list")
    blocks = []
    for k, call in enumerate(calls):
        _expect(isinstance(call, dict), f"{where}.tool_calls[{k}]: expected an object")
        fn = call.get("function") or {}
        _expect(isinstance(fn, dict) and isinstance(fn.get("name"), str) and fn["name"],
                f"{where}.tool_calls[{k}].function.name: expected a function name")
        blocks.append({"type": "tool_use", "id": sanitize_tool_id(call.get("id")),
                       "name": names_in[fn["name"]],
                       "input": _parse_tool_arguments(fn.get("arguments"))})
    return blocks


def _normalise_turns(turns: list[dict]) -> list[dict]:
    """Make a conversation Anthropic accepts: alternating roles starting with user, tool results first in the
    user turn after their calls, every call answered, no empty text, no trailing whitespace in a prefill."""
    merged: list[dict] = []
    for turn in turns:
        blocks = [b for b in turn["content"] if not (b["type"] == "text" and not b["text"].strip())]
        if not blocks:
            continue
        if merged and merged[-1]["role"] == turn["role"]:
            merged[-1]["content"].extend(blocks)
        else:
            merged.append({"role": turn["role"], "content": blocks})
    if not merged or merged[0]["role"] != "user":
        merged.insert(0, {"role": "user", "content": [{"type": "text", "text": "[Start a new chat]"}]})
    out: list[dict] = []
    for i, turn in enumerate(merged):
        if turn["role"] == "user":
            prev_calls = [b["id"] for b in out[-1]["content"] if b["type"] == "tool_use"] if out else []
            results = [b for b in turn["content"] if b["type"] == "tool_result"]
            others = [b for b in turn["content"] if b["type"] != "tool_result"]
            kept: list[dict] = []
            for r in results:
                if r["tool_use_id"] in prev_calls and r["tool_use_id"] not in [k["tool_use_id"] for k in kept]:
                    kept.append(r)
                else:  # an orphan result: keep what it said, as text
                    others.append({"type": "text", "text": f"[tool result {r['tool_use_id']}]\n"
                                                           f"{_tool_result_text(r)}"})
            answered = {r["tool_use_id"] for r in kept}
            kept += [{"type": "tool_result", "tool_use_id": t, "content": "(no result)"}
                     for t in prev_calls if t not in answered]
            turn = {"role": "user", "content": kept + others}
        if turn["role"] == "assistant" and i + 1 == len(merged):
            calls = [b for b in turn["content"] if b["type"] == "tool_use"]
            if calls:  # the client sent calls without results: answer them so the request is valid
                out.append(turn)
                out.append({"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": b["id"], "content": "(no result)"} for b in calls]})
                continue
            last = turn["content"][-1]
            if last["type"] == "text":  # Anthropic: final assistant content cannot end with trailing whitespace
                last["text"] = last["text"].rstrip()
                if not last["text"]:
                    turn["content"].pop()
            if not turn["content"]:
                continue
        out.append(turn)
    return out


def _tool_result_text(block: dict) -> str:
    content = block.get("content")
    if isinstance(content, str):
        return content
    return "\n".join(c.get("text", "") for c in content or [] if isinstance(c, dict))


def validate_chat_request(body: Any) -> None:
    _expect(isinstance(body, dict), "request body must be a JSON object")
    _expect(isinstance(body.get("model"), str) and body["model"].strip() != "",
            "model: field required (a non-empty string)")
    _expect(isinstance(body.get("messages"), list) and body["messages"],
            "messages: field required (a non-empty list of messages)")
    n = body.get("n")
    _expect(n is None or n == 1, f"n: only n=1 is supported (Claude returns one choice per request), got {n!r}")
    for key in ("max_tokens", "max_completion_tokens"):
        v = body.get(key)
        _expect(v is None or (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 10_000_000),
                f"{key}: expected a positive integer, got {v!r}")
    for key in ("temperature", "top_p"):
        v = body.get(key)
        _expect(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0),
                f"{key}: expected a non-negative number, got {v!r}")
    stop = body.get("stop")
    _expect(stop is None or isinstance(stop, str) or (isinstance(stop, list) and all(isinstance(s, str) for s in stop)),
            "stop: expected a string or a list of strings")
    _expect(body.get("stream") is None or isinstance(body["stream"], bool), "stream: expected a boolean")
    _expect(body.get("stream_options") is None or isinstance(body["stream_options"], dict),
            "stream_options: expected an object")


def openai_to_anthropic_request(body: dict, backend_model: str, max_tokens_cap: int | None = None,
                                default_max_tokens: int = DEFAULT_OUTPUT_TOKENS,
                                names_in: dict[str, str] | None = None) -> dict:
    """Translate an OpenAI Chat Completions request into an Anthropic Messages request. ``names_in``:
    ``claude_tool_names(body)``, when the caller has it already."""
    validate_chat_request(body)
    names_in = claude_tool_names(body) if names_in is None else names_in
    system, turns = _openai_conversation(body["messages"], names_in)
    out: dict[str, Any] = {"model": backend_model, "messages": _normalise_turns(turns), "max_tokens": body.get(
        "max_completion_tokens") or body.get("max_tokens") or default_max_tokens}
    effort = body.get("reasoning_effort")
    budget = EFFORT_BUDGET.get(effort) if isinstance(effort, str) else None
    tools, tool_choice = _openai_tools(body, names_in)
    tools, tool_choice, instruction = _response_format(body.get("response_format"), tools, tool_choice, bool(budget))
    system += [instruction] if instruction else []
    if system:
        out["system"] = "\n".join(system)
    _set_tools(out, tools, tool_choice, body.get("parallel_tool_calls") is False)
    if budget:
        _set_thinking(out, budget)
    else:
        temperature = body.get("temperature")
        if temperature is not None:
            out["temperature"] = min(1.0, float(temperature))
        elif body.get("top_p") is not None:
            out["top_p"] = body["top_p"]  # newer Claude models refuse temperature and top_p together
    stop = body.get("stop")
    stops = [s for s in ([stop] if isinstance(stop, str) else stop or []) if s.strip()]
    if stops:
        out["stop_sequences"] = stops
    user = body.get("user") or body.get("safety_identifier")
    if isinstance(user, str) and user and not _EMAILISH.search(user):
        out["metadata"] = {"user_id": user[:256]}
    if body.get("stream"):
        out["stream"] = True
    return cap_output_tokens(out, max_tokens_cap)


def _openai_conversation(messages: list, names_in: dict[str, str]) -> tuple[list[str], list[dict]]:
    """(system texts, turns) of an OpenAI conversation: system and developer messages are hoisted in order."""
    system: list[str] = []
    turns: list[dict] = []
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        _expect(isinstance(msg, dict), f"{where}: expected an object")
        role = msg.get("role")
        if role in ("system", "developer"):
            text = _openai_text(msg.get("content"), f"{where}.content")
            if text.strip():
                system.append(text)
        elif role == "user":
            turns.append({"role": "user", "content": _openai_user_blocks(msg.get("content"), f"{where}.content")})
        elif role == "assistant":
            blocks: list[dict] = []
            text = _openai_text(msg.get("content"), f"{where}.content")
            if text:
                blocks.append({"type": "text", "text": text})
            if msg.get("tool_calls"):
                blocks += _tool_call_blocks(msg["tool_calls"], where, names_in)
            elif isinstance(msg.get("function_call"), dict):
                fc = msg["function_call"]
                blocks += _tool_call_blocks([{"id": f"call_fn_{i}", "function": fc}], where, names_in)
            turns.append({"role": "assistant", "content": blocks})
        elif role in ("tool", "function"):
            tool_id = msg.get("tool_call_id") if role == "tool" else f"call_fn_{i - 1}"
            _expect(isinstance(tool_id, str) and tool_id, f"{where}.tool_call_id: field required")
            text = _openai_text(msg.get("content"), f"{where}.content")
            turns.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": sanitize_tool_id(tool_id),
                                                       "content": text or "(no output)"}]})
        else:
            raise bad_request(f"{where}.role: expected system, developer, user, assistant or tool, got {role!r}")
    return system, turns


def _response_format(fmt: Any, tools: list[dict], tool_choice: dict | None,
                     thinking: bool) -> tuple[list[dict], dict | None, str | None]:
    """``response_format`` as Claude can honour it: a json_schema answer comes through a forced tool (a system
    instruction when thinking forbids forcing one); json_object is an instruction. Returns (tools, tool_choice,
    instruction for the system prompt)."""
    if not isinstance(fmt, dict):
        return tools, tool_choice, None
    if fmt.get("type") == "json_object":
        return tools, tool_choice, "Respond only with a valid JSON object, no other text."
    if fmt.get("type") != "json_schema" or not isinstance(fmt.get("json_schema"), dict):
        return tools, tool_choice, None
    schema = fmt["json_schema"].get("schema") or {"type": "object"}
    _expect(isinstance(schema, dict), "response_format.json_schema.schema: expected a JSON Schema object")
    check_schema(schema, "response_format.json_schema.schema")
    if thinking:
        return tools, tool_choice, ("Respond only with a JSON value matching this JSON Schema, no other text:\n"
                                    + json_dumps(schema))
    tools = [t for t in tools if t["name"] != JSON_TOOL] + [{
        "name": JSON_TOOL, "description": "Give the final answer as JSON matching the schema.",
        "input_schema": schema if schema.get("type") == "object" else {
            "type": "object", "properties": {"value": schema}, "required": ["value"]}}]
    return tools, {"type": "tool", "name": JSON_TOOL}, None


def _set_tools(out: dict, tools: list[dict], tool_choice: dict | None, serial: bool) -> None:
    if tools:
        out["tools"] = tools
    if tool_choice:
        out["tool_choice"] = tool_choice
    if serial and tools and (tool_choice or {}).get("type") != "none":
        out["tool_choice"] = {**(tool_choice or {"type": "auto"}), "disable_parallel_tool_use": True}


def _set_thinking(out: dict, budget: int) -> None:
    out["thinking"] = {"type": "enabled", "budget_tokens": budget}
    if out["max_tokens"] <= budget:  # clients mean the visible answer; leave it room after the thinking
        out["max_tokens"] = budget + DEFAULT_OUTPUT_TOKENS // 2
    if out.get("tool_choice", {}).get("type") in ("any", "tool"):
        out["tool_choice"] = {"type": "auto"}  # thinking allows only auto/none tool_choice


def _openai_tools(body: dict, names_in: dict[str, str]) -> tuple[list[dict], dict | None]:
    raw = body.get("tools")
    _expect(raw is None or isinstance(raw, list), "tools: expected a list")
    functions = body.get("functions")
    _expect(functions is None or isinstance(functions, list), "functions: expected a list")
    defs = [t.get("function") if isinstance(t, dict) and t.get("type", "function") == "function" else None
            for t in raw or []] + list(functions or [])
    tools = []
    for i, fn in enumerate(defs):
        if fn is None:
            continue  # custom/built-in tool types have no Anthropic counterpart
        _expect(isinstance(fn, dict) and isinstance(fn.get("name"), str) and fn["name"],
                f"tools[{i}].function.name: expected a function name")
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        _expect(isinstance(params, dict), f"tools[{i}].function.parameters: expected a JSON Schema object")
        check_schema(params, f"tools[{i}].function.parameters")
        if params.get("type") != "object":
            params = {"type": "object", "properties": params.get("properties", {}), **{
                k: v for k, v in params.items() if k not in ("type", "properties")}}
        tool = {"name": names_in[fn["name"]], "input_schema": params}
        if isinstance(fn.get("description"), str) and fn["description"]:
            tool["description"] = fn["description"]
        tools.append(tool)
    choice = body.get("tool_choice", body.get("function_call"))
    mapped: dict | None = None
    if choice is not None and tools:
        if choice == "none":
            mapped = {"type": "none"}
        elif choice == "auto":
            mapped = {"type": "auto"}
        elif choice == "required":
            mapped = {"type": "any"}
        elif isinstance(choice, dict):
            name = (choice.get("function") or {}).get("name") if isinstance(choice.get("function"), dict) \
                else choice.get("name")
            if not isinstance(name, str):
                raise bad_request("tool_choice.function.name: expected a function name")
            mapped = {"type": "tool", "name": names_in.get(name, name)}
        else:
            raise bad_request(f"tool_choice: expected none, auto, required or a function, got {choice!r}")
    return tools, mapped


def openai_usage(usage: Any) -> dict:
    """Anthropic usage → OpenAI usage; OpenAI's prompt_tokens includes cached tokens."""
    usage = usage if isinstance(usage, dict) else {}
    count = {key: token_count(usage.get(key)) or 0 for key in (
        "input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")}
    cache_read = count["cache_read_input_tokens"]
    prompt = count["input_tokens"] + cache_read + count["cache_creation_input_tokens"]
    completion = count["output_tokens"]
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cache_read}}


def anthropic_to_openai_response(msg: Any, requested_model: str, tool_names: dict[str, str] | None = None,
                                 json_tool: bool = False) -> dict:
    """Translate an Anthropic Message into an OpenAI chat.completion; a malformed one raises a 502."""
    if not isinstance(msg, dict) or not isinstance(msg.get("content"), list):
        raise malformed("not an Anthropic message (no content list)")
    names = tool_names or {}
    texts, reasoning, calls = [], [], []
    for block in msg["content"]:
        if not isinstance(block, dict):
            raise malformed(f"a content block is {describe_value(block)}, not an object")
        kind = block.get("type")
        field = kind if kind in ("text", "thinking") else None
        if field and not isinstance(block.get(field, ""), str):
            raise malformed(f"a {kind} block's {field} is {describe_value(block[field])}, not a string")
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "thinking":
            reasoning.append(block.get("thinking", ""))
        elif kind == "tool_use":
            name, value = block.get("name"), block.get("input", {})
            if not isinstance(name, str) or not name or not isinstance(value, dict):
                raise malformed("a tool_use block needs a name and an object input")
            if json_tool and name == JSON_TOOL:
                texts.append(json_dumps(value["value"] if set(value) == {"value"} else value))
                continue
            call_id = block["id"] if isinstance(block.get("id"), str) and block["id"] else sanitize_tool_id(None, "call_")
            calls.append({"id": call_id, "type": "function",
                          "function": {"name": names.get(name, name), "arguments": json_dumps(value)}})
    stop = msg.get("stop_reason")
    finish = "tool_calls" if calls else STOP_TO_FINISH.get(stop, "stop") if isinstance(stop, str) else "stop"
    if json_tool and stop == "tool_use" and not calls:
        finish = "stop"
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None,
                               "refusal": None}
    if calls:
        message["tool_calls"] = calls
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    return {"id": "chatcmpl-" + str(msg.get("id") or secrets.token_hex(12)).removeprefix("msg_"),
            "object": "chat.completion", "created": int(time.time()), "model": requested_model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": openai_usage(msg.get("usage"))}



# ---- direction 3: Anthropic Messages → OpenAI Responses backend --------------------------------------------
# The proxy keeps no state: the whole conversation goes each turn (store: false), and a reasoning item travels to
# the client inside the thinking block's signature, to come back on the next turn as it was.

REASONING_MARK = "cprs1."  # a thinking signature that carries a Responses reasoning item: mark, id, ".", content
SUMMARY_PARTS_JOINED = "\n\n"  # between the parts of a reasoning summary, in the thinking text


def reasoning_signature(item: dict) -> str:
    enc = item.get("encrypted_content")
    return f"{REASONING_MARK}{item.get('id') or ''}.{enc}" if isinstance(enc, str) and enc else ""


def _reasoning_item(block: dict) -> dict | None:
    """The reasoning item a thinking block carries back, or None (thinking from another model is not sent)."""
    signature = block.get("signature")
    if not isinstance(signature, str) or not signature.startswith(REASONING_MARK):
        return None
    item_id, _, encrypted = signature[len(REASONING_MARK):].partition(".")
    thinking = block.get("thinking") if isinstance(block.get("thinking"), str) else ""
    item: dict[str, Any] = {"type": "reasoning", "summary": [{"type": "summary_text", "text": thinking}] if thinking
                            else [], "encrypted_content": encrypted}  # no status: a replayed item must not have one
    if item_id:
        item["id"] = item_id
    return item


def _responses_part(part: dict) -> dict:
    """A content part of the Chat shape (as the shared block helpers make it) in the Responses shape."""
    if part["type"] == "image_url":
        return {"type": "input_image", "image_url": part["image_url"]["url"], "detail": "auto"}
    if part["type"] == "file":
        return {"type": "input_file", **part["file"]}
    return {"type": "input_text", "text": part["text"]}


def _responses_input(messages: list, names: dict[str, str]) -> list[dict]:
    items: list[dict] = []
    for i, msg in enumerate(messages):
        where = f"messages.{i}"
        _expect(isinstance(msg, dict), f"{where}: expected an object")
        role, content = msg.get("role"), msg.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        _expect(isinstance(blocks, list), f"{where}.content: expected a string or a list of blocks")
        if role == "system":
            items.append({"type": "message", "role": "developer", "content": _text_of(content, where)})
        elif role == "assistant":
            items += _responses_assistant(blocks, where, names)
        else:
            items += _responses_user(blocks, where)
    return items


def _responses_user(blocks: list, where: str) -> list[dict]:
    items: list[dict] = []
    parts: list[dict] = []
    for j, block in enumerate(blocks):
        bw = f"{where}.content.{j}"
        _expect(isinstance(block, dict), f"{bw}: expected an object")
        kind = block.get("type")
        if kind == "tool_result":
            text, extra = _tool_result_parts(block, bw)
            call_id = split_tool_id(sanitize_tool_id(block.get("tool_use_id")))[0]
            items.append({"type": "function_call_output", "call_id": call_id, "output": text})
            parts += [_responses_part(p) for p in extra]  # images of a result follow it in a user message
        elif kind == "text":
            _expect(isinstance(block.get("text"), str), f"{bw}.text: expected a string")
            if block["text"]:
                parts.append({"type": "input_text", "text": block["text"]})
        elif kind == "image":
            parts.append(_responses_part(_image_part(block, bw)))
        elif kind == "document":
            parts.append(_responses_part(_document_part(block, bw)))
        elif kind == "search_result":
            parts.append({"type": "input_text", "text": _search_result_text(block, bw)})
        elif kind == "tool_reference":
            parts.append({"type": "input_text", "text": f"Tool loaded: {block.get('tool_name', '')}"})
        elif kind not in ("thinking", "redacted_thinking", "container_upload"):
            parts.append({"type": "input_text", "text": _server_block_text(block)})
    if parts:
        items.append({"type": "message", "role": "user", "content": parts})
    return items


def _responses_assistant(blocks: list, where: str, names: dict[str, str]) -> list[dict]:
    items: list[dict] = []
    for j, block in enumerate(blocks):
        bw = f"{where}.content.{j}"
        _expect(isinstance(block, dict), f"{bw}: expected an object")
        kind = block.get("type")
        if kind == "thinking":
            reasoning = _reasoning_item(block)
            if reasoning:
                items.append(reasoning)
        elif kind == "text":
            _expect(isinstance(block.get("text"), str), f"{bw}.text: expected a string")
            if block["text"]:
                items.append({"type": "message", "role": "assistant",
                              "content": [{"type": "output_text", "text": block["text"]}]})
        elif kind == "tool_use":
            _expect(isinstance(block.get("name"), str) and block["name"], f"{bw}.name: expected a tool name")
            _expect(isinstance(block.get("input", {}), dict), f"{bw}.input: expected an object")
            items.append({"type": "function_call", "call_id": split_tool_id(sanitize_tool_id(block.get("id")))[0],
                          "name": names[block["name"]], "arguments": json_dumps(block.get("input", {}))})
        elif kind != "redacted_thinking":
            items.append({"type": "message", "role": "assistant",
                          "content": [{"type": "output_text", "text": _server_block_text(block)}]})
    return items


def anthropic_to_responses_request(body: dict, backend_model: str, max_tokens_cap: int | None = None,
                                   reasoning_effort: str = "off", names: dict[str, str] | None = None) -> dict:
    """Translate a validated Anthropic Messages request into an OpenAI Responses request: stateless (``store``
    false, the whole conversation, reasoning items carried in thinking signatures and sent back)."""
    validate_messages_request(body)
    names = openai_tool_names(body) if names is None else names
    out: dict[str, Any] = {"model": backend_model, "input": _responses_input(body["messages"], names),
                           "store": False, "include": ["reasoning.encrypted_content"]}
    system = _text_of(body["system"], "system") if body.get("system") is not None else ""
    if system:
        out["instructions"] = system
    max_tokens = min(body["max_tokens"], max_tokens_cap) if max_tokens_cap else body["max_tokens"]
    out["max_output_tokens"] = max(16, max_tokens)  # the API's least
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    functions = [t for t in _list(body.get("tools")) if not proxy_server_tool(t)]  # those run on Chat backends
    tools, choice, parallel = _convert_tools(functions, body.get("tool_choice"), names,
                                             deferred_loaded(body))
    if tools:
        # A function without "strict" is strict in the Responses API: optional arguments would come back empty.
        out["tools"] = [{"type": "function", **t["function"], "strict": False} for t in tools]
        if choice is not None:
            out["tool_choice"] = {"type": "function", "name": choice["function"]["name"]} \
                if isinstance(choice, dict) else choice
        if parallel is not None:
            out["parallel_tool_calls"] = parallel
    effort = _reasoning_effort(body, reasoning_effort)
    if effort:
        out["reasoning"] = {"effort": effort, "summary": "auto"}  # a summary comes back as the thinking text
    if body.get("stream"):
        out["stream"] = True
    return out


def responses_usage(usage: Any) -> dict | None:
    """A Responses usage object in the Chat Completions shape, for ``anthropic_usage``."""
    if not isinstance(usage, dict):
        return None
    details = usage.get("input_tokens_details")
    return {"prompt_tokens": usage.get("input_tokens"), "completion_tokens": usage.get("output_tokens"),
            "prompt_tokens_details": {"cached_tokens": details.get("cached_tokens")} if isinstance(details, dict)
            else None}


def responses_failure(resp: dict) -> ProxyError:
    """A Responses answer with status "failed" (or an ``error`` event): the backend's own message."""
    error: dict = resp["error"] if isinstance(resp.get("error"), dict) else resp
    message = error.get("message") if isinstance(error.get("message"), str) else "the response failed"
    code = error.get("code")
    return ProxyError(502, f"the backend's response failed: {message}" + (f" ({code})" if isinstance(code, str)
                                                                           else ""), "api_error")


def responses_to_anthropic_response(resp: Any, requested_model: str, tool_names: dict[str, str] | None = None,
                                    input_estimate: int = 0) -> dict:
    """Translate a Responses answer into an Anthropic Message: reasoning → thinking (its signature carrying the
    item), message text → text, function calls → tool_use; a failed response raises its error."""
    if not isinstance(resp, dict) or not isinstance(resp.get("output"), list):
        raise malformed(f"the answer has no output list: {describe_value(resp)}")
    if resp.get("status") == "failed":
        raise responses_failure(resp)
    names = tool_names or {}
    content: list[dict] = []
    said: list[str] = []
    for item in resp["output"]:
        if not isinstance(item, dict):
            raise malformed(f"an output item is {describe_value(item)}, not an object")
        block = responses_item_block(item, names)
        if block is not None:
            content.append(block)
            said.append(block.get("text") or block.get("thinking") or json_dumps(block.get("input", "")))
    has_tools = any(b["type"] == "tool_use" for b in content)
    incomplete = (resp.get("incomplete_details") or {}).get("reason") if resp.get("status") == "incomplete" else None
    stop = "max_tokens" if incomplete == "max_output_tokens" else "refusal" if incomplete == "content_filter" else \
        "tool_use" if has_tools else "end_turn"
    usage = anthropic_usage(responses_usage(resp.get("usage"))) or {
        "input_tokens": input_estimate, "output_tokens": estimate_output_tokens(said),
        "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}
    return {"id": new_message_id(resp.get("id")), "type": "message", "role": "assistant", "model": requested_model,
            "content": content, "stop_reason": stop, "stop_sequence": None, "usage": usage}


def responses_item_block(item: dict, names: dict[str, str]) -> dict | None:
    """One Responses output item as an Anthropic content block (None for items a client cannot use)."""
    kind = item.get("type")
    if kind == "reasoning":
        summary = SUMMARY_PARTS_JOINED.join(str(p.get("text", "")) for p in _list(item.get("summary"))
                                            if isinstance(p, dict))
        return {"type": "thinking", "thinking": summary, "signature": reasoning_signature(item)}
    if kind == "message":
        parts = [p for p in _list(item.get("content")) if isinstance(p, dict)]
        text = "".join(str(p.get("text") or p.get("refusal") or "") for p in parts)
        return {"type": "text", "text": text} if text else None
    if kind == "function_call":
        call_id, name, args = item.get("call_id"), item.get("name"), item.get("arguments")
        if not isinstance(name, str) or not isinstance(args, (str, dict, type(None))):
            raise malformed(f"a function_call item has name {describe_value(name)} and arguments "
                            f"{describe_value(args)}")
        return {"type": "tool_use", "id": sanitize_tool_id(call_id), "name": names.get(name, name),
                "input": _parse_tool_arguments(args)}
    return None


# ---- direction 4: OpenAI Responses client (Codex CLI) → the hub --------------------------------------------

NO_STATE = ("this proxy keeps no state between requests: send store: false and the whole conversation in input "
            "each turn (Codex CLI does so by default)")


def validate_responses_request(body: Any) -> None:
    _expect(isinstance(body, dict), "request body: expected a JSON object")
    _expect(isinstance(body.get("model"), str) and body["model"], "model: field required")
    _expect(isinstance(body.get("input"), (str, list)), "input: expected a string or a list of items")
    if body.get("previous_response_id") is not None:
        raise bad_request(f"previous_response_id: {NO_STATE}")
    if body.get("store") is True:
        raise bad_request(f"store: true: {NO_STATE}")
    for key in ("tools", "include"):
        _expect(body.get(key) is None or isinstance(body[key], list), f"{key}: expected a list")


def _responses_items(body: dict) -> list:
    items = body["input"]
    return [{"type": "message", "role": "user", "content": items}] if isinstance(items, str) else items


CLIENT_TOOL_SEARCH = "tool_search"  # the name of a tool search the client runs itself (Codex)


def _client_tools(body: dict) -> list[tuple[str, dict]]:
    """The client's tools by the name the proxy knows them: those of the request and those the conversation
    added (``additional_tools`` items, the tools a client-run tool search loaded); a tool inside a ``namespace``
    tool as ``NAMESPACE.NAME`` (Responses tool names have no dots); a client-run tool search as ``tool_search``."""
    lists = [body.get("tools")] + [i.get("tools") for i in _list(body.get("input")) if isinstance(i, dict)
                                   and i.get("type") in ("additional_tools", "tool_search_output")]
    out = []
    for tool in (t for tools in lists for t in _list(tools) if isinstance(t, dict)):
        if tool.get("type") == "namespace" and isinstance(tool.get("name"), str):
            out += [(f"{tool['name']}.{t.get('name')}", t) for t in _list(tool.get("tools")) if isinstance(t, dict)]
        elif tool.get("type") == "tool_search" and tool.get("execution") == "client":
            out.append((CLIENT_TOOL_SEARCH, tool))
        else:
            out.append((str(tool.get("name")), tool))
    return list({name: (name, t) for name, t in out}.values())


def _qualified(item: dict) -> Any:
    """The name of a call item as ``_client_tools`` knows it."""
    name = item.get("name")
    return f"{item['namespace']}.{name}" if isinstance(item.get("namespace"), str) and item["namespace"] else name


def responses_tool_names(body: dict) -> dict[str, str]:
    """Responses client's tool name → the name an Anthropic-shaped request gets (``^[a-zA-Z0-9_-]{1,128}$``)."""
    found = [name for name, _ in _client_tools(body)]
    found += [_qualified(i) for i in _list(body.get("input")) if isinstance(i, dict)
              and i.get("type") in ("function_call", "custom_tool_call")]
    return unique_tool_names([n for n in found if isinstance(n, str) and n], ANTHROPIC_TOOL_NAME, 128)


def tool_kinds(body: dict) -> dict[str, str]:
    """The client's tools whose calls are not function_call items: freeform ones (Codex's apply_patch) go back
    as custom_tool_call items, a client-run tool search as a tool_search_call item."""
    return {name: t["type"] for name, t in _client_tools(body) if t.get("type") in ("custom", "tool_search")}


def _responses_tools(body: dict, names: dict[str, str]) -> tuple[list[dict], list[str]]:
    """Anthropic tools for a Responses request's tools, and the hosted ones left out."""
    tools, left_out = [], []
    for i, (name, tool) in enumerate(_client_tools(body)):
        kind = tool.get("type")
        if kind in ("function", "custom") or name == CLIENT_TOOL_SEARCH:
            _expect(isinstance(tool.get("name", name), str) and name, f"tools[{i}].name: expected a tool name")
            schema = tool.get("parameters") if kind != "custom" else {
                "type": "object", "required": ["input"], "properties": {"input": {
                    "type": "string", "description": "The tool's input, as free text in its own format."}}}
            description = str(tool.get("description") or "")
            if kind == "custom" and isinstance(tool.get("format"), dict) and tool["format"].get("definition"):
                description += f"\n\nThe input follows this grammar:\n{tool['format']['definition']}"
            tools.append({"name": names[name], "description": description,
                          "input_schema": schema if isinstance(schema, dict) else {"type": "object"}})
        else:
            left_out.append(str(kind))
    return tools, left_out


def _responses_tool_choice(choice: Any, names: dict[str, str]) -> dict | None:
    if choice in (None, "auto"):
        return None
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, dict) and choice.get("type") in ("function", "custom") and choice.get("name") in names:
        return {"type": "tool", "name": names[choice["name"]]}
    return None  # a hosted tool, or one left out: the model chooses


def _responses_parts(content: Any, where: str) -> list[dict]:
    """Anthropic blocks for a Responses message's content (a string or input_/output_ parts)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    _expect(isinstance(content, list), f"{where}: expected a string or a list of parts")
    blocks: list[dict] = []
    for j, part in enumerate(content):
        pw = f"{where}[{j}]"
        _expect(isinstance(part, dict), f"{pw}: expected an object")
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text", "summary_text", "reasoning_text"):
            _expect(isinstance(part.get("text"), str), f"{pw}.text: expected a string")
            blocks.append({"type": "text", "text": part["text"]})
        elif kind == "refusal":
            blocks.append({"type": "text", "text": str(part.get("refusal") or "")})
        elif kind == "input_image":
            url = part.get("image_url")
            if isinstance(url, str) and url:
                blocks.append(_image_block(url, pw))
            else:
                blocks.append({"type": "text", "text": f"[image {part.get('file_id', '')} is not available here]"})
        elif kind == "input_file":
            blocks.append(_file_block(part, pw))
        else:
            raise bad_request(f"{pw}.type: unsupported content part type {kind!r}")
    return blocks


def _responses_turn(item: dict, where: str, names: dict[str, str], keep_reasoning: bool) -> dict | str | None:
    """One input item as an Anthropic turn (a system or developer message as its text; None: left out)."""
    kind = item.get("type") or ("message" if "role" in item else None)
    if kind == "message":
        role = item.get("role")
        _expect(role in ("user", "assistant", "system", "developer"), f"{where}.role: expected user, assistant, "
                                                                      f"system or developer, got {role!r}")
        if role in ("system", "developer"):
            return "\n".join(b["text"] for b in _responses_parts(item.get("content"), f"{where}.content")
                             if b["type"] == "text")
        return {"role": role, "content": _responses_parts(item.get("content"), f"{where}.content")}
    if kind in ("function_call", "custom_tool_call"):
        _expect(isinstance(item.get("name"), str) and item["name"], f"{where}.name: expected a tool name")
        _expect(isinstance(item.get("call_id"), str) and item["call_id"], f"{where}.call_id: field required")
        tool_input = _parse_tool_arguments(item.get("arguments")) if kind == "function_call" else {
            "input": str(item.get("input") or "")}
        return {"role": "assistant", "content": [{"type": "tool_use", "id": sanitize_tool_id(item["call_id"]),
                                                  "name": names[_qualified(item)], "input": tool_input}]}
    if kind == "tool_search_call":  # the client ran it: a call and, below, its output
        _expect(isinstance(item.get("call_id"), str) and item["call_id"], f"{where}.call_id: field required")
        arguments = item.get("arguments")
        return {"role": "assistant", "content": [{"type": "tool_use", "id": sanitize_tool_id(item["call_id"]),
                                                  "name": names.get(CLIENT_TOOL_SEARCH, CLIENT_TOOL_SEARCH),
                                                  "input": _parse_tool_arguments(arguments)}]}
    if kind == "tool_search_output":
        _expect(isinstance(item.get("call_id"), str) and item["call_id"], f"{where}.call_id: field required")
        found = ", ".join(name for name, _ in _client_tools({"tools": item.get("tools")})) or "none"
        return {"role": "user", "content": [{"type": "tool_result", "tool_use_id": sanitize_tool_id(item["call_id"]),
                                             "content": f"Tools loaded: {found}"}]}
    if kind == "additional_tools":
        return None  # its tools are offered with the request's
    if kind in ("function_call_output", "custom_tool_call_output"):
        _expect(isinstance(item.get("call_id"), str) and item["call_id"], f"{where}.call_id: field required")
        output = item.get("output")
        content: Any = output if isinstance(output, str) else _responses_parts(output, f"{where}.output")
        return {"role": "user", "content": [{"type": "tool_result", "tool_use_id": sanitize_tool_id(item["call_id"]),
                                             "content": content or "(no output)"}]}
    if kind == "reasoning":
        summary = SUMMARY_PARTS_JOINED.join(str(p.get("text", "")) for p in _list(item.get("summary"))
                                            if isinstance(p, dict))
        signature = reasoning_signature(item)
        if not keep_reasoning or not (signature or summary):
            return None  # an Anthropic backend would refuse a signature it did not make
        return {"role": "assistant", "content": [{"type": "thinking", "thinking": summary, "signature": signature}]}
    if kind == "item_reference":
        raise bad_request(f"{where}: item_reference: {NO_STATE}")
    return {"role": "assistant", "content": [{"type": "text", "text": f"[{kind}] {json_dumps(item)[:2000]}"}]}


def responses_to_anthropic_request(body: dict, backend_model: str, max_tokens_cap: int | None = None,
                                   names: dict[str, str] | None = None, keep_reasoning: bool = True,
                                   web_search: bool = False) -> dict:
    """Translate a Responses request into an Anthropic Messages request (the hub). Instructions and system or
    developer messages become the system prompt; custom tools become tools with one string ``input``; hosted
    tools are left out (with one log line), but for web search when the proxy can run it (``web_search``);
    reasoning items travel in thinking signatures when ``keep_reasoning``."""
    validate_responses_request(body)
    names = responses_tool_names(body) if names is None else names
    system = [body["instructions"]] if isinstance(body.get("instructions"), str) and body["instructions"] else []
    turns: list[dict] = []
    for i, item in enumerate(_responses_items(body)):
        _expect(isinstance(item, dict), f"input[{i}]: expected an object")
        turn = _responses_turn(item, f"input[{i}]", names, keep_reasoning)
        if isinstance(turn, str):
            system += [turn] if turn.strip() else []
        elif turn is not None:
            turns.append(turn)
    max_tokens = body.get("max_output_tokens") or DEFAULT_OUTPUT_TOKENS
    out: dict[str, Any] = {"model": backend_model, "messages": _normalise_turns(turns), "max_tokens": max_tokens}
    tools, left_out = _responses_tools(body, names)
    if web_search and any(kind.startswith("web_search") for kind in left_out):
        tools.append({"type": "web_search_20250305", "name": "web_search"})
        left_out = [kind for kind in left_out if not kind.startswith("web_search")]
    if left_out:
        log.info("tools only OpenAI's servers run are left out: %s", ", ".join(sorted(set(left_out))))
    fmt = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    effort = (body.get("reasoning") or {}).get("effort") if isinstance(body.get("reasoning"), dict) else None
    budget = EFFORT_BUDGET.get(effort) if isinstance(effort, str) else None
    chat_format = {"type": "json_schema", "json_schema": fmt} if isinstance(fmt, dict) and \
        fmt.get("type") == "json_schema" else fmt
    tools, tool_choice, instruction = _response_format(chat_format, tools, _responses_tool_choice(
        body.get("tool_choice"), names), bool(budget))
    system += [instruction] if instruction else []
    if system:
        out["system"] = "\n\n".join(system)
    _set_tools(out, tools, tool_choice, body.get("parallel_tool_calls") is False)
    if budget:
        _set_thinking(out, budget)
    elif body.get("temperature") is not None:
        out["temperature"] = min(1.0, float(body["temperature"]))
    elif body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    if body.get("stream"):
        out["stream"] = True
    return cap_output_tokens(out, max_tokens_cap)


def responses_output_item(block: dict, names: dict[str, str], kinds: dict[str, str]) -> dict | None:
    """An Anthropic content block as a Responses output item (None for blocks a Responses client cannot use)."""
    kind = block["type"]
    if kind == "text":
        return {"type": "message", "id": "msg_" + secrets.token_hex(12), "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": block["text"], "annotations": [], "logprobs": []}]}
    if kind == "thinking":
        item_id, _, encrypted = str(block.get("signature") or "").removeprefix(REASONING_MARK).partition(".") \
            if str(block.get("signature") or "").startswith(REASONING_MARK) else ("", "", "")
        return {"type": "reasoning", "id": item_id or "rs_" + secrets.token_hex(12), "summary": [
            {"type": "summary_text", "text": block["thinking"]}] if block.get("thinking") else [],
            "encrypted_content": encrypted or None}
    if kind == "tool_use":
        qualified = names.get(block["name"], block["name"])
        namespace, _, name = qualified.rpartition(".")
        where = {"namespace": namespace} if namespace else {}
        if kinds.get(qualified) == "tool_search":
            return {"type": "tool_search_call", "id": "ts_" + secrets.token_hex(12), "call_id": block["id"],
                    "arguments": block["input"], "execution": "client", "status": "completed"}
        if kinds.get(qualified) == "custom":
            value = block["input"].get("input") if isinstance(block["input"], dict) else None
            return {"type": "custom_tool_call", "id": "ctc_" + secrets.token_hex(12), "call_id": block["id"],
                    "name": name, **where, "input": value if isinstance(value, str) else json_dumps(block["input"])}
        return {"type": "function_call", "id": "fc_" + secrets.token_hex(12), "call_id": block["id"], "name": name,
                **where, "arguments": json_dumps(block["input"]), "status": "completed"}
    if kind == "server_tool_use" and block.get("name") == "web_search":  # the search the proxy ran
        query = block["input"].get("query") if isinstance(block.get("input"), dict) else None
        return {"type": "web_search_call", "id": "ws_" + secrets.token_hex(12), "status": "completed",
                "action": {"type": "search", "query": query if isinstance(query, str) else ""}}
    return None


def responses_usage_of(usage: dict) -> dict:
    cached = usage.get("cache_read_input_tokens") or 0
    total_in = usage.get("input_tokens", 0) + cached + (usage.get("cache_creation_input_tokens") or 0)
    return {"input_tokens": total_in, "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": usage.get("output_tokens", 0), "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": total_in + usage.get("output_tokens", 0)}


def responses_envelope(body: dict, response_id: str, status: str, output: list[dict], usage: dict | None,
                       created: int) -> dict:
    """A Response object around ``output``: the fields the SDK's type requires, echoing the request."""
    return {"id": response_id, "object": "response", "created_at": created, "status": status, "model": body["model"],
            "output": output, "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools", []),
            "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
            "temperature": body.get("temperature"), "top_p": body.get("top_p"), "store": False, "metadata": {},
            "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
            "text": body.get("text") or {"format": {"type": "text"}}, "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "usage": usage}


def anthropic_to_responses_response(msg: Any, body: dict, names: dict[str, str], kinds: dict[str, str]) -> dict:
    """Translate an Anthropic Message into the Response a Responses client (``body``: its request) expects."""
    if not isinstance(msg, dict) or not isinstance(msg.get("content"), list):
        raise malformed(f"the answer has no content list: {describe_value(msg)}")
    output = [item for block in msg["content"] if isinstance(block, dict)
              for item in [responses_output_item(block, names, kinds)] if item]
    status = "incomplete" if msg.get("stop_reason") == "max_tokens" else "completed"
    return responses_envelope(body, "resp_" + str(msg.get("id", "")).removeprefix("msg_"), status, output,
                              responses_usage_of(msg.get("usage") or {}), int(time.time()))

# ======================================================================================================
# 4. Stream translators
# ======================================================================================================
Event = tuple[str, dict]


class StreamTranslator(Protocol):
    """What the one stream pump (``pump_stream``, section 7) needs of a translator: ``start()`` once,
    ``receive(item)`` for each thing read from the backend (an SSE event; raw bytes for pass-through), ``end()``
    when the backend closes the stream, or ``fail(error)``. Each returns what to send, which ``encode()`` turns
    into bytes. ``done`` says the answer is over; ``failed`` holds the error it ended with."""
    client_dialect: str
    at_boundary: bool  # whether what was received so far ends at an SSE frame boundary (pings go only there)

    @property
    def done(self) -> bool: ...
    @property
    def failed(self) -> ProxyError | None: ...

    def start(self) -> list[Any]: ...
    def receive(self, item: Any) -> list[Any]: ...
    def end(self) -> list[Any]: ...
    def fail(self, error: ProxyError) -> list[Any]: ...
    def encode(self, items: list[Any]) -> bytes: ...
    def usage_counts(self) -> tuple[int | None, int | None]: ...


def stream_json(data: str, what: str = "a stream event", objects: bool = False) -> Any:
    """An SSE event's data as JSON (an object, with ``objects``); anything else is a malformed answer."""
    try:
        parsed = json_loads(data)
    except ValueError:
        raise malformed(f"{what} is not JSON: {data[:200]!r}") from None
    if objects and not isinstance(parsed, dict):
        raise malformed(f"{what} is {describe_value(parsed)}, not an object")
    return parsed


class ThinkTagSplitter:
    """Separates reasoning inlined as ``<think>…</think>`` at the start of an answer (DeepSeek-R1 and QwQ on
    Ollama, llama.cpp) from the answer itself. ``feed(text)`` returns ("thinking" | "text", piece) pairs; a tag
    split across chunks is held back until it can be recognised."""
    OPEN, CLOSE = "<think>", "</think>"

    def __init__(self) -> None:
        self.state = "maybe"  # "maybe" (nothing said yet), "in" (inside <think>), "after" (just closed), "off"
        self.held = ""

    def feed(self, text: str) -> list[tuple[str, str]]:
        if self.state == "after":  # the blank line after </think> is not part of the answer
            text = text.lstrip()
            if not text:
                return []
            self.state = "off"
        if self.state == "maybe":
            self.held += text
            head = self.held.lstrip()
            if head.startswith(self.OPEN):
                self.state, text, self.held = "in", head[len(self.OPEN):], ""
            elif self.OPEN.startswith(head):
                return []  # whitespace or a partial tag so far
            else:
                self.state, text, self.held = "off", self.held, ""
        if self.state == "in":
            return self._inside(self.held + text)
        return [("text", text)] if text else []

    def _inside(self, text: str) -> list[tuple[str, str]]:
        end = text.find(self.CLOSE)
        if end < 0:
            keep = max(0, len(text) - (len(self.CLOSE) - 1))
            self.held = text[keep:]
            return [("thinking", text[:keep])] if keep else []
        self.state, self.held = "after", ""
        out = [("thinking", text[:end])] if end else []
        rest = text[end + len(self.CLOSE):].lstrip()
        if rest:
            self.state = "off"
            out.append(("text", rest))
        return out

    def flush(self) -> list[tuple[str, str]]:
        """What is held back, as what it turned out to be: the content ended."""
        held, self.held = self.held, ""
        return [("thinking" if self.state == "in" else "text", held)] if held else []

    def interrupt(self) -> list[tuple[str, str]]:
        """Something other than content (a tool call) comes next: an answer that has not opened ``<think>`` by
        now never will, and what it held back comes first."""
        if self.state == "in":
            return []
        self.state = "off"
        return self.flush()


class ToolCallAssembler:
    """Collects streamed tool-call fragments into whole calls.

    A call is keyed by its ``index``, or by its ``id`` when a backend omits the index (Gemini may also reuse
    index 0 for each parallel call, telling them apart only by id); a fragment with neither continues the last
    call unless it names a new one. Calls come out whole, in order, when the answer ends. By then their
    arguments can be checked, and a truncated or broken object closed, before a client's SDK sees them: the
    official SDKs parse tool arguments as partial JSON while they stream, and fail on anything that is not.
    """

    def __init__(self) -> None:
        self.calls: dict[Any, dict] = {}  # key → {"id", "backend_id", "name", "args": [fragments]}
        self.at_index: dict[int, Any] = {}  # index → key of the latest call under it
        self.last: Any = None

    def feed(self, fragment: dict) -> None:
        call_id, name, args = tool_call_fields(fragment)
        key = self.last = self._key(fragment, call_id, name)
        call = self.calls.get(key)
        if call is None:
            call = self.calls[key] = {"id": tool_id_with_signature(sanitize_tool_id(call_id), fragment),
                                      "backend_id": call_id, "name": None, "args": []}
        call["name"] = call["name"] or name  # some backends send the id first and the name later
        if args:
            self._add_arguments(call, args)

    @staticmethod
    def _add_arguments(call: dict, args: str) -> None:
        """Some servers repeat the whole argument string so far in every chunk instead of sending the next piece:
        told by the second piece starting with the first, and then each piece replaces the last."""
        parts = call["args"]
        if len(parts) == 1 and call.get("cumulative") is None:
            call["cumulative"] = len(parts[0]) >= 2 and len(args) > len(parts[0]) and args.startswith(parts[0])
        if call.get("cumulative") and args.startswith(parts[-1]):
            parts[-1] = args
        else:
            parts.append(args)

    def complete(self) -> list[dict]:
        """Every call as ``{"id", "name", "arguments"}`` (a JSON object's text), in order; then none are left."""
        calls = [{"id": c["id"], "name": c["name"] or "unknown_tool",
                  "arguments": json_dumps(_parse_tool_arguments("".join(c["args"])))} for c in self.calls.values()]
        self.calls.clear()
        self.at_index.clear()
        return calls

    def _key(self, fragment: dict, call_id: str | None, name: str | None) -> Any:
        idx = fragment.get("index")
        if isinstance(idx, int) and not isinstance(idx, bool):
            key = self.at_index.setdefault(idx, ("i", idx))
            existing = self.calls.get(key)
            if existing is not None and call_id and existing["backend_id"] and call_id != existing["backend_id"]:
                key = self.at_index[idx] = ("id", call_id)  # a new id under a used index is a new call
            return key
        if call_id:
            return ("id", call_id)
        if name or self.last is None:
            return ("n", len(self.calls))  # no index, no id: a name starts a new call
        return self.last


class AnthropicStreamWriter:
    """What the translators into an Anthropic stream share: the message's start and end, and content blocks
    opened one at a time and indexed 0,1,2…, text and thinking as they come, tool calls whole."""
    client_dialect = "anthropic"
    at_boundary = True

    def __init__(self, model: str, input_tokens: int, tool_names: dict[str, str] | None, message_id: str | None):
        self.model = model
        self.input_estimate = input_tokens
        self.tool_names = tool_names or {}
        self.message_id = message_id or new_message_id()
        self.index = -1
        self.open: str | None = None  # "thinking" | "text"
        self.said: list[str] = []  # text, thinking and tool calls: the output estimate when the backend has no usage
        self.saw_tool = False
        self.done = False
        self.failed: ProxyError | None = None
        self.final_usage: dict | None = None

    def start(self) -> list[Event]:
        return message_start_events(self.message_id, self.model, self.input_estimate)

    @staticmethod
    def encode(events: list[Event]) -> bytes:
        return sse_frames(events)

    def usage_counts(self) -> tuple[int | None, int | None]:
        usage = self.final_usage or {}
        return usage.get("input_tokens"), usage.get("output_tokens")

    def fail(self, error: ProxyError) -> list[Event]:
        """End the stream with an error event: a client must never mistake a broken answer for a whole one."""
        if self.done:
            return []
        self.done = True
        self.failed = error
        return [("error", error.anthropic_body())]

    def _end(self, stop: str, stop_sequence: str | None, usage: dict | None) -> list[Event]:
        """The message's last events, with the backend's usage or, without one, the estimate."""
        events = self._close()
        self.done = True
        usage = usage or {"input_tokens": self.input_estimate, "output_tokens": estimate_output_tokens(self.said)}
        self.final_usage = usage
        delta_usage = {"output_tokens": usage["output_tokens"], "input_tokens": usage["input_tokens"]}
        if usage.get("cache_read_input_tokens"):
            delta_usage["cache_read_input_tokens"] = usage["cache_read_input_tokens"]
        return events + [("message_delta", {"type": "message_delta", "delta": {
            "stop_reason": stop, "stop_sequence": stop_sequence if stop == "stop_sequence" else None},
            "usage": delta_usage}), ("message_stop", {"type": "message_stop"})]

    def _pieces(self, pieces: list[tuple[str, str]]) -> list[Event]:
        events: list[Event] = []
        for kind, text in pieces:
            if text:
                self.said.append(text)
                events += self._open(kind)
                events.append(self._delta({"type": "thinking_delta", "thinking": text} if kind == "thinking" else
                                          {"type": "text_delta", "text": text}))
        return events

    def _delta(self, delta: dict) -> Event:
        return ("content_block_delta", {"type": "content_block_delta", "index": self.index, "delta": delta})

    def _close(self) -> list[Event]:
        if self.open is None:
            return []
        self.open = None
        return [("content_block_stop", {"type": "content_block_stop", "index": self.index})]

    def _open(self, kind: str) -> list[Event]:
        if self.open == kind:
            return []
        events = self._close()
        self.index += 1
        self.open = kind
        block = {"type": "thinking", "thinking": "", "signature": ""} if kind == "thinking" else {
            "type": "text", "text": ""}
        events.append(("content_block_start", {"type": "content_block_start", "index": self.index,
                                               "content_block": block}))
        return events

    def _tool_block(self, call_id: str, name: str, arguments: str) -> list[Event]:
        """A tool call as one whole block: start, its arguments (a JSON object's text) in one delta, stop."""
        self.saw_tool = True
        self.said.append(name + arguments)
        events = self._close()
        self.index += 1
        return events + [("content_block_start", {"type": "content_block_start", "index": self.index,
                                                  "content_block": {"type": "tool_use", "id": call_id,
                                                                    "name": self.tool_names.get(name, name),
                                                                    "input": {}}}),
                         self._delta({"type": "input_json_delta", "partial_json": arguments}),
                         ("content_block_stop", {"type": "content_block_stop", "index": self.index})]


class OpenAIToAnthropicStream(AnthropicStreamWriter):
    """Turns OpenAI ``chat.completion.chunk`` dicts into Anthropic stream events.

    ``start()`` once, ``feed(chunk)`` per chunk, then exactly one of ``finish(saw_done)`` or ``fail(error)``.
    Text, thinking (``reasoning_content`` or inline ``<think>``) and tool calls each come out as separate,
    well-formed blocks.
    """

    def __init__(self, model: str, input_tokens: int = 0, tool_names: dict[str, str] | None = None,
                 stop_sequences: list[str] | None = None, message_id: str | None = None,
                 offered_tools: dict[str, Any] | None = None):
        super().__init__(model, input_tokens, tool_names, message_id)
        self.stop_sequences = stop_sequences
        self.think = ThinkTagSplitter()
        self.text_calls = TextToolCalls(offered_tools) if offered_tools else None
        self.tools = ToolCallAssembler()
        self.finish_reason: str | None = None
        self.matched_stop: str | None = None
        self.usage: dict | None = None
        self.refused = False

    # -- the pump's interface ---------------------------------------------------------------------
    def receive(self, event: SSEEvent) -> list[Event]:
        data = event.data.strip()
        if data == "[DONE]":
            return self.finish(saw_done=True)
        if not data or event.event in ("ping", "keep-alive"):
            return []
        return self.feed(stream_json(data, "a stream chunk"))

    def end(self) -> list[Event]:
        return self.finish(saw_done=False)

    # -- lifecycle --------------------------------------------------------------------------------
    def feed(self, chunk: Any) -> list[Event]:
        choice = first_choice(chunk)
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        if choice is None:
            return []
        if isinstance(choice.get("usage"), dict):  # Moonshot puts usage inside the choice
            self.usage = choice["usage"]
        delta = choice.get("delta")
        if delta is not None and not isinstance(delta, dict):
            raise malformed(f"choices[0].delta is {describe_value(delta)}, not an object")
        events = self._delta_events(delta or {})
        finish = choice.get("finish_reason")
        if finish:
            self.finish_reason = finish if isinstance(finish, str) else "stop"
            self.matched_stop = _matched_stop(choice, self.stop_sequences) or self.matched_stop
            events += self._pieces(self._calls_taken(self.think.flush(), end=True)) + self._tool_blocks() + \
                self._close()
        return events

    def finish(self, saw_done: bool = True) -> list[Event]:
        """The backend ended the stream. Without ``[DONE]`` *and* without a finish_reason it was cut off."""
        if self.done:
            return []
        if not saw_done and self.finish_reason is None:
            return self.fail(ProxyError(502, "the backend closed the stream before finishing the answer "
                                             "(no finish_reason, no [DONE])", "api_error"))
        events = self._pieces(self._calls_taken(self.think.flush(), end=True)) + self._tool_blocks()
        stop = _stop_reason(self.finish_reason, self.saw_tool, self.matched_stop)
        if self.refused and not self.saw_tool:
            stop = "refusal"
        return events + self._end(stop, self.matched_stop, anthropic_usage(self.usage))

    # -- what a delta holds -----------------------------------------------------------------------
    def _delta_events(self, delta: dict) -> list[Event]:
        events: list[Event] = []
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            events += self._pieces([("thinking", reasoning)])
        text = _content_text(delta.get("content"), "choices[0].delta")
        refusal = delta.get("refusal")
        if isinstance(refusal, str) and refusal:
            text += refusal
            self.refused = True
        if text:
            events += self._pieces(self._calls_taken(self.think.feed(text)))
        calls = delta.get("tool_calls")
        if calls is not None and not isinstance(calls, list):
            raise malformed(f"choices[0].delta.tool_calls is {describe_value(calls)}, not a list")
        if isinstance(delta.get("function_call"), dict):  # the legacy single function call
            calls = [{"index": 0, "function": delta["function_call"]}]
        for call in calls or []:
            if not isinstance(call, dict):
                raise malformed(f"a tool call fragment is {describe_value(call)}, not an object")
            events += self._pieces(self._calls_taken(self.think.interrupt(), end=True))  # text held back comes first
            self.tools.feed(call)
        return events

    def _calls_taken(self, pieces: list[tuple[str, str]], end: bool = False) -> list[tuple[str, str]]:
        """The pieces with tool calls written as text taken out, to come out with the others; ``end``: the
        answer's text is over."""
        if self.text_calls is None:
            return pieces
        found: list[tuple[str, Any]] = []
        for kind, piece in pieces:
            found += self.text_calls.feed(piece) if kind == "text" else [(kind, piece)]
        if end:
            found += self.text_calls.flush()
        for what, value in found:
            if what == "call":
                self.tools.feed(value)
        return [(what, value) for what, value in found if what != "call"]

    def _tool_blocks(self) -> list[Event]:
        """The tool calls, each a whole block."""
        return [e for call in self.tools.complete() for e in self._tool_block(call["id"], call["name"],
                                                                               call["arguments"])]


def message_start_events(message_id: str, model: str, input_tokens: int) -> list[Event]:
    message: dict[str, Any] = {"id": message_id, "type": "message", "role": "assistant", "model": model,
                               "content": [], "stop_reason": None, "stop_sequence": None,
                               "usage": {"input_tokens": input_tokens, "output_tokens": 1,
                                         "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}
    return [("message_start", {"type": "message_start", "message": message}), ("ping", {"type": "ping"})]


def block_events(index: int, block: dict) -> list[Event]:
    """One whole content block as Anthropic streams it: start, its content in one delta, stop. Result blocks of
    server tools come whole in their start, as the API sends them."""
    kind = block["type"]
    start: dict[str, Any]
    delta: dict[str, Any] | None
    if kind == "text":
        start, delta = {"type": "text", "text": ""}, {"type": "text_delta", "text": block["text"]}
    elif kind == "thinking":
        start, delta = {"type": "thinking", "thinking": "", "signature": ""}, {
            "type": "thinking_delta", "thinking": block["thinking"]}
    elif kind in ("tool_use", "server_tool_use"):
        start, delta = {**block, "input": {}}, {"type": "input_json_delta", "partial_json": json_dumps(block["input"])}
    else:
        start, delta = block, None
    events: list[Event] = [("content_block_start", {"type": "content_block_start", "index": index,
                                                    "content_block": start})]
    if delta is not None:
        events.append(("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))
    return events + [("content_block_stop", {"type": "content_block_stop", "index": index})]


class ComposedStream(AnthropicStreamWriter):
    """An answer the proxy composes from several whole backend answers (it ran server tools between them), as
    an Anthropic stream: ``receive(message)`` per answer (see ``server_tool_rounds``) sends its blocks at once;
    the answer whose ``stop_reason`` is set ends the message, with the usage of them all."""

    def __init__(self, model: str, input_tokens: int, message_id: str):
        super().__init__(model, input_tokens, None, message_id)
        self.usage = {"input_tokens": 0, "output_tokens": 0}
        self.searches = 0

    def receive(self, message: dict) -> list[Event]:
        events: list[Event] = []
        for block in message["content"]:
            self.index += 1
            events += block_events(self.index, block)
        for k in self.usage:
            self.usage[k] += message["usage"].get(k, 0)
        self.searches += server_tool_usage(message["content"])["web_search_requests"]
        if message["stop_reason"] is None:
            return events
        self.done = True
        self.final_usage = dict(self.usage)
        usage = {**self.usage, "server_tool_use": {"web_search_requests": self.searches, "web_fetch_requests": 0}}
        return events + [("message_delta", {"type": "message_delta", "delta": {
            "stop_reason": message["stop_reason"], "stop_sequence": message.get("stop_sequence")}, "usage": usage}),
            ("message_stop", {"type": "message_stop"})]

    def end(self) -> list[Event]:
        return [] if self.done else self.fail(ProxyError(502, "the answer ended before it was complete", "api_error"))


class ResponsesToAnthropicStream(AnthropicStreamWriter):
    """Turns an OpenAI Responses event stream into Anthropic stream events: reasoning summaries → thinking (the
    block's signature carries the item, taken from ``response.output_item.done``: the copy in ``.added`` may be
    incomplete), output text → text, function calls → whole tool_use blocks; ``response.completed`` or
    ``response.incomplete`` ends the message, ``response.failed`` and ``error`` fail it."""

    def __init__(self, model: str, input_tokens: int = 0, tool_names: dict[str, str] | None = None,
                 message_id: str | None = None):
        super().__init__(model, input_tokens, tool_names, message_id)

    def receive(self, event: SSEEvent) -> list[Event]:
        data = event.data.strip()
        if not data or data == "[DONE]":
            return []
        return self.feed(stream_json(data, objects=True))

    def end(self) -> list[Event]:
        return self.fail(ProxyError(502, "the backend closed the stream before the response was complete "
                                         "(no response.completed)", "api_error"))

    def feed(self, event: dict) -> list[Event]:
        kind = event.get("type")
        if kind == "response.reasoning_summary_text.delta":
            return self._pieces([("thinking", _text_field(event, "delta"))])
        if kind in ("response.output_text.delta", "response.refusal.delta"):
            return self._pieces([("text", _text_field(event, "delta"))])
        if kind == "response.reasoning_summary_part.added" and event.get("summary_index"):
            return self._pieces([("thinking", SUMMARY_PARTS_JOINED)])
        if kind == "response.output_item.done":
            return self._item_done(event.get("item"))
        if kind in ("response.completed", "response.incomplete"):
            return self._completed(event.get("response"))
        if kind == "response.failed":
            response = event.get("response")
            raise responses_failure(response if isinstance(response, dict) else {})
        if kind == "error":
            raise responses_failure(event)
        return []

    def _item_done(self, item: Any) -> list[Event]:
        if not isinstance(item, dict):
            raise malformed(f"response.output_item.done carries {describe_value(item)}, not an item")
        if item.get("type") == "reasoning":
            signature = reasoning_signature(item)
            if not signature:
                return self._close()
            events = self._open("thinking")  # a reasoning item with no summary still carries its signature
            return events + [self._delta({"type": "signature_delta", "signature": signature})] + self._close()
        if item.get("type") == "function_call":
            block = responses_item_block(item, {})
            assert block is not None
            return self._tool_block(block["id"], block["name"], json_dumps(block["input"]))
        return []

    def _completed(self, response: Any) -> list[Event]:
        if not isinstance(response, dict):
            raise malformed(f"the response's last event carries {describe_value(response)}, not a response")
        reason = (response.get("incomplete_details") or {}).get("reason")
        stop = "max_tokens" if reason == "max_output_tokens" else "refusal" if reason == "content_filter" else \
            "tool_use" if self.saw_tool else "end_turn"
        return self._end(stop, None, anthropic_usage(responses_usage(response.get("usage"))))


def _text_field(event: dict, key: str) -> str:
    value = event.get(key)
    if not isinstance(value, str):
        raise malformed(f"{event.get('type')}.{key} is {describe_value(value)}, not a string")
    return value


class Chained:
    """Two stream translators through the hub: ``first`` turns the backend's events into Anthropic events, which
    ``second`` turns into the client's dialect (a Chat Completions client of a Responses backend, say)."""
    at_boundary = True

    def __init__(self, first: Any, second: Any):
        self.first, self.second = first, second
        self.client_dialect = second.client_dialect

    @property
    def done(self) -> bool:
        return bool(self.second.done)

    @property
    def failed(self) -> ProxyError | None:
        return self.second.failed or self.first.failed

    def _through(self, events: list[Event]) -> list[Any]:
        out: list[Any] = []
        for name, data in events:
            if name == "error" and self.first.failed is not None:
                return out + self.second.fail(self.first.failed)
            out += self.second.feed(name, data) if name != "ping" else []
        return out

    def start(self) -> list[Any]:
        return self.second.start() + self._through(self.first.start())

    def receive(self, item: Any) -> list[Any]:
        return self._through(self.first.receive(item))

    def end(self) -> list[Any]:
        return self._through(self.first.end()) + ([] if self.second.done else self.second.end())

    def fail(self, error: ProxyError) -> list[Any]:
        self.first.fail(error)
        return self.second.fail(error)

    def encode(self, items: list[Any]) -> bytes:
        return self.second.encode(items)

    def usage_counts(self) -> tuple[int | None, int | None]:
        return self.first.usage_counts()


class AnthropicToResponsesStream:
    """Turns Anthropic stream events into an OpenAI Responses event stream, for a Responses client (``body``: its
    request): ``response.created`` and ``.in_progress``, each content block as an output item (added, its
    deltas, done), then ``response.completed`` (``.incomplete`` at max_tokens), or ``response.failed``. Events
    are numbered by ``sequence_number``. ``receive`` reads an Anthropic backend's SSE; ``feed`` takes events
    from another translator (see ``Chained``)."""
    client_dialect = "responses"
    at_boundary = True

    def __init__(self, body: dict, names: dict[str, str] | None = None, kinds: dict[str, str] | None = None):
        self.body, self.names, self.kinds = body, names or {}, kinds or {}
        self.response_id = "resp_" + secrets.token_hex(12)
        self.created = int(time.time())
        self.sequence = 0
        self.items: dict[int, dict] = {}  # Anthropic block index → the output item it is (None: left out)
        self.output: list[dict] = []
        self.stop: str | None = None
        self.usage: dict = {}
        self.done = False
        self.failed: ProxyError | None = None

    def _event(self, kind: str, **fields: Any) -> Event:
        event = (kind, {"type": kind, "sequence_number": self.sequence, **fields})
        self.sequence += 1
        return event

    def _response(self, status: str) -> dict:
        usage = responses_usage_of(self.usage) if self.usage else None
        return responses_envelope(self.body, self.response_id, status, [_public(i) for i in self.output], usage,
                                  self.created)

    def start(self) -> list[Event]:
        return [self._event("response.created", response=self._response("in_progress")),
                self._event("response.in_progress", response=self._response("in_progress"))]

    def receive(self, event: SSEEvent) -> list[Event]:
        data = event.data.strip()
        if not data or event.event == "ping":
            return []
        parsed = stream_json(data, objects=True)
        return self.feed(event.event or str(parsed.get("type")), parsed)

    def feed(self, name: str, data: dict) -> list[Event]:
        if name == "content_block_start":
            return self._added(data["index"], data["content_block"])
        if name == "content_block_delta":
            return self._delta(self.items.get(data["index"]), data["delta"])
        if name == "content_block_stop":
            return self._item_done(self.items.get(data["index"]))
        if name == "message_start":
            self.usage = dict((data.get("message") or {}).get("usage") or {})
        elif name == "message_delta":
            self.stop = (data.get("delta") or {}).get("stop_reason") or self.stop
            self.usage.update({k: v for k, v in (data.get("usage") or {}).items() if isinstance(v, int)})
        elif name == "message_stop":
            self.done = True
            status = "incomplete" if self.stop == "max_tokens" else "completed"
            return [self._event(f"response.{status}", response=self._response(status))]
        elif name == "error":
            error = (data.get("error") or {}) if isinstance(data.get("error"), dict) else {}
            return self.fail(ProxyError(502, str(error.get("message") or "the backend failed"),
                                        str(error.get("type") or "api_error")))
        return []

    def _added(self, index: int, block: dict) -> list[Event]:
        item = responses_output_item({**block, "text": "", "thinking": "", "input": {}}, self.names, self.kinds)
        if item is None:
            return []
        item = {**item, "status": "in_progress", "_index": len(self.output), "_text": ""}
        if item["type"] == "function_call":
            item["arguments"] = ""
        elif item["type"] == "custom_tool_call":
            item["input"] = ""
        self.items[index] = item
        self.output.append(item)
        events = [self._event("response.output_item.added", output_index=item["_index"], item=_public(item))]
        if item["type"] == "message":
            events.append(self._event("response.content_part.added", item_id=item["id"], output_index=item["_index"],
                                      content_index=0, part={"type": "output_text", "text": "", "annotations": []}))
        elif item["type"] == "reasoning":
            events.append(self._event("response.reasoning_summary_part.added", item_id=item["id"],
                                      output_index=item["_index"], summary_index=0,
                                      part={"type": "summary_text", "text": ""}))
        elif item["type"] == "web_search_call":
            events.append(self._event("response.web_search_call.in_progress", item_id=item["id"],
                                      output_index=item["_index"]))
        return events

    def _delta(self, item: dict | None, delta: dict) -> list[Event]:
        if item is None:
            return []
        kind, where = delta.get("type"), {"item_id": item["id"], "output_index": item["_index"]}
        if kind == "signature_delta":
            item["_signature"] = item.get("_signature", "") + str(delta.get("signature") or "")
            return []
        piece = str(delta.get("text") or delta.get("thinking") or delta.get("partial_json") or "")
        item["_text"] += piece
        if kind == "text_delta":
            return [self._event("response.output_text.delta", **where, content_index=0, delta=piece, logprobs=[])]
        if kind == "thinking_delta":
            return [self._event("response.reasoning_summary_text.delta", **where, summary_index=0, delta=piece)]
        if kind == "input_json_delta" and item["type"] == "function_call":
            return [self._event("response.function_call_arguments.delta", **where, delta=piece)]
        return []  # a custom tool's input is sent whole when its block ends

    def _item_done(self, item: dict | None) -> list[Event]:
        if item is None:
            return []
        text, where = item["_text"], {"item_id": item["id"], "output_index": item["_index"]}
        events: list[Event] = []
        if item["type"] == "message":
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            item["content"] = [part]
            events += [self._event("response.output_text.done", **where, content_index=0, text=text, logprobs=[]),
                       self._event("response.content_part.done", **where, content_index=0, part=part)]
        elif item["type"] == "reasoning":
            done = responses_output_item({"type": "thinking", "thinking": text,
                                          "signature": item.get("_signature", "")}, {}, {})
            assert done is not None
            item.update({k: v for k, v in done.items() if k != "id"})
            part = {"type": "summary_text", "text": text}
            events += [self._event("response.reasoning_summary_text.done", **where, summary_index=0, text=text),
                       self._event("response.reasoning_summary_part.done", **where, summary_index=0, part=part)]
        elif item["type"] == "function_call":
            item["arguments"] = json_dumps(_parse_tool_arguments(text))
            events.append(self._event("response.function_call_arguments.done", **where,
                                      arguments=item["arguments"], name=item["name"]))
        elif item["type"] == "tool_search_call":
            item["arguments"] = _parse_tool_arguments(text)
        elif item["type"] == "web_search_call":
            query = _parse_tool_arguments(text).get("query")
            item["action"] = {"type": "search", "query": query if isinstance(query, str) else ""}
            events.append(self._event("response.web_search_call.completed", **where))
        else:  # custom_tool_call: the input is the "input" string of the arguments
            value = _parse_tool_arguments(text).get("input")
            item["input"] = value if isinstance(value, str) else text
            events += [self._event("response.custom_tool_call_input.delta", **where, delta=item["input"]),
                       self._event("response.custom_tool_call_input.done", **where, input=item["input"])]
        item["status"] = "completed"
        self.output[item["_index"]] = _public(item)
        return events + [self._event("response.output_item.done", output_index=item["_index"],
                                     item=self.output[item["_index"]])]

    def end(self) -> list[Event]:
        if self.done:
            return []
        return self.fail(ProxyError(502, "the backend closed the stream before finishing the answer", "api_error"))

    def fail(self, error: ProxyError) -> list[Event]:
        if self.done:
            return []
        self.done, self.failed = True, error
        failed = self._response("failed")
        failed["error"] = {"code": error.kind, "message": error.message}
        return [self._event("response.failed", response=failed)]

    @staticmethod
    def encode(events: list[Event]) -> bytes:
        return sse_frames(events)

    def usage_counts(self) -> tuple[int | None, int | None]:
        return self.usage.get("input_tokens"), self.usage.get("output_tokens")


def _public(item: dict) -> dict:
    """An output item without the translator's own bookkeeping (the keys that start with ``_``)."""
    out = {k: v for k, v in item.items() if not k.startswith("_")}
    if out.get("type") == "message" and out.get("status") == "in_progress":
        out["content"] = []
    return out


def completion_as_chunk(resp: Any) -> dict:
    """A whole ``chat.completion`` as the one stream chunk that says the same, for a backend that ignored
    ``stream: true`` and answered in one piece."""
    choice = first_choice(resp)
    if choice is None:
        raise malformed("the answer has no choices")
    message = choice.get("message", {})
    if not isinstance(message, dict):
        raise malformed(f"choices[0].message is {describe_value(message)}, not an object")
    delta = dict(message)
    if isinstance(message.get("tool_calls"), list):
        delta["tool_calls"] = [{**c, "index": i} if isinstance(c, dict) else c
                               for i, c in enumerate(message["tool_calls"])]
    return {"choices": [{**choice, "delta": delta, "finish_reason": choice.get("finish_reason") or "stop"}],
            "usage": resp.get("usage")}


class AnthropicToOpenAIStream:
    """Turns Anthropic stream events into OpenAI ``chat.completion.chunk`` dicts.

    ``feed(event_name, data)`` per event, then ``finish()`` when the upstream ends, or ``fail(error)``. Each call
    returns the chunks to send; the literal ``"[DONE]"`` marks the end. One stable id; the role only in the first
    delta; tool calls numbered by their own counter; ``id``/``name`` only in a call's first fragment.
    """
    client_dialect = "openai"
    at_boundary = True

    def __init__(self, model: str, include_usage: bool = False, tool_names: dict[str, str] | None = None,
                 json_tool: bool = False):
        self.model = model
        self.include_usage = include_usage
        self.tool_names = tool_names or {}
        self.json_tool = json_tool
        self.id = "chatcmpl-" + secrets.token_hex(12)
        self.created = int(time.time())
        self.started = False
        self.block_kind: dict[int, str] = {}  # Anthropic block index → "text" | "thinking" | "tool" | "json"
        self.tool_index: dict[int, int] = {}  # Anthropic block index → OpenAI tool_calls index
        self.stop_reason: str | None = None
        self.usage: dict[str, int] = {}
        self.done = False
        self.failed: ProxyError | None = None

    # -- the pump's interface ---------------------------------------------------------------------
    def receive(self, event: SSEEvent) -> list[Any]:
        if event.event == "ping":
            return [PING]  # Anthropic's ping becomes an SSE comment
        data = event.data.strip()
        if not data:
            return []
        return self.feed(event.event, stream_json(data))

    def end(self) -> list[Any]:
        return self.finish()

    @staticmethod
    def encode(chunks: list[Any]) -> bytes:
        return openai_frames(chunks)

    def usage_counts(self) -> tuple[int | None, int | None]:
        usage = openai_usage(self.usage)
        return usage["prompt_tokens"], usage["completion_tokens"]

    def start(self) -> list[Any]:
        return []  # the first chunk carries the role, and goes out with the first event

    # -- events -----------------------------------------------------------------------------------
    def feed(self, event: str | None, data: Any) -> list[Any]:
        if not isinstance(data, dict):
            raise malformed(f"a stream event is {describe_value(data)}, not an object")
        kind = data.get("type") or event
        if kind == "error":
            err = data["error"] if isinstance(data.get("error"), dict) else {}
            error_type = err["type"] if isinstance(err.get("type"), str) else "api_error"
            raise ProxyError(529 if error_type == "overloaded_error" else 502,
                             str(err.get("message") or "the backend reported an error mid-stream"), error_type)
        if kind == "message_start":
            message = data.get("message")
            self._add_usage(message.get("usage") if isinstance(message, dict) else None)
            return self._start()
        out = self._start()
        if kind == "message_stop":
            return out + self.finish()
        handler = {"content_block_start": self._block_start, "content_block_delta": self._block_delta,
                   "message_delta": self._message_delta}.get(kind) if isinstance(kind, str) else None
        return out + handler(data) if handler else out

    def _block_start(self, data: dict) -> list[Any]:
        idx, block = self._index(data), data.get("content_block")
        if not isinstance(block, dict):
            raise malformed(f"content_block is {describe_value(block)}, not an object")
        btype = block.get("type")
        if btype != "tool_use":
            self.block_kind[idx] = btype if isinstance(btype, str) else "text"
            text = block.get("text") if btype == "text" else None
            return [self._chunk({"content": text})] if isinstance(text, str) and text else []
        name = block.get("name")
        if not isinstance(name, str) or not name:
            raise malformed(f"a tool_use block's name is {describe_value(name)}, not a string")
        if self.json_tool and name == JSON_TOOL:
            self.block_kind[idx] = "json"
            return []
        self.block_kind[idx] = "tool"
        n = self.tool_index[idx] = len(self.tool_index)
        call_id = block["id"] if isinstance(block.get("id"), str) and block["id"] else sanitize_tool_id(None, "call_")
        return [self._chunk({"tool_calls": [{"index": n, "id": call_id, "type": "function", "function": {
            "name": self.tool_names.get(name, name), "arguments": ""}}]})]

    def _block_delta(self, data: dict) -> list[Any]:
        idx, delta = self._index(data), data.get("delta")
        if not isinstance(delta, dict):
            raise malformed(f"a content_block_delta's delta is {describe_value(delta)}, not an object")
        field = {"text_delta": "text", "thinking_delta": "thinking", "input_json_delta": "partial_json"}.get(
            str(delta.get("type")))
        value = delta.get(field) if field else None
        if value is not None and not isinstance(value, str):
            raise malformed(f"delta.{field} is {describe_value(value)}, not a string")
        if not value:
            return []
        if field == "text" or field == "partial_json" and self.block_kind.get(idx) == "json":
            return [self._chunk({"content": value})]
        if field == "thinking":
            return [self._chunk({"reasoning_content": value})]
        if field == "partial_json" and idx in self.tool_index:
            return [self._chunk({"tool_calls": [{"index": self.tool_index[idx], "function": {"arguments": value}}]})]
        return []

    def _message_delta(self, data: dict) -> list[Any]:
        delta = data["delta"] if isinstance(data.get("delta"), dict) else {}
        if isinstance(delta.get("stop_reason"), str):
            self.stop_reason = delta["stop_reason"]
        self._add_usage(data.get("usage"))
        return []

    @staticmethod
    def _index(data: dict) -> int:
        idx = data.get("index")
        if not isinstance(idx, int) or isinstance(idx, bool):
            raise malformed(f"a content block index is {describe_value(idx)}, not an integer")
        return idx

    def _add_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self.usage.update({k: v for k, v in usage.items() if isinstance(v, int) and not isinstance(v, bool)})

    def _chunk(self, delta: dict | None, finish: str | None = None) -> dict:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": choices}

    def _start(self) -> list[Any]:
        if self.started:
            return []
        self.started = True
        return [self._chunk({"role": "assistant", "content": ""})]

    # -- endings ----------------------------------------------------------------------------------
    def finish(self) -> list[Any]:
        """The upstream stream ended. Without a stop_reason it was cut off: that is an error, not an ending."""
        if self.done:
            return []
        if self.stop_reason is None:
            return self.fail(ProxyError(502, "the backend closed the stream before finishing the answer",
                                        "api_error"))
        self.done = True
        out = self._start()
        finish = STOP_TO_FINISH.get(self.stop_reason, "stop")
        if self.tool_index:
            finish = "tool_calls"
        elif finish == "tool_calls":
            finish = "stop"  # the only tool was the JSON-answer tool
        out.append(self._chunk({}, finish))
        if self.include_usage:
            chunk = self._chunk(None)
            chunk["usage"] = openai_usage(self.usage)
            out.append(chunk)
        out.append("[DONE]")
        return out

    def fail(self, error: ProxyError) -> list[Any]:
        if self.done:
            return []
        self.done = True
        self.failed = error
        return [error.openai_body(), "[DONE]"]


# ======================================================================================================
# 5. SSE reading and writing
# ======================================================================================================

@dataclass
class SSEEvent:
    event: str | None
    data: str


class SSEParser:
    """Incremental Server-Sent Events parser, tolerant of what real backends send.

    Handles LF and CRLF line ends, ``data:`` with or without a space, comments (keep-alives), UTF-8 characters
    split across network reads, and data lines that arrive without the blank line between events.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._buf = ""
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        self._buf += self._decoder.decode(chunk)
        return self._lines(final=False)

    def close(self) -> list[SSEEvent]:
        """End of input: a last event without its blank line still counts."""
        self._buf += self._decoder.decode(b"", final=True)
        events = self._lines(final=True)
        if self._data:
            events.append(self._dispatch())
        return events

    def _lines(self, final: bool) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        buf = self._buf
        start = 0
        while True:
            nl = buf.find("\n", start)
            if nl < 0:
                break
            line = buf[start:nl]
            start = nl + 1
            line = line.removesuffix("\r")
            self._line(line, events)
        rest = buf[start:]
        if final and rest:
            self._line(rest.rstrip("\r"), events)
            rest = ""
        self._buf = rest
        return events

    def _line(self, line: str, events: list[SSEEvent]) -> None:
        if not line:
            if self._data:
                events.append(self._dispatch())
            else:
                self._event = None
            return
        if line[0] == ":":
            return
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            if self._data and _complete_json(self._data[-1]):
                events.append(self._dispatch())  # backend forgot the blank line between two events
            self._data.append(value)
        elif name == "event":
            if self._data:
                events.append(self._dispatch())
            self._event = value
        # id:, retry: and unknown fields are ignored, as the SSE spec says

    def _dispatch(self) -> SSEEvent:
        event = SSEEvent(self._event, "\n".join(self._data))
        self._event = None
        self._data = []
        return event


def _complete_json(text: str) -> bool:
    text = text.strip()
    if text == "[DONE]":
        return True
    if not text or text[0] not in "{[" or text[-1] not in "}]":
        return False
    try:
        json_loads(text)
        return True
    except ValueError:
        return False


def sse_frame(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json_dumps(data)}\n\n".encode()


def sse_frames(events: list[Event]) -> bytes:
    return b"".join(sse_frame(e, d) for e, d in events)


ANTHROPIC_PING = b'event: ping\ndata: {"type": "ping"}\n\n'
OPENAI_PING = b": ping\n\n"
PING = "PING"  # stands for an SSE comment among OpenAI chunks


def openai_frames(chunks: list[Any]) -> bytes:
    return b"".join(b"data: [DONE]\n\n" if c == "[DONE]" else OPENAI_PING if c == PING else
                    b"data: " + json_dumps(c).encode() + b"\n\n" for c in chunks)


class KeepAliveWriter:
    """Writes to a stream response, and a keep-alive frame whenever it has been silent for ``interval`` seconds,
    so proxies and load balancers between client and proxy do not cut a long-thinking answer.

    One sleeping task per stream (not one per chunk). Pings only go out at frame boundaries: pass-through
    relays raw bytes and says whether they ended one (``boundary``).
    """

    def __init__(self, out: web.StreamResponse, frame: bytes, interval: float):
        self.out = out
        self.frame = frame
        self.interval = interval
        self.loop = asyncio.get_running_loop()
        self.last = self.loop.time()
        self.at_boundary = True
        self.task: asyncio.Task | None = None

    def __enter__(self) -> Self:
        self.task = self.loop.create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self.task is not None:
            self.task.cancel()

    async def write(self, data: bytes, boundary: bool = True) -> None:
        self.last = self.loop.time()
        self.at_boundary = boundary
        await self.out.write(data)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(max(0.0, self.last + self.interval - self.loop.time()))
            if self.loop.time() - self.last >= self.interval and self.at_boundary:
                self.last = self.loop.time()
                try:
                    await self.out.write(self.frame)
                except (ConnectionError, RuntimeError):  # client gone; the handler is being cancelled
                    return


async def iter_sse(response: aiohttp.ClientResponse) -> AsyncIterator[list[SSEEvent]]:
    """The events of an SSE response, a list per network read: translating a whole read and writing it once
    costs one socket write where per-event writing cost fifty."""
    parser = SSEParser()
    async for chunk in response.content.iter_any():
        events = parser.feed(chunk)
        if events:
            yield events
    events = parser.close()
    if events:
        yield events


# ======================================================================================================
# 6. Upstream client
# ======================================================================================================

RETRY_STATUSES = {429, 500, 502, 503, 504, 529}
ANTHROPIC_VERSION = "2023-06-01"


class KeyPool:
    """A backend's keys, taken in turn. A key answered with 429 rests until its ``retry-after``; one answered
    with 401 or 403 is set aside until restart."""

    def __init__(self, keys: tuple[str, ...]):
        self.keys = keys
        self.turn = 0
        self.back_at: dict[str, float] = {}  # key → monotonic time it may be used again
        self.refused: set[str] = set()

    def take(self) -> str | None:
        """The next key that is neither resting nor refused; None when there is none."""
        now = time.monotonic()
        for i in range(len(self.keys)):
            key = self.keys[(self.turn + i) % len(self.keys)]
            if key not in self.refused and self.back_at.get(key, 0.0) <= now:
                self.turn = (self.turn + i + 1) % len(self.keys)
                return key
        return None

    def rest(self, key: str, seconds: float) -> None:
        self.back_at[key] = time.monotonic() + seconds

    def soonest(self) -> float | None:
        """Seconds until a resting key is back; None when every key is refused."""
        waits = [t - time.monotonic() for k, t in self.back_at.items() if k not in self.refused]
        return max(0.0, min(waits)) if waits else None


@dataclass
class Health:
    """A backend's recent failures: after ``cooldown_failures`` in a row it cools down for ``cooldown_seconds``."""
    failures: int = 0
    cooled_until: float = 0.0


class Upstream:
    """One shared aiohttp session to the backend: keep-alive, timeouts, retries before the first byte.

    Speaks every backend dialect: ``post_chat`` (OpenAI ``/chat/completions``, or ``/responses`` for a
    Responses backend) and ``post_anthropic`` (Anthropic ``/v1/messages``, ``/v1/messages/count_tokens``). Both
    go through ``_post``.
    """

    def __init__(self, config: Config):
        self.config = config
        self.session: aiohttp.ClientSession | None = None
        self.lessons: dict[str, Lessons] = {}  # "backend/model" → what its refusals taught
        self.pools: dict[tuple[str, tuple[str, ...]], KeyPool] = {}  # by backend and keys: a reload keeps them
        self.tls: dict[str, ssl.SSLContext] = {}  # by CA file
        self.env_proxies: dict[str, str | None] = {}  # by URL
        self.metrics: Any = None  # the app's Metrics, set by make_app
        self.health: dict[str, Health] = {}

    async def start(self) -> None:
        # No per-host cap: a proxy usually has one backend, and a cap would queue streams behind slow ones.
        connector = aiohttp.TCPConnector(limit=self.config.max_connections, limit_per_host=0, ttl_dns_cache=300,
                                         keepalive_timeout=60)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.config.connect_timeout,
                                        sock_read=self.config.read_timeout)
        # Not trust_env: it looks the environment up again in a thread for every request (see env_proxy).
        self.session = aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=True,
                                             json_serialize=json_dumps)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    def openai_headers(self, backend: Backend, key: str | None, stream: bool) -> dict[str, str]:
        h = {"Content-Type": "application/json", "User-Agent": f"claude_proxy/{__version__}",
             "Accept": "text/event-stream" if stream else "application/json", **dict(backend.headers)}
        if key:
            h["Authorization"] = f"Bearer {key}"
        return h

    def anthropic_headers(self, backend: Backend, key: str | None, version: str | None,
                          beta: str | None) -> dict[str, str]:
        h = {"Content-Type": "application/json", "User-Agent": f"claude_proxy/{__version__}",
             "anthropic-version": version or ANTHROPIC_VERSION, **dict(backend.headers)}
        if beta:
            h["anthropic-beta"] = beta
        if key:
            h["x-api-key"] = key
        return h

    async def post_chat(self, backend: Backend, payload: dict, key: str | None) -> aiohttp.ClientResponse:
        """POST {url}/chat/completions, or {url}/responses for a Responses backend."""
        stream = bool(payload.get("stream"))
        return await self._post(backend, backend.endpoint, payload, lambda k: self.openai_headers(backend, k, stream),
                                key)

    async def post_anthropic(self, backend: Backend, payload: dict, key: str | None, version: str | None = None,
                             beta: str | None = None, path: str = "/messages") -> aiohttp.ClientResponse:
        """POST {url}/v1/messages (or count_tokens)."""
        return await self._post(backend, backend.anthropic_url + path, payload,
                                lambda k: self.anthropic_headers(backend, k, version, beta), key)

    def env_proxy(self, url: str) -> str | None:
        """The proxy HTTPS_PROXY / HTTP_PROXY / NO_PROXY give for ``url``; looked up once per URL."""
        if url not in self.env_proxies:
            import urllib.request
            parts = urlsplit(url)
            proxy = urllib.request.getproxies().get(parts.scheme)
            self.env_proxies[url] = None if not proxy or urllib.request.proxy_bypass(parts.netloc) else proxy
        return self.env_proxies[url]

    def network(self, backend: Backend) -> dict[str, Any]:
        """The per-request options that reach ``backend``: its proxy (its own, else the environment's), and its
        CA bundle or no verification."""
        proxy = backend.proxy or self.env_proxy(backend.url)
        options: dict[str, Any] = {"proxy": proxy} if proxy else {}
        if not backend.tls_verify:
            options["ssl"] = False
        elif backend.ca_file:
            context = self.tls.get(backend.ca_file)
            if context is None:
                context = self.tls[backend.ca_file] = ssl.create_default_context(cafile=backend.ca_file)
            options["ssl"] = context
        return options

    def pool(self, backend: Backend, key: str | None) -> KeyPool | None:
        """The key pool ``key`` is taken from: when it is one of the backend's several configured keys."""
        if len(backend.api_keys) < 2 or key not in backend.api_keys:
            return None
        return self.pools.setdefault((backend.name, backend.api_keys), KeyPool(backend.api_keys))

    # -- cooldowns: a backend failing again and again is skipped for a while ---------------------------------
    def cooled(self, backend: Backend) -> bool:
        return self.health.get(backend.name, Health()).cooled_until > time.monotonic()

    def record(self, backend: Backend, failed: bool) -> None:
        health = self.health.setdefault(backend.name, Health())
        if not failed:
            health.failures = 0
            return
        health.failures += 1
        if health.failures >= backend.cooldown_failures and backend.cooldown_seconds > 0:
            health.failures, health.cooled_until = 0, time.monotonic() + backend.cooldown_seconds
            log.warning("backend %s failed %d times in a row: skipped for %gs in favour of its routes' fallbacks",
                        backend.name, backend.cooldown_failures, backend.cooldown_seconds)

    async def _post(self, backend: Backend, url: str, payload: dict,
                    headers_for: Callable[[str | None], dict[str, str]], key: str | None) -> aiohttp.ClientResponse:
        """POST with what earlier refusals taught about this backend and model already applied."""
        lesson_key = f"{backend.name}/{payload.get('model', '')}"
        known = known_lessons(backend.url).merge(self.lessons.get(lesson_key, Lessons()))
        if backend.system_turns == "fold":
            known = known.merge(Lessons(fold_system_turns=True))
        payload = known.apply(cap_output_tokens(payload, backend.max_tokens))
        if log.isEnabledFor(logging.DEBUG):
            log.debug("→ POST %s (backend %s) key=%s body=%s", redact_url(url), backend.name, redact_key(key),
                      loggable_body(payload, (key, *self.config.secret_values)))
        return await self._post_with_retries(backend, url, payload, headers_for, key, lesson_key)

    def _learn(self, backend: Backend, text: str, payload: dict, tried: set) -> Lessons | None:
        """What a 400 teaches, when it is a refusal the proxy can fix and that kind of fix was not tried yet for
        this request."""
        for learn in REFUSALS[backend.dialect]:
            if learn is _learn_system_turns and backend.system_turns == "keep":
                continue  # the configuration says so: the refusal goes back to the client as it is
            lesson = learn(text, payload) if learn not in tried else None
            if lesson is not None:
                tried.add(learn)
                log.info("backend %s model %s refused the request (%s); retrying %s", backend.name,
                         payload.get("model", ""), lesson.why, lesson.describe())
                return lesson
        return None

    def _remember(self, backend: Backend, lesson_key: str, lessons: list[Lessons]) -> None:
        """Lessons a retry proved right, kept for the backend and model: later requests go straight through."""
        lasting = [lesson for lesson in lessons if lesson.lasting]
        if not lasting:
            return
        if len(self.lessons) >= 1024 and lesson_key not in self.lessons:
            self.lessons.pop(next(iter(self.lessons)))
        merged = self.lessons.get(lesson_key, Lessons())
        for lesson in lasting:
            merged = merged.merge(lesson)
        self.lessons[lesson_key] = merged
        log.info("backend %s: remembered for %s: %s", backend.name, lesson_key.split("/", 1)[1], merged.describe())

    async def _post_with_retries(self, backend: Backend, url: str, payload: dict,
                                 headers_for: Callable[[str | None], dict[str, str]], key: str | None,
                                 lesson_key: str) -> aiohttp.ClientResponse:
        """POST; returns a 2xx response (body unread) or raises ProxyError.

        Connection failures, 429 and 5xx are retried with jittered backoff (honouring ``retry-after`` up to
        30 s). A 400 the proxy knows how to fix (``REFUSALS``) is retried once per kind of fix; what the retries
        taught is remembered only once the backend has accepted the request. With a pool of keys, a key answered
        429 rests and one answered 401/403 is set aside, and the request moves on at once to the next key.
        """
        assert self.session is not None
        pool = self.pool(backend, key)
        key = _pool_key(backend, pool) if pool else key
        headers = headers_for(key)
        body = json_dumps(payload).encode()
        secrets_ = (key, *self.config.secret_values)
        where = redact_url(backend.url)
        attempt = 0
        tried: set = set()
        learned: list[Lessons] = []
        while True:
            try:
                resp = await self.session.post(url, data=body, headers=headers, **self.network(backend))
            except TimeoutError as exc:
                if _is_read_timeout(exc):  # the backend accepted and then said nothing: retrying would wait again
                    raise ProxyError(504, f"the backend {where} sent no answer within "
                                          f"{self.config.read_timeout:g}s (--read-timeout)", "timeout_error") from None
                error = ProxyError(504, f"timed out connecting to the backend {where} "
                                        f"(--connect-timeout {self.config.connect_timeout:g}s)", "timeout_error")
            except aiohttp.ClientError as exc:
                error = ProxyError(502, scrub(f"cannot reach the backend {where}: {_describe(exc)}", secrets_),
                                   "api_error")
            else:
                if resp.status < 300:
                    self._remember(backend, lesson_key, learned)
                    return resp
                text = await _read_error_body(resp)
                error = error_from_backend(resp.status, scrub(text, secrets_), resp.headers, where)
                if pool and key and resp.status in (401, 403, 429):
                    _set_key_aside(backend, pool, key, resp.status, resp.headers.get("retry-after"), error)
                    if self.metrics:
                        self.metrics.count("claude_proxy_key_rests_total", backend=backend.name)
                    key = _pool_key(backend, pool, error)
                    headers = headers_for(key)
                    continue
                lesson = self._learn(backend, text, payload, tried) if resp.status in (400, 422, 500) else None
                if lesson is not None:
                    learned.append(lesson)
                    payload = lesson.apply(payload)
                    body = json_dumps(payload).encode()
                    continue
                if resp.status not in RETRY_STATUSES:
                    raise error
            if attempt >= self.config.retries:
                raise error
            delay = _retry_delay(attempt, error.headers.get("retry-after"))
            if delay is None:
                raise error
            attempt += 1
            log.warning("backend %s attempt %d failed (%s); retrying in %.1fs", backend.name, attempt, error.message,
                        delay)
            if self.metrics:
                self.metrics.count("claude_proxy_retries_total", backend=backend.name)
            await asyncio.sleep(delay)


def _set_key_aside(backend: Backend, pool: KeyPool, key: str, status: int, retry_after: str | None,
                   error: ProxyError) -> None:
    if status == 429:
        try:
            seconds = float(retry_after) if retry_after else 60.0
        except ValueError:
            seconds = 60.0
        seconds = seconds if math.isfinite(seconds) and seconds >= 0 else 60.0
        pool.rest(key, seconds)
        log.info("backend %s: key …%s is rate-limited; it rests %gs", backend.name, key[-4:], seconds)
    else:
        pool.refused.add(key)
        log.warning("backend %s: key …%s was refused (HTTP %d: %s); set aside until restart", backend.name,
                    key[-4:], status, error.message[:200])


def _pool_key(backend: Backend, pool: KeyPool, last: ProxyError | None = None) -> str:
    """The pool's next key, or the error for a pool with none left: every key resting is a 429 with the wait
    for the first back; every key refused is the last refusal."""
    key = pool.take()
    if key is not None:
        return key
    wait = pool.soonest()
    if wait is None:
        raise last or ProxyError(401, f"every key of backend {backend.name} was refused", "authentication_error")
    raise ProxyError(429, f"every key of backend {backend.name} is rate-limited; the first is back in "
                          f"{math.ceil(wait)}s", "rate_limit_error", {"retry-after": str(max(1, math.ceil(wait)))})


# ---- refusals the proxy can fix: adjust, retry once, remember per backend and model ---------------------

@dataclass(frozen=True)
class Lessons:
    """What a backend's refusals taught about one of its models, applied to every later request for it."""
    max_tokens: int | None = None  # the output limit it named
    dropped: frozenset[str] = frozenset()  # parameters it refused
    adaptive_thinking: bool = False  # it refused thinking.type "enabled" (newer Claude models)
    fold_system_turns: bool = False  # its chat template takes a system message only first
    nine_char_ids: bool = False  # it takes tool-call ids of exactly 9 alphanumeric characters (Mistral)
    dropped_fields: frozenset[str] = frozenset()  # message extensions it refused (reasoning_content, …)
    tools_as_text: bool = False  # it has no tool parser: tool_choice "none", and the calls it writes are read
    why: str = ""
    lasting: bool = True  # False: true of this request only (an output limit left by this prompt's length)

    def merge(self, other: Lessons) -> Lessons:
        return Lessons(min(filter(None, (self.max_tokens, other.max_tokens)), default=None),
                       self.dropped | other.dropped, self.adaptive_thinking or other.adaptive_thinking,
                       self.fold_system_turns or other.fold_system_turns, self.nine_char_ids or other.nine_char_ids,
                       self.dropped_fields | other.dropped_fields, self.tools_as_text or other.tools_as_text, other.why)

    def apply(self, payload: dict) -> dict:
        if self.dropped & payload.keys():
            payload = {k: v for k, v in payload.items() if k not in self.dropped}
        thinking = payload.get("thinking")
        if self.adaptive_thinking and isinstance(thinking, dict) and thinking.get("type") == "enabled":
            payload = {**payload, "thinking": {"type": "adaptive"}, "output_config": {
                **(payload.get("output_config") or {}), "effort": effort_for_budget(thinking.get("budget_tokens"))}}
        if self.fold_system_turns:
            payload = fold_system_turns(payload)
        if self.nine_char_ids:
            payload = with_nine_char_ids(payload)
        if self.dropped_fields:
            payload = without_message_fields(payload, self.dropped_fields)
        if self.tools_as_text and payload.get("tools") and payload.get("tool_choice", "auto") == "auto":
            payload = {**payload, "tool_choice": "none"}
        return cap_output_tokens(payload, self.max_tokens)

    def describe(self) -> str:
        return "; ".join(filter(None, (f"with at most {self.max_tokens} output tokens" if self.max_tokens else "",
                                       f"without {', '.join(sorted(self.dropped))}" if self.dropped else "",
                                       "with adaptive thinking" if self.adaptive_thinking else "",
                                       "with system turns folded into user turns" if self.fold_system_turns else "",
                                       "with 9-character tool-call ids" if self.nine_char_ids else "",
                                       f"without the message field {', '.join(sorted(self.dropped_fields))}"
                                       if self.dropped_fields else "",
                                       "with tool_choice none, its calls read from the text" if self.tools_as_text
                                       else "")))


def _learn_max_tokens(text: str, payload: dict) -> Lessons | None:
    limit = max_tokens_limit_from_error(text, payload.get(output_tokens_key(payload)) or 0)
    if not limit:
        return None
    # vLLM's "maximum context length is N tokens ... (M in the messages": what this prompt leaves, not a limit
    return Lessons(max_tokens=limit, why=f"it allows at most {limit} output tokens",
                   lasting=not _CONTEXT_PATTERN.search(text))


# How servers say a parameter itself is refused (not its value): OpenAI, Groq, vLLM and Mistral (pydantic),
# Gemini, Claude models newer than Opus 4.6.
_REFUSED_WORDING = re.compile(r"unrecogni[sz]ed|unsupported|not supported|does not support|unknown (?:name|field|"
                              r"parameter|argument)|extra (?:inputs|fields)|not permitted|deprecated", re.IGNORECASE)


def _refused_parameter(optional: tuple[str, ...]) -> Any:
    """A learner for parameters that are safe to leave out: "Unrecognized request argument supplied:
    stream_options", "Unsupported parameter: 'temperature'", Claude's "`temperature` is deprecated for this
    model." The answer is still possible without them. A refused *value* ("temperature: expected a value <= 2")
    is the client's to fix, and goes back to it."""
    def learn(text: str, payload: dict) -> Lessons | None:
        if not _REFUSED_WORDING.search(text):
            return None
        for name in optional:
            if name in payload and re.search(rf"(?<![\w.]){name}(?!\w)", text):
                return Lessons(dropped=frozenset({name}), why=f"{name} refused")
        return None
    return learn


def _learn_adaptive_thinking(text: str, payload: dict) -> Lessons | None:
    thinking = payload.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled" and "adaptive" in text:
        return Lessons(adaptive_thinking=True, why="thinking.type enabled refused")
    return None


# Chat templates that take a system message only first: Qwen 3 ("System message must be at the beginning."),
# others ("Conversation roles must alternate user/assistant/user/assistant/...").
_SYSTEM_TURN_REFUSAL = re.compile(r"system message[^.]{0,40}(?:at the beginning|first)|roles must alternate|"
                                  r"only (?:one|a single) system message|system (?:message|role) .{0,30}not (?:allowed|"
                                  r"supported)", re.IGNORECASE)


def _learn_system_turns(text: str, payload: dict) -> Lessons | None:
    messages = payload.get("messages")
    later = isinstance(messages, list) and any(m.get("role") == "system" for m in messages[1:] if isinstance(m, dict))
    if later and _SYSTEM_TURN_REFUSAL.search(text):
        return Lessons(fold_system_turns=True, why="its chat template takes a system message only first")
    return None


_TOOL_ID_REFUSAL = re.compile(r"tool.?call.?id.{0,120}(?:length of 9|9 characters|a-z, ?A-Z, ?0-9)",
                              re.IGNORECASE | re.DOTALL)


def _learn_tool_ids(text: str, payload: dict) -> Lessons | None:
    """Mistral: "Tool call id was toolu_01… but must be a-z, A-Z, 0-9, with a length of 9." """
    if _TOOL_ID_REFUSAL.search(text):
        return Lessons(nine_char_ids=True, why="it takes tool-call ids of 9 alphanumeric characters only")
    return None


MESSAGE_EXTENSIONS = ("reasoning_content", "extra_content")  # fields the proxy adds to messages for some backends


def _learn_message_fields(text: str, payload: dict) -> Lessons | None:
    """A strict server refusing a message extension: "property 'reasoning_content' is unsupported", or pydantic's
    "Extra inputs are not permitted" at ("body", "messages", 1, "reasoning_content")."""
    if not _REFUSED_WORDING.search(text):
        return None
    sent = json_dumps(payload.get("messages"))
    for name in MESSAGE_EXTENSIONS:
        if f'"{name}"' in sent and re.search(rf"(?<![\w.]){name}(?!\w)", text):
            return Lessons(dropped_fields=frozenset({name}), why=f"{name} in messages refused")
    return None


def _learn_tools_as_text(text: str, payload: dict) -> Lessons | None:
    """vLLM started without a tool parser refuses tool_choice "auto" (the default when tools are offered):
    ""auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set". With "none" it
    still shows the model the tools, and the model writes its calls as text, which the proxy reads."""
    if payload.get("tools") and re.search(r"auto\W{0,3} tool choice requires", text, re.IGNORECASE):
        return Lessons(tools_as_text=True, why="it has no tool-call parser")
    return None


def _learn_no_encrypted_reasoning(text: str, payload: dict) -> Lessons | None:
    """A Responses model without reasoning refuses the reasoning items the proxy asks for by default
    ("Encrypted content is not supported with this model."): asked again without ``include``."""
    if "include" in payload and re.search(r"encrypted content is not supported", text, re.IGNORECASE):
        return Lessons(dropped=frozenset({"include"}), why="it has no encrypted reasoning")
    return None


# Backends known, before any refusal, to want what others would refuse: (URL pattern, lesson).
KNOWN_BACKENDS = ((re.compile(r"(?:^|[/.])api\.mistral\.ai(?:[:/]|$)"), Lessons(nine_char_ids=True)),)


@functools.lru_cache(maxsize=256)
def known_lessons(url: str) -> Lessons:
    lessons = Lessons()
    for pattern, lesson in KNOWN_BACKENDS:
        if pattern.search(url):
            lessons = lessons.merge(lesson)
    return lessons


# Per backend dialect, the refusals that are fixed by retrying, tried in this order.
REFUSALS = {
    "openai": (_learn_max_tokens, _learn_system_turns, _learn_tool_ids, _learn_message_fields, _learn_tools_as_text,
               _refused_parameter(("stream_options", "reasoning_effort", "parallel_tool_calls", "temperature",
                                   "top_p", "stop"))),
    "anthropic": (_learn_max_tokens, _refused_parameter(("temperature", "top_p", "top_k")),
                  _learn_adaptive_thinking),
    "responses": (_learn_max_tokens, _learn_no_encrypted_reasoning,
                  _refused_parameter(("temperature", "top_p", "parallel_tool_calls", "reasoning"))),
}


def _is_read_timeout(exc: BaseException) -> bool:
    read_timeout = getattr(aiohttp, "SocketTimeoutError", None)
    if read_timeout is not None:
        return isinstance(exc, read_timeout)
    return "read" in str(exc).lower()


def _describe(exc: BaseException) -> str:
    """A short cause for a client-side aiohttp failure, without aiohttp's internals."""
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the connection closed mid-answer"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        reason = getattr(exc.certificate_error, "verify_message", None) or exc.certificate_error
        return (f"its TLS certificate was not accepted ({reason}); for a private CA give --ca-file (or ca_file "
                f"for that backend)")
    text = str(exc) or exc.__class__.__name__
    return text.split(" [", 1)[0] if "Cannot connect" in text else text


def _retry_delay(attempt: int, retry_after: str | None) -> float | None:
    if retry_after:
        try:
            seconds = float(retry_after)
        except ValueError:
            seconds = None
        if seconds is not None:
            return seconds if seconds <= 30 else None  # a long wait is the client's call, not ours
    return min(8.0, 0.5 * 2 ** attempt) * (0.5 + random.random() / 2)


async def _read_error_body(resp: aiohttp.ClientResponse) -> str:
    try:
        raw = await resp.content.read(64 * 1024)
        return raw.decode("utf-8", "replace")
    except (TimeoutError, aiohttp.ClientError):
        return ""
    finally:
        resp.release()


# ---- web search providers ---------------------------------------------------------------------------------
# Each: how to ask it (method, URL, request options), where its answer keeps the results, and the names of a
# result's snippet and age fields.

def _searxng_request(search: WebSearch, query: str, tool: dict) -> tuple[str, str, dict]:
    # SearXNG answers JSON only when "json" is in search.formats of its settings.yml; 403 otherwise.
    return "GET", search.url.removesuffix("/search") + "/search", {"params": {"q": query, "format": "json"}}


def _brave_request(search: WebSearch, query: str, tool: dict) -> tuple[str, str, dict]:
    params = {"q": query, "count": "20"}  # its most: results are filtered by domain afterwards
    location = tool.get("user_location")
    country = location.get("country") if isinstance(location, dict) else None
    if isinstance(country, str) and country:
        params["country"] = country.lower()
    return "GET", search.url, {"params": params, "headers": {
        "X-Subscription-Token": search.api_key or "", "Accept": "application/json"}}


def _tavily_request(search: WebSearch, query: str, tool: dict) -> tuple[str, str, dict]:
    body: dict[str, Any] = {"query": query, "max_results": min(search.max_results, 20)}
    for ours, theirs in (("allowed_domains", "include_domains"), ("blocked_domains", "exclude_domains")):
        if _list(tool.get(ours)):
            body[theirs] = [d for d in tool[ours] if isinstance(d, str)]
    return "POST", search.url, {"json": body, "headers": {"Authorization": f"Bearer {search.api_key or ''}"}}


SEARCH_APIS = {  # provider → (request, path to the results, snippet field, age fields)
    "searxng": (_searxng_request, ("results",), "content", ("publishedDate",)),
    "brave": (_brave_request, ("web", "results"), "description", ("page_age", "age")),
    "tavily": (_tavily_request, ("results",), "content", ("published_date",)),
}
# What a provider's refusal most likely means, for the log line.
SEARCH_HINTS = {("searxng", 403): "add json to search.formats in SearXNG's settings.yml",
                ("brave", 401): "check --web-search-key", ("brave", 422): "check --web-search-key",
                ("tavily", 401): "check --web-search-key"}


async def web_search(session: aiohttp.ClientSession, search: WebSearch, query: str, tool: dict,
                     proxy: str | None = None) -> list[dict] | str:
    """The provider's results for ``query`` (``tool``: the request's web search tool, with its domains and
    location) as ``{"title", "url", "snippet", "page_age"}``, or the error code of Anthropic's web search
    (``too_many_requests`` or ``unavailable``) with the cause logged."""
    method, url, options = SEARCH_APIS[search.provider][0](search, query, tool)
    timeout = aiohttp.ClientTimeout(total=search.timeout)
    try:
        async with session.request(method, url, timeout=timeout, proxy=proxy, **options) as resp:
            if resp.status != 200:
                hint = SEARCH_HINTS.get((search.provider, resp.status))
                body = (await resp.text(errors="replace"))[:300]
                log.warning("web search via %s failed: HTTP %d %s%s", search.provider, resp.status,
                            body.replace(search.api_key or "\0", redact_key(search.api_key)), f" ({hint})" if hint
                            else "")
                return "too_many_requests" if resp.status == 429 else "unavailable"
            data = await resp.json(loads=json_loads, content_type=None)
    except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
        log.warning("web search via %s failed: %s", search.provider, _describe(exc) or "timed out")
        return "unavailable"
    return search_results(search.provider, data)


def search_results(provider: str, data: Any) -> list[dict]:
    """The results of a provider's answer as ``{"title", "url", "snippet", "page_age"}``; what is not a result
    with a URL is skipped."""
    _, path, snippet, ages = SEARCH_APIS[provider]
    for key in path:
        data = data.get(key) if isinstance(data, dict) else None
    return [{"title": str(r.get("title") or r["url"]), "url": r["url"], "snippet": str(r.get(snippet) or ""),
             "page_age": next((str(r[a]) for a in ages if r.get(a)), None)}
            for r in _list(data) if isinstance(r, dict) and isinstance(r.get("url"), str)]


# ======================================================================================================
# 7. HTTP handlers and app
# ======================================================================================================

UPSTREAM_KEY = web.AppKey("upstream", Upstream)
MODELS_CACHE_KEY = web.AppKey("models_cache", dict)
WINDOWS_KEY = web.AppKey("windows", dict)  # (backend, model) → context window it reports, or None
MODEL_CREATED = 1735689600  # 2025-01-01T00:00:00Z: model lists need a date, and the proxy has none to give
MODELS_TTL = 300.0
SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
               "Connection": "keep-alive", "X-Accel-Buffering": "no"}
OPEN_PATHS = {"/", "/health", "/api/hello"}  # probes answer without a proxy key; they reveal nothing


@dataclass
class ServerState:
    """The configuration new requests get (a reload replaces it; a request keeps the one it started with), and
    what graceful shutdown needs: whether we are draining, and the requests still in flight."""
    config: Config
    draining: bool = False
    inflight: set = field(default_factory=set)


@dataclass
class RequestLog:
    """What the one log line per request says; handlers fill it in as they learn it."""
    request_id: str
    dialect: str
    started: float
    backend: str = "-"
    backend_dialect: str = "-"
    requested: str = "-"
    model: str = "-"
    route: str = "-"  # the name of the route that applied (or its position in the config file)
    stream: bool = False
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    first_byte: float | None = None
    session: str | None = None  # Claude Code's X-Claude-Code-Session-Id, for /usage

    def as_dict(self, method: str, path: str, status: int) -> dict:
        """The log line's facts, for ``--log-format json``."""
        now = time.monotonic()
        return {"request_id": self.request_id, "method": method, "path": path, "status": status,
                "door": self.dialect, "backend": self.backend, "backend_dialect": self.backend_dialect,
                "requested": self.requested, "model": self.model, "route": self.route, "stream": self.stream,
                "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "cache_read_tokens": self.cache_read_tokens,
                "ttfb_ms": round((self.first_byte - self.started) * 1000) if self.first_byte else None,
                "total_ms": round((now - self.started) * 1000)}

    def line(self, method: str, path: str, status: int) -> str:
        now = time.monotonic()
        ttfb = f"{(self.first_byte - self.started) * 1000:.0f}ms" if self.first_byte else "-"
        tokens = (f"in={self.input_tokens if self.input_tokens is not None else '-'} "
                  f"out={self.output_tokens if self.output_tokens is not None else '-'}")
        if self.requested == "-":
            return f"{self.request_id} {method} {path} {status} total={(now - self.started) * 1000:.0f}ms"
        return (f"{self.request_id} {self.dialect}→{self.backend_dialect}:{self.backend} "
                f"{self.requested}→{self.model} route={self.route} {'stream' if self.stream else 'json'} {status} "
                f"{tokens} ttfb={ttfb} total={(now - self.started) * 1000:.0f}ms")


def _request_key(name: str, kind: Any) -> Any:
    return web.RequestKey(name, kind) if hasattr(web, "RequestKey") else name


METRIC_FAMILIES = {  # name → (type, help)
    "claude_proxy_requests_total": ("counter", "Requests by front door, backend, model, route and status"),
    "claude_proxy_tokens_total": ("counter", "Tokens by backend, model and kind (input, output, cache_read)"),
    "claude_proxy_retries_total": ("counter", "Backend requests retried after a failure"),
    "claude_proxy_fallbacks_total": ("counter", "Requests that moved on to a route's next backend"),
    "claude_proxy_key_rests_total": ("counter", "Keys of a pool set to rest (429) or aside (401/403)"),
    "claude_proxy_request_duration_seconds": ("histogram", "Time from request to the end of the answer"),
    "claude_proxy_time_to_first_byte_seconds": ("histogram", "Time from request to the first byte"),
    "claude_proxy_requests_in_flight": ("gauge", "Requests being answered"),
}


class Metrics:
    """What the proxy has done since it started: for ``GET /metrics`` (the Prometheus text format) and
    ``GET /usage`` (JSON totals by backend and model, and by Claude Code session, with costs)."""
    BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

    def __init__(self) -> None:
        self.started = time.time()
        self.counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self.histograms: dict[tuple[str, tuple[tuple[str, str], ...]], list[float]] = {}  # buckets…, sum, count
        self.usage: dict[tuple[str, str], dict] = {}  # ("model", backend/model) or ("session", id) → totals

    def count(self, name: str, value: float = 1.0, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        self.counters[key] = self.counters.get(key, 0.0) + value

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        cells = self.histograms.setdefault(key, [0.0] * (len(self.BUCKETS) + 2))
        for i, bound in enumerate(self.BUCKETS):
            if seconds <= bound:
                cells[i] += 1
        cells[-2] += seconds
        cells[-1] += 1

    def record(self, rlog: RequestLog, status: int, config: Config) -> None:
        """One finished request to a model."""
        self.count("claude_proxy_requests_total", door=rlog.dialect, backend=rlog.backend, model=rlog.model,
                   route=rlog.route, status=str(status))
        tokens = {"input": rlog.input_tokens or 0, "output": rlog.output_tokens or 0,
                  "cache_read": rlog.cache_read_tokens or 0}
        for kind, n in tokens.items():
            if n:
                self.count("claude_proxy_tokens_total", n, backend=rlog.backend, model=rlog.model, kind=kind)
        self.observe("claude_proxy_request_duration_seconds", time.monotonic() - rlog.started, door=rlog.dialect)
        if rlog.first_byte:
            self.observe("claude_proxy_time_to_first_byte_seconds", rlog.first_byte - rlog.started, door=rlog.dialect)
        cost = _cost(config, rlog, tokens)
        keys = [("model", f"{rlog.backend}/{rlog.model}")] + ([("session", rlog.session)] if rlog.session else [])
        if len(self.usage) > 10000:  # bounded: sessions come and go
            self.usage = {k: v for k, v in self.usage.items() if k[0] == "model"}
        for key in keys:
            totals = self.usage.setdefault(key, {"requests": 0, "errors": 0, "input_tokens": 0, "output_tokens": 0,
                                                 "cache_read_tokens": 0, "cost": None})
            totals["requests"] += 1
            totals["errors"] += status >= 400
            for kind, n in tokens.items():
                totals[f"{kind}_tokens"] += n
            if cost is not None:
                totals["cost"] = round((totals["cost"] or 0.0) + cost, 6)
            totals.update(backend=rlog.backend, model=rlog.model)

    def prometheus(self, in_flight: int) -> str:
        lines: list[str] = []
        for name, (kind, text) in METRIC_FAMILIES.items():
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
            if kind == "gauge":
                lines.append(f"{name} {in_flight}")
            for (n, labels), value in sorted(self.counters.items()):
                if n == name:
                    lines.append(f"{name}{_labels(labels)} {value:g}")
            for (n, labels), cells in sorted(self.histograms.items()):
                if n == name:
                    lines += [f"{name}_bucket{_labels(labels + (('le', f'{b:g}'),))} {c:g}"
                              for b, c in zip(self.BUCKETS, cells, strict=False)]
                    lines += [f"{name}_bucket{_labels(labels + (('le', '+Inf'),))} {cells[-1]:g}",
                              f"{name}_sum{_labels(labels)} {cells[-2]:g}", f"{name}_count{_labels(labels)} {cells[-1]:g}"]
        return "\n".join(lines) + "\n"


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    def escape(v: str) -> str:
        return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return "{" + ",".join(f'{k}="{escape(str(v))}"' for k, v in labels) + "}" if labels else ""


def _cost(config: Config, rlog: RequestLog, tokens: dict[str, int]) -> float | None:
    """The request's cost where prices are set: the route's (by its name in the log line), else the backend's."""
    route = next((r for r in config.routing.routes if r.name == rlog.route), None)
    backend = config.routing.backends.get(rlog.backend)
    price_in = route.price_input if route and route.price_input is not None else backend.price_input if backend \
        else None
    price_out = route.price_output if route and route.price_output is not None else backend.price_output \
        if backend else None
    if price_in is None and price_out is None:
        return None
    return ((tokens["input"] + tokens["cache_read"]) * (price_in or 0) + tokens["output"] * (price_out or 0)) / 1e6


STATE_KEY = web.AppKey("state", ServerState)
METRICS_KEY = web.AppKey("metrics", Metrics)
REQUEST_ID_KEY: Any = _request_key("request_id", str)
DIALECT_KEY: Any = _request_key("dialect", str)
LOG_KEY: Any = _request_key("log", RequestLog)
CONFIG_KEY: Any = _request_key("config", Config)  # the configuration this request runs with, start to end
URL_ROUTE_KEY: Any = _request_key("url_route", tuple)
STREAM_KEY: Any = _request_key("stream", web.StreamResponse)  # set once a streamed answer has started
ESTIMATE_KEY: Any = _request_key("estimate", object)  # the proxy's estimate of the prompt's tokens, made on demand


def client_key(request: web.Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key.strip()
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return None


def backend_key(request: web.Request, backend: Backend | None = None) -> str | None:
    """The key for ``backend``: its configured one; else the client's own, unless that is a proxy key (those
    never leave the proxy). A configured key only ever goes to the URL it was configured with."""
    config = request[CONFIG_KEY]
    backend = backend or config.routing.primary
    if backend.api_key:
        return backend.api_key
    if config.proxy_keys:
        return None
    return client_key(request)


def client_dialect(request: web.Request) -> str:
    """Which API the caller speaks, so errors and model lists come back in it (a Responses client's errors
    are OpenAI's)."""
    path = request.path
    if path.startswith(("/v1/chat/", "/chat/", "/v1/completions", "/v1/responses", "/responses")):
        return "openai"
    if path.rstrip("/").endswith("/models") or "/models/" in path:
        return "anthropic" if "anthropic-version" in request.headers or "x-api-key" in request.headers else "openai"
    return "anthropic"


def error_response(error: ProxyError, request: web.Request) -> web.Response:
    headers = {"request-id": request[REQUEST_ID_KEY], **error.headers,
               "x-should-retry": "true" if error.retryable else "false"}
    if request[DIALECT_KEY] == "openai":
        status = 503 if error.status == 529 else error.status  # OpenAI clients do not know 529
        return web.Response(status=status, text=json_dumps(error.openai_body()), content_type="application/json",
                            headers=headers)
    return web.Response(status=error.status, text=json_dumps(error.anthropic_body(request[REQUEST_ID_KEY])),
                        content_type="application/json", headers=headers)


def error_frame(error: ProxyError, dialect: str) -> bytes:
    """An in-band error for a stream that has already started, in the client's dialect."""
    if dialect == "openai":
        return openai_frames([error.openai_body(), "[DONE]"])
    if dialect == "responses":  # the Responses "error" event; the relayed stream's numbering is not known
        return sse_frame("error", {"type": "error", "code": error.kind, "message": error.message, "param": None,
                                   "sequence_number": 0})
    return sse_frame("error", error.anthropic_body())


INTERNAL_ERROR = ProxyError(500, "internal proxy error; see the proxy log", "api_error", retryable=False)
SHUTDOWN_ERROR = ProxyError(503, "the proxy is shutting down; the answer was cut off (retry the request)",
                            "overloaded_error")


async def read_json(request: web.Request) -> Any:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ProxyError(413, f"request body is larger than the {request[CONFIG_KEY].max_body} byte limit "
                              f"(--max-body)", "request_too_large") from None
    if not raw.strip():
        raise bad_request("request body is empty; expected a JSON object")
    try:
        body = json_loads(raw)
    except ValueError as exc:
        raise bad_request(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise bad_request("request body is nested too deeply") from None
    if log.isEnabledFor(logging.DEBUG):
        log.debug("%s ← %s %s body=%s", request[REQUEST_ID_KEY], request.method, request.path,
                  loggable_body(raw, (client_key(request), *request[CONFIG_KEY].secret_values)))
    return body


def check_access(request: web.Request) -> None:
    """Host check against DNS rebinding on a loopback bind, then the proxy key if one is configured."""
    config = request[CONFIG_KEY]
    if config.loopback_only and not config.proxy_keys:
        host = request.host or ""
        host = host[1:].split("]")[0] if host.startswith("[") else host.rsplit(":", 1)[0]
        if host and not _is_loopback_name(host):
            raise ProxyError(403, f"Host {host!r} is not allowed: the proxy listens on loopback only "
                                  f"(a web page may be trying DNS rebinding)", "permission_error")
    if config.proxy_keys and request.path not in OPEN_PATHS:
        presented = client_key(request) or ""
        # compare against every key, always, so timing says nothing about which or how much matched
        ok = False
        for key in config.proxy_keys:
            ok |= hmac.compare_digest(presented.encode(), key.encode())
        if not ok:
            raise ProxyError(401, "missing or wrong proxy key: send one of the --proxy-key values as x-api-key or "
                                  "Authorization: Bearer", "authentication_error")


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    request_id = "req_" + uuid.uuid4().hex[:24]
    request[REQUEST_ID_KEY] = request_id
    request[DIALECT_KEY] = client_dialect(request)
    rlog = request[LOG_KEY] = RequestLog(request_id, request[DIALECT_KEY], time.monotonic(),
                                         session=request.headers.get("x-claude-code-session-id"))
    state = request.app[STATE_KEY]
    request[CONFIG_KEY] = state.config
    task = asyncio.current_task()
    state.inflight.add(task)
    try:
        if request.method == "OPTIONS":
            response = web.Response(status=204)
        else:
            check_access(request)
            if state.draining and request.path not in OPEN_PATHS:
                raise ProxyError(503, "the proxy is shutting down; retry shortly", "overloaded_error")
            response = await handler(request)
    except ProxyError as exc:
        response = error_response(exc, request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kind = ANTHROPIC_ERROR_TYPES.get(exc.status, "invalid_request_error" if exc.status < 500 else "api_error")
        message = {404: f"no route for {request.method} {request.path}",
                   405: f"method {request.method} is not allowed on {request.path}",
                   413: "request body is too large"}.get(exc.status, exc.reason)
        response = error_response(ProxyError(exc.status, message, kind), request)
    except asyncio.CancelledError:  # the client hung up: the request still gets its log line
        started = request.get(STREAM_KEY)
        _request_done(request, rlog, started.status if started is not None else 499)
        raise
    except RecursionError:  # input nested deeper than the translators follow
        response = error_response(bad_request("request body is nested too deeply"), request)
    except Exception:  # a bug in the proxy must still answer in the client's dialect
        log.exception("internal error on %s %s", request.method, request.path)
        started = request.get(STREAM_KEY)
        # A stream already under way has spent its status: nothing more may be written into it.
        response = started if started is not None else error_response(INTERNAL_ERROR, request)
    finally:
        state.inflight.discard(task)
    if not response.prepared:
        response.headers.setdefault("request-id", request_id)
    if request.path not in OPEN_PATHS:
        _request_done(request, rlog, response.status)
    return response


def _request_done(request: web.Request, rlog: RequestLog, status: int) -> None:
    """The request's one log line (text or JSON), and its place in the metrics."""
    config = request.get(CONFIG_KEY) or request.app[STATE_KEY].config
    facts = rlog.as_dict(request.method, request.path, status) if config.log_format == "json" else None
    log.info("%s", rlog.line(request.method, request.path, status), extra={"request": facts})  # JSON lines show it
    if rlog.requested != "-":
        request.app[METRICS_KEY].record(rlog, status, config)


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """CORS only for the configured origins; ``*`` never together with credentials."""
    origins = request[CONFIG_KEY].cors_origins
    origin = request.headers.get("Origin")
    if not origins or not origin:
        return
    if "*" in origins:
        response.headers["Access-Control-Allow-Origin"] = "*"
    elif origin.rstrip("/") in origins:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
    else:
        return
    response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
    response.headers["Access-Control-Allow-Headers"] = (
        "Content-Type, Authorization, x-api-key, anthropic-version, anthropic-beta, "
        "anthropic-dangerous-direct-browser-access, x-stainless-os, x-stainless-lang, x-stainless-package-version, "
        "x-stainless-runtime, x-stainless-runtime-version, x-stainless-arch, x-stainless-retry-count, "
        "x-stainless-timeout")
    response.headers["Access-Control-Max-Age"] = "600"


async def _read_backend_json(resp: aiohttp.ClientResponse, config: Config, backend: Backend) -> Any:
    async with resp:
        try:
            data = await resp.json(loads=json_loads, content_type=None)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise backend_failure(exc, config, backend) from None
        except ValueError as exc:
            raise backend_failure(malformed(f"not JSON ({_describe(exc)})"), config, backend) from None
    if log.isEnabledFor(logging.DEBUG):
        log.debug("← backend %s body=%s", backend.name, loggable_body(data, config.secret_values))
    return data


def translated_answer(config: Config, backend: Backend, translate: Any, *args: Any) -> dict:
    """``translate(*args)`` of a backend's JSON answer; whatever goes wrong is the backend's 502."""
    try:
        return translate(*args)
    except Exception as exc:  # noqa: BLE001 - every failure of a backend's answer reaches the client as a 502
        raise backend_failure(exc, config, backend) from None


def backend_failure(exc: BaseException, config: Config, backend: Backend) -> ProxyError:
    """What went wrong while reading or translating a backend's answer, as the error the client gets, naming
    the backend. An exception that is none of the expected ones is a proxy bug: its traceback is logged once."""
    where = redact_url(backend.url)
    if isinstance(exc, ProxyError):
        return ProxyError(exc.status, f"{exc.message} (backend {backend.name})", exc.kind, exc.headers, exc.retryable)
    if isinstance(exc, asyncio.TimeoutError):
        return ProxyError(504, f"backend {where} sent nothing for {config.read_timeout:g}s (--read-timeout)",
                          "timeout_error")
    if isinstance(exc, aiohttp.ClientError):
        return ProxyError(502, f"backend {where} broke off: {_describe(exc)}", "api_error")
    log.error("could not translate the answer of backend %s", backend.name, exc_info=exc)
    return ProxyError(502, f"the proxy could not translate the answer of backend {backend.name} "
                           f"({type(exc).__name__}); see the proxy log", "api_error", retryable=False)


# ---- the one stream pump ------------------------------------------------------------------------------

class _ClientGone(Exception):
    """The client closed its connection: nothing more can be written to it."""


async def pump_stream(request: web.Request, resp: aiohttp.ClientResponse | None, backend: Backend,
                      translator: StreamTranslator, source: AsyncIterator[list[Any]]) -> web.StreamResponse:
    """Serve one stream for either front door: read the backend's events (``source``; from ``resp``, or None
    for answers the proxy composes), feed ``translator``, write what it returns once per network read, with
    keep-alive pings while the backend is silent; then finish, fail or shut down.

    After the first byte the HTTP status is spent, so every failure, expected or not, flushes what was
    translated and ends the stream with an error in the client's dialect (logged, with the traceback when it is
    a proxy bug). A client that leaves cancels the handler, which closes the backend request."""
    config = request[CONFIG_KEY]
    out = web.StreamResponse(status=resp.status if resp else 200,
                             headers={**SSE_HEADERS, "request-id": request[REQUEST_ID_KEY]})
    async with resp or contextlib.nullcontext():
        await out.prepare(request)
        request[STREAM_KEY] = out
        request[LOG_KEY].first_byte = time.monotonic()
        ping = ANTHROPIC_PING if translator.client_dialect == "anthropic" else OPENAI_PING
        pending: list[Any] = []
        with KeepAliveWriter(out, ping, config.ping_interval) as writer:
            try:
                await _write(writer, translator.encode(translator.start()), True)  # before any keep-alive ping
                async for batch in source:
                    for item in batch:
                        pending += translator.receive(item)
                        if translator.done:
                            break
                    if translator.done:
                        break
                    if pending:
                        data, pending = translator.encode(pending), []  # sent once, even if a shutdown cuts in
                        await _write(writer, data, translator.at_boundary)
                pending += translator.end()
            except _ClientGone:
                return out
            except asyncio.CancelledError:
                if not request.app[STATE_KEY].draining:  # the client left
                    raise
                asyncio.current_task().uncancel()  # type: ignore[union-attr]  # the drain deadline: say why
                pending += translator.fail(SHUTDOWN_ERROR)
            except Exception as exc:  # noqa: BLE001 - see the docstring
                pending += translator.fail(backend_failure(exc, config, backend))
        _log_stream_end(request, translator)
        try:
            if pending:
                await out.write(translator.encode(pending))
            await out.write_eof()
        except ConnectionError:
            return out
        if translator.failed is None and resp is not None:
            await _read_to_end(resp)
    return out


async def _read_to_end(resp: aiohttp.ClientResponse) -> None:
    """Read the little a finished answer still holds after ``[DONE]`` or ``message_stop`` (the end of the
    chunked body), so that its connection goes back to the pool instead of being closed: against an HTTPS
    backend that saves a TCP and TLS handshake on the next request."""
    if not resp.content.at_eof():
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
            await asyncio.wait_for(resp.content.read(), 1.0)


async def _write(writer: KeepAliveWriter, data: bytes, boundary: bool) -> None:
    try:
        await writer.write(data, boundary)
    except ConnectionError:
        raise _ClientGone() from None


def _log_stream_end(request: web.Request, translator: StreamTranslator) -> None:
    if translator.failed is not None:
        log.warning("%s stream ended in error: %s", request[REQUEST_ID_KEY], translator.failed.message)
    rlog = request[LOG_KEY]
    rlog.input_tokens, rlog.output_tokens = translator.usage_counts()
    usage = getattr(translator, "final_usage", None)
    rlog.cache_read_tokens = usage.get("cache_read_input_tokens") if isinstance(usage, dict) else None


async def json_as_sse(resp: aiohttp.ClientResponse) -> AsyncIterator[list[SSEEvent]]:
    """A backend that ignored ``stream: true`` and answered in one piece: the answer as the one-chunk stream
    it would have sent."""
    try:
        data = await resp.json(loads=json_loads, content_type=None)
    except ValueError as exc:
        raise malformed(f"not JSON ({_describe(exc)})") from None
    yield [SSEEvent(None, json_dumps(completion_as_chunk(data))), SSEEvent(None, "[DONE]")]


# ---- routing and fallbacks ------------------------------------------------------------------------------

def request_candidates(request: web.Request, body: dict) -> list[tuple[Backend, str]]:
    """Where the request goes (the route that applies to it, or its URL), the route named in the log line."""
    url_route = request.get(URL_ROUTE_KEY)
    if url_route:
        request[LOG_KEY].route = "url"
        return [url_route]
    door = "responses" if request.path.endswith("/responses") else request[DIALECT_KEY]
    request[LOG_KEY].route, candidates = request[CONFIG_KEY].routing.route(
        body["model"], RequestFacts(body, request.headers, door))
    return candidates


async def with_overflow_numbers(request: web.Request, error: ProxyError, backend: Backend, model: str) -> ProxyError:
    """An overflow the backend told without both numbers, completed from the proxy's own estimate of the prompt
    and the context window (configured, else as the backend reports it), so that Claude Code can read them and
    compact."""
    if error.overflow is None or all(error.overflow):
        return error
    prompt, window = error.overflow
    window = window or await model_window(request, backend, model)
    return prompt_too_long(prompt or request[ESTIMATE_KEY](), window, error.overflow_detail)


async def model_window(request: web.Request, backend: Backend, model: str) -> int | None:
    """The context window of ``model`` on ``backend``: configured, else as the backend reports it."""
    return request[CONFIG_KEY].routing.window(backend, model) or await reported_window(request, backend, model)


# Where servers report a model's context window: an entry of GET {url}/models (vLLM's max_model_len,
# OpenRouter's context_length, Anthropic's max_input_tokens), else llama.cpp's GET /props.
WINDOW_FIELDS = ("max_model_len", "context_length", "context_window", "max_input_tokens")


def listed_models(data: Any) -> dict[str, int | None]:
    """Model ids of a model list (OpenAI's, Anthropic's, or a bare list), each with the window it gives."""
    items = data.get("data") if isinstance(data, dict) else data
    out: dict[str, int | None] = {}
    for m in _list(items):
        name = m.get("id") or m.get("name") if isinstance(m, dict) else None
        if isinstance(name, str):
            out[name] = next((token_count(m.get(f)) for f in WINDOW_FIELDS if token_count(m.get(f))), None)
    return out


def remember_windows(request: web.Request, backend: Backend, windows: dict[str, int | None]) -> None:
    cache = request.app[WINDOWS_KEY]
    if len(cache) + len(windows) > 4096:  # bounded: a model list can be long, and keys may be forwarded
        cache.clear()
    cache.update(((backend.name, m), w) for m, w in windows.items() if w)


async def reported_window(request: web.Request, backend: Backend, model: str) -> int | None:
    """The model's context window as the backend reports it; asked once per model, and remembered."""
    cache = request.app[WINDOWS_KEY]
    if (backend.name, model) in cache or backend.dialect != "openai":
        return cache.get((backend.name, model))
    upstream = request.app[UPSTREAM_KEY]
    headers = upstream.openai_headers(backend, backend_key(request, backend), False)
    remember_windows(request, backend, listed_models(await _get_json(upstream, backend, backend.url + "/models",
                                                                     headers)))
    if cache.get((backend.name, model)) is None:
        props = await _get_json(upstream, backend, backend.url.removesuffix("/v1") + "/props", headers)
        settings = props.get("default_generation_settings") if isinstance(props, dict) else None
        window = token_count((settings if isinstance(settings, dict) else props or {}).get("n_ctx"))
        cache[(backend.name, model)] = window
    return cache[(backend.name, model)]


async def _get_json(upstream: Upstream, backend: Backend, url: str, headers: dict[str, str]) -> Any:
    assert upstream.session is not None
    try:
        async with upstream.session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=5),
                                        **upstream.network(backend)) as resp:
            return await resp.json(loads=json_loads, content_type=None) if resp.status == 200 else None
    except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
        log.info("backend answer from %s unavailable: %s", redact_url(url), _describe(exc))
        return None


async def with_fallbacks(request: web.Request, candidates: list[tuple[Backend, str]], attempt: Any) -> Any:
    """Try ``attempt(backend, model)`` on each candidate in turn. A 429, 5xx or connection failure before the
    first byte reached the client moves on to the next; anything else (a 4xx, or a stream already under way)
    is final."""
    rlog = request[LOG_KEY]
    upstream = request.app[UPSTREAM_KEY]
    # A backend cooling down after failing again and again goes last: tried only when its fallbacks fail too.
    candidates = sorted(candidates, key=lambda c: upstream.cooled(c[0]))
    for i, (backend, model) in enumerate(candidates):
        rlog.backend, rlog.backend_dialect, rlog.model = backend.name, backend.dialect, model
        try:
            answer = await attempt(backend, model)
        except ProxyError as exc:
            upstream.record(backend, failed=exc.status >= 500)
            if i + 1 == len(candidates) or not (exc.status == 429 or exc.status >= 500):
                raise await with_overflow_numbers(request, exc, backend, model) from None
            nxt = candidates[i + 1]
            log.warning("%s backend %s (%s) failed: %s; falling back to %s (%s)", request[REQUEST_ID_KEY],
                        backend.name, model, exc.message, nxt[0].name, nxt[1])
            request.app[METRICS_KEY].count("claude_proxy_fallbacks_total", backend=backend.name)
        else:
            upstream.record(backend, failed=False)
            return answer
    raise AssertionError("unreachable: the last candidate raises or returns")


# ---- server tools the proxy runs (web search, tool search) ----------------------------------------------
# A backend that cannot run Anthropic's server tools gets them as functions. When the model calls one, the proxy
# runs it, gives the client the server_tool_use and result blocks Anthropic's API would, gives the model the
# result, and asks again, until the model answers otherwise. A forced tool_choice holds for the first ask only.

SERVER_TOOL_ROUNDS = 10  # answers of the backend in one request, at most, before the turn is paused


def server_tools_of(body: dict) -> dict[str, tuple[str, dict]]:
    """The server tools of a request that the proxy runs: function name → (PROXY_SERVER_TOOLS kind, tool)."""
    return {t["name"]: (kind, t) for t in _list(body.get("tools")) for kind in [proxy_server_tool(t)]
            if kind and isinstance(t.get("name"), str)}


@dataclass
class ServerToolRun:
    """One server tool call the proxy ran: the blocks the client gets, what the model is told, and the
    functions it gained (the tools a tool search loaded)."""
    call: dict  # the model's tool_use block
    blocks: list[dict]
    told: str
    loaded: list[dict] = field(default_factory=list)


async def run_server_tool(request: web.Request, kind: str, tool: dict, call: dict, uses: dict[str, int],
                          body: dict) -> ServerToolRun:
    query = call["input"].get("query")
    use = {"type": "server_tool_use", "id": "srvtoolu_" + secrets.token_hex(12), "name": tool["name"],
           "input": call["input"]}
    uses[tool["name"]] = uses.get(tool["name"], 0) + 1
    if kind == "web_search_":
        found = await _searched(request, tool, query, uses[tool["name"]])
        if isinstance(found, str):
            return ServerToolRun(call, [use, {"type": "web_search_tool_result", "tool_use_id": use["id"], "content": {
                "type": "web_search_tool_result_error", "error_code": found}}], f"Web search error: {found}")
        return ServerToolRun(call, [use, {"type": "web_search_tool_result", "tool_use_id": use["id"], "content": [
            {"type": "web_search_result", "title": r["title"], "url": r["url"], "page_age": r["page_age"],
             "encrypted_content": base64.b64encode(r["snippet"].encode()).decode()} for r in found]}],
            "\n\n".join(f"{i}. {r['title']}\n{r['url']}\n{r['snippet']}" for i, r in enumerate(found, 1))
            or "No results.")
    try:
        names = find_tools(_list(body.get("tools")), query, kind) if isinstance(query, str) and query else None
    except re.error:
        names = None
    if names is None:
        return ServerToolRun(call, [use, {"type": "tool_search_tool_result", "tool_use_id": use["id"], "content": {
            "type": "tool_search_tool_result_error", "error_code": "invalid_tool_input"}}],
            "Tool search error: invalid_tool_input (the query must be a non-empty, valid pattern)")
    tools = [t for t in _list(body.get("tools")) if isinstance(t, dict) and t.get("name") in names]
    loaded, _, _ = _convert_tools(tools, None, openai_tool_names(body), set(names))
    return ServerToolRun(call, [use, {"type": "tool_search_tool_result", "tool_use_id": use["id"], "content": {
        "type": "tool_search_tool_search_result", "tool_references": [
            {"type": "tool_reference", "tool_name": n} for n in names]}}],
        f"Tools loaded: {', '.join(names)}" if names else "No tools matched.", loaded)


async def _searched(request: web.Request, tool: dict, query: Any, use: int) -> list[dict] | str:
    """The results of one web search, filtered by the tool's domains, or its error code."""
    search = request[CONFIG_KEY].search
    max_uses = tool.get("max_uses")
    if isinstance(max_uses, int) and use > max_uses:
        return "max_uses_exceeded"
    if not isinstance(query, str) or not query.strip():
        return "invalid_tool_input"
    if search is None:
        log.warning("%s a web search was asked for (%r) but no provider is configured: start the proxy with "
                    "--web-search searxng|brave|tavily (see the README, 'Web search')", request[REQUEST_ID_KEY],
                    query[:100])
        return "unavailable"
    upstream = request.app[UPSTREAM_KEY]
    assert upstream.session is not None
    found = await web_search(upstream.session, search, query, tool, upstream.env_proxy(search.url))
    if isinstance(found, str):
        return found
    allowed, blocked = _list(tool.get("allowed_domains")), _list(tool.get("blocked_domains"))
    return [r for r in found if _domain_in(r["url"], allowed, True) and not _domain_in(r["url"], blocked, False)][
        :search.max_results]


def _domain_in(url: str, domains: list, empty: bool) -> bool:
    """Whether ``url``'s host is one of ``domains`` or under one (``empty`` when there are none)."""
    if not domains:
        return empty
    host = (urlsplit(url).hostname or "").lower()
    return any(isinstance(d, str) and (host == d.lower().strip(".") or host.endswith("." + d.lower().strip(".")))
               for d in domains)


def _next_ask(payload: dict, message: dict, runs: list[ServerToolRun], servers: dict[str, tuple[str, dict]],
              uses: dict[str, int], names: dict[str, str]) -> dict:
    """The request that continues a conversation after the model's server tool calls: its answer (translated
    as any assistant turn is, thought signatures and reasoning included) and what the calls gave, the functions
    they loaded, and no more forced tool_choice (the model would search until max_uses); a tool whose uses are
    spent is no longer offered."""
    turns = [_assistant_message(message["content"], "answer", names)] + [
        {"role": "tool", "tool_call_id": split_tool_id(sanitize_tool_id(r.call["id"]))[0], "content": r.told}
        for r in runs]
    spent = {name for name, (_, tool) in servers.items()
             if isinstance(tool.get("max_uses"), int) and uses.get(name, 0) >= tool["max_uses"]}
    tools = [t for t in payload.get("tools", []) if t["function"]["name"] not in spent]
    tools += [t for r in runs for t in r.loaded if t not in tools]
    ask = {k: v for k, v in payload.items() if k not in ("tool_choice", "tools", "parallel_tool_calls")}
    return {**ask, "messages": payload["messages"] + turns, **({"tools": tools} if tools else {})}


async def server_tool_rounds(request: web.Request, backend: Backend, key: str | None, payload: dict, body: dict,
                             first: dict, translate: Callable[[Any], dict]) -> AsyncIterator[dict]:
    """Each answer of the backend, from ``first`` on, as an Anthropic message whose server tool calls are
    replaced by their use and result blocks; ``stop_reason`` None on all but the last. ``translate`` turns the
    backend's JSON into such a message."""
    config = request[CONFIG_KEY]
    servers = server_tools_of(body)
    names = openai_tool_names(body)
    uses: dict[str, int] = {}
    message = first
    for _ in range(SERVER_TOOL_ROUNDS):
        calls = [b for b in message["content"] if b["type"] == "tool_use" and b["name"] in servers]
        if not calls:
            yield message
            return
        runs = [await run_server_tool(request, *servers[c["name"]], c, uses, body) for c in calls]
        by_call = {id(r.call): r.blocks for r in runs}
        content = [x for b in message["content"] for x in by_call.get(id(b), [b])]
        if any(b["type"] == "tool_use" for b in content):  # the client has its own tools to run as well
            yield {**message, "content": content, "stop_reason": "tool_use"}
            return
        yield {**message, "content": content, "stop_reason": None}
        payload = _next_ask(payload, message, runs, servers, uses, names)
        resp = await request.app[UPSTREAM_KEY].post_chat(backend, payload, key)
        message = translated_answer(config, backend, translate, await _read_backend_json(resp, config, backend))
    # As Anthropic's API does after its own limit of server tool rounds: the client may continue the turn.
    yield {**message, "content": [b for b in message["content"] if b["type"] != "tool_use"],
           "stop_reason": "pause_turn"}


async def composed_message(rounds: AsyncIterator[dict]) -> dict:
    """The rounds of a server tool conversation as the one message Anthropic's API would answer with."""
    message: dict = {}
    async for answer in rounds:
        if not message:
            message = {**answer, "usage": dict(answer["usage"])}
            continue
        message["content"] = message["content"] + answer["content"]
        for k in ("input_tokens", "output_tokens"):
            message["usage"][k] = message["usage"].get(k, 0) + answer["usage"].get(k, 0)
        message["stop_reason"], message["stop_sequence"] = answer["stop_reason"], answer.get("stop_sequence")
    message["usage"]["server_tool_use"] = server_tool_usage(message["content"])
    return message


def server_tool_usage(content: list[dict]) -> dict[str, int]:
    return {"web_search_requests": sum(1 for b in content if b["type"] == "web_search_tool_result"),
            "web_fetch_requests": 0}


async def answer_with_server_tools(request: web.Request, backend: Backend, key: str | None, payload: dict,
                                   body: dict, translate: Callable[[Any], dict],
                                   client: tuple[Callable[[Any], Any], Callable[[dict], dict]] | None = None
                                   ) -> web.StreamResponse:
    """A request offering server tools the proxy runs: the backend is asked for whole answers (the tools run
    between them); a streaming client gets each answer's blocks as soon as it is complete. ``client``: for a
    client of another dialect than Anthropic's, how its stream translator wraps the Anthropic one and how a
    whole message is rendered for it."""
    config = request[CONFIG_KEY]
    wrap, render = client or ((lambda t: t), (lambda m: m))
    payload = {k: v for k, v in payload.items() if k not in ("stream", "stream_options")}
    resp = await request.app[UPSTREAM_KEY].post_chat(backend, payload, key)
    first = translated_answer(config, backend, translate, await _read_backend_json(resp, config, backend))
    rounds = server_tool_rounds(request, backend, key, payload, body, first, translate)
    if body.get("stream"):
        translator = wrap(ComposedStream(body["model"], first["usage"]["input_tokens"], first["id"]))
        return await pump_stream(request, None, backend, translator, _one_by_one(rounds))
    message = await composed_message(rounds)
    rlog = request[LOG_KEY]
    rlog.input_tokens, rlog.output_tokens = message["usage"]["input_tokens"], message["usage"]["output_tokens"]
    return web.Response(text=json_dumps(render(message)), content_type="application/json")


async def _one_by_one(items: AsyncIterator[Any]) -> AsyncIterator[list[Any]]:
    async for item in items:
        yield [item]


# ---- Anthropic front door -----------------------------------------------------------------------------

async def read_model_request(request: web.Request, validate: Any) -> tuple[dict, RequestLog]:
    """The body of a /messages or /chat/completions call, validated, with the log line told what was asked."""
    body = await read_json(request)
    validate(body)
    request[ESTIMATE_KEY] = lambda: count_request_tokens(body)  # Anthropic-shaped or not, a fair count
    rlog = request[LOG_KEY]
    rlog.requested, rlog.stream = body["model"], bool(body.get("stream"))
    return body, rlog


async def handle_messages(request: web.Request) -> web.StreamResponse:
    config = request[CONFIG_KEY]
    body, rlog = await read_model_request(request, validate_messages_request)
    sent_names = openai_tool_names(body)  # client's tool name → backend's, once for every fallback
    names = {v: k for k, v in sent_names.items()}  # and back, for the answer
    run_tools = bool(server_tools_of(body))  # web search, tool search: the proxy runs them

    async def attempt(backend: Backend, model: str) -> web.StreamResponse:
        key = backend_key(request, backend)
        if backend.dialect == "anthropic":
            return await passthrough(request, body, backend, model, key)
        if backend.dialect == "responses":
            return await answer_from_responses(request, backend, model, key, body, sent_names, None)
        payload = anthropic_to_openai_request(body, model, config.max_tokens, config.reasoning_effort, sent_names)
        estimate = count_request_tokens(body)
        offered = offered_functions(payload)  # calls the model writes as text count only for these
        if run_tools:
            return await answer_with_server_tools(request, backend, key, payload, body, lambda data: (
                openai_to_anthropic_response(data, body["model"], names, body.get("stop_sequences"), estimate,
                                             offered)))
        translator = OpenAIToAnthropicStream(body["model"], estimate, names, body.get("stop_sequences"),
                                             offered_tools=offered) \
            if body.get("stream") else None  # made before the backend is asked: nothing can fail between
        resp = await request.app[UPSTREAM_KEY].post_chat(backend, payload, key)
        if translator is not None:
            replay = "json" in resp.headers.get("content-type", "")
            return await pump_stream(request, resp, backend, translator, json_as_sse(resp) if replay else
                                     iter_sse(resp))
        data = await _read_backend_json(resp, config, backend)
        message = translated_answer(config, backend, openai_to_anthropic_response, data, body["model"], names,
                                    body.get("stop_sequences"), estimate, offered)
        rlog.input_tokens, rlog.output_tokens = message["usage"]["input_tokens"], message["usage"]["output_tokens"]
        rlog.cache_read_tokens = message["usage"].get("cache_read_input_tokens")
        return web.Response(text=json_dumps(message), content_type="application/json")

    return await with_fallbacks(request, request_candidates(request, body), attempt)


async def handle_count_tokens(request: web.Request) -> web.Response:
    config = request[CONFIG_KEY]
    body = await read_json(request)
    validate_messages_request(body, count_only=True)
    backend, model = request_candidates(request, body)[0]
    if backend.dialect == "anthropic":  # the backend can count exactly
        resp = await request.app[UPSTREAM_KEY].post_anthropic(
            backend, {**body, "model": model}, backend_key(request, backend), request.headers.get("anthropic-version"),
            request.headers.get("anthropic-beta"), path="/messages/count_tokens")
        return web.json_response(await _read_backend_json(resp, config, backend), dumps=json_dumps)
    return web.json_response({"input_tokens": count_request_tokens(body)})


async def answer_from_responses(request: web.Request, backend: Backend, model: str, key: str | None,
                                anthropic_body: dict, names: dict[str, str] | None,
                                chat_body: dict | None) -> web.StreamResponse:
    """A Responses backend's answer to an Anthropic-shaped request, in the client's dialect: Anthropic's, or,
    for a Chat Completions client (``chat_body``, the request as it sent it), Chat Completions' by way of the
    hub."""
    config = request[CONFIG_KEY]
    names = openai_tool_names(anthropic_body) if names is None else names
    back = {v: k for k, v in names.items()}
    payload = anthropic_to_responses_request(anthropic_body, model, config.max_tokens, config.reasoning_effort, names)
    estimate = count_request_tokens(anthropic_body)
    client_model = (chat_body or anthropic_body)["model"]
    chat_names = {v: k for k, v in claude_tool_names(chat_body).items()} if chat_body else {}
    json_tool = (anthropic_body.get("tool_choice") or {}).get("name") == JSON_TOOL  # response_format, as a tool
    translator: Any = None
    if payload.get("stream"):  # made before the backend is asked: nothing can fail between
        translator = ResponsesToAnthropicStream(client_model, estimate, back)
        if chat_body is not None:
            include_usage = bool((chat_body.get("stream_options") or {}).get("include_usage"))
            translator = Chained(translator, AnthropicToOpenAIStream(client_model, include_usage, chat_names,
                                                                     json_tool))
    resp = await request.app[UPSTREAM_KEY].post_chat(backend, payload, key)
    if translator is not None:
        return await pump_stream(request, resp, backend, translator, iter_sse(resp))
    data = await _read_backend_json(resp, config, backend)
    answer = translated_answer(config, backend, responses_to_anthropic_response, data, client_model, back, estimate)
    if chat_body is not None:
        answer = translated_answer(config, backend, anthropic_to_openai_response, answer, client_model, chat_names,
                                   json_tool)
        rlog_counts = answer["usage"]["prompt_tokens"], answer["usage"]["completion_tokens"]
    else:
        rlog_counts = answer["usage"]["input_tokens"], answer["usage"]["output_tokens"]
    request[LOG_KEY].input_tokens, request[LOG_KEY].output_tokens = rlog_counts
    return web.Response(text=json_dumps(answer), content_type="application/json")


# ---- OpenAI front door --------------------------------------------------------------------------------

async def handle_chat_completions(request: web.Request) -> web.StreamResponse:
    config = request[CONFIG_KEY]
    body, rlog = await read_model_request(request, validate_chat_request)
    sent_names = claude_tool_names(body)  # client's function name → backend's, once for every fallback
    names = {v: k for k, v in sent_names.items()}  # and back, for the answer

    async def attempt(backend: Backend, model: str) -> web.StreamResponse:
        key = backend_key(request, backend)
        if backend.dialect == "openai":
            return await passthrough(request, body, backend, model, key)
        payload = openai_to_anthropic_request(body, model, config.max_tokens, names_in=sent_names)
        if backend.dialect == "responses":  # through the hub: this request as Anthropic's, then as Responses'
            return await answer_from_responses(request, backend, model, key, payload, None, body)
        json_tool = (payload.get("tool_choice") or {}).get("name") == JSON_TOOL
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        translator = AnthropicToOpenAIStream(body["model"], include_usage, names, json_tool) \
            if body.get("stream") else None  # made before the backend is asked: nothing can fail between
        resp = await request.app[UPSTREAM_KEY].post_anthropic(backend, payload, key)
        if translator is not None:
            return await pump_stream(request, resp, backend, translator, iter_sse(resp))
        data = await _read_backend_json(resp, config, backend)
        answer = translated_answer(config, backend, anthropic_to_openai_response, data, body["model"], names,
                                   json_tool)
        rlog.input_tokens = answer["usage"]["prompt_tokens"]
        rlog.output_tokens = answer["usage"]["completion_tokens"]
        return web.Response(text=json_dumps(answer), content_type="application/json")

    return await with_fallbacks(request, request_candidates(request, body), attempt)


# ---- Responses front door (Codex CLI, the openai SDK's client.responses) ------------------------------------

async def handle_responses(request: web.Request) -> web.StreamResponse:
    config = request[CONFIG_KEY]
    body, rlog = await read_model_request(request, validate_responses_request)
    names = responses_tool_names(body)  # client's tool name → the hub's, once for every fallback
    back = {v: k for k, v in names.items()}
    kinds = tool_kinds(body)

    async def attempt(backend: Backend, model: str) -> web.StreamResponse:
        key = backend_key(request, backend)
        if backend.dialect == "responses":
            return await passthrough(request, body, backend, model, key)
        hub = responses_to_anthropic_request(body, model, config.max_tokens, names, backend.dialect != "anthropic",
                                             web_search=config.search is not None and backend.dialect == "openai")
        estimate = count_request_tokens(hub)
        upstream = request.app[UPSTREAM_KEY]
        final = AnthropicToResponsesStream(body, back, kinds) if body.get("stream") else None
        if backend.dialect == "anthropic":
            resp = await upstream.post_anthropic(backend, hub, key)
            if final is not None:
                return await pump_stream(request, resp, backend, final, iter_sse(resp))
            message = await _read_backend_json(resp, config, backend)
        else:
            sent = openai_tool_names(hub)
            payload = anthropic_to_openai_request(hub, model, config.max_tokens, config.reasoning_effort, sent)
            offered = offered_functions(payload)
            hub_names = {v: k for k, v in sent.items()}
            if server_tools_of(hub):  # hosted web search, run by the proxy with the configured provider
                return await answer_with_server_tools(request, backend, key, payload, hub, lambda data: (
                    openai_to_anthropic_response(data, body["model"], hub_names, None, estimate, offered)), (
                    lambda t: Chained(t, AnthropicToResponsesStream(body, back, kinds)),
                    lambda m: anthropic_to_responses_response(m, body, back, kinds)))
            if final is not None:
                first = OpenAIToAnthropicStream(body["model"], estimate, hub_names, offered_tools=offered)
                resp = await upstream.post_chat(backend, payload, key)
                replay = "json" in resp.headers.get("content-type", "")
                return await pump_stream(request, resp, backend, Chained(first, final),
                                         json_as_sse(resp) if replay else iter_sse(resp))
            resp = await upstream.post_chat(backend, payload, key)
            message = translated_answer(config, backend, openai_to_anthropic_response,
                                        await _read_backend_json(resp, config, backend), body["model"], hub_names,
                                        None, estimate, offered)
        answer = translated_answer(config, backend, anthropic_to_responses_response, message, body, back, kinds)
        rlog.input_tokens, rlog.output_tokens = answer["usage"]["input_tokens"], answer["usage"]["output_tokens"]
        return web.Response(text=json_dumps(answer), content_type="application/json")

    return await with_fallbacks(request, request_candidates(request, body), attempt)


# ---- pass-through (client and backend speak the same dialect) ---------------------------------------------

_FINISHED = {"anthropic": re.compile(rb'event: message_stop|"type":\s*"message_stop"|event: error'),
             "openai": re.compile(rb'\[DONE\]|"finish_reason"\s*:\s*"'),
             "responses": re.compile(rb'"type":\s*"(?:response\.(?:completed|incomplete|failed)|error)"')}


class Relay:
    """The pump's "translator" for pass-through: bytes go out as they came. It only watches for the end of
    the answer, so that a stream cut off before it gets an error frame of the client's dialect."""
    encode = staticmethod(b"".join)

    def __init__(self, dialect: str):
        self.client_dialect = dialect
        self.finished_mark = _FINISHED[dialect]
        self.finished = False
        self.tail = b""  # the finish mark may be split across reads
        self.recent: collections.deque[bytes] = collections.deque()  # the last RELAY_TAIL bytes: the usage
        self.recent_size = 0
        self.at_boundary = True
        self.done = False
        self.failed: ProxyError | None = None

    def start(self) -> list[bytes]:
        return []

    def receive(self, chunk: bytes) -> list[bytes]:
        self.at_boundary = chunk.endswith(b"\n\n")
        if not self.finished:
            window = self.tail + chunk
            self.finished = bool(self.finished_mark.search(window))
            self.tail = window[-64:]
        self.recent.append(chunk)
        self.recent_size += len(chunk)
        while self.recent_size - len(self.recent[0]) >= RELAY_TAIL:
            self.recent_size -= len(self.recent.popleft())
        return [chunk]

    def end(self) -> list[bytes]:
        if self.finished:
            self.done = True
            return []
        return self.fail(ProxyError(502, "the backend closed the stream before finishing the answer", "api_error"))

    def fail(self, error: ProxyError) -> list[bytes]:
        if self.done:
            return []
        self.done = True
        self.failed = error
        return [b"\n\n" + error_frame(error, self.client_dialect)]

    def usage_counts(self) -> tuple[int | None, int | None]:
        """The last counts the relayed stream gave (its end carries the usage in every dialect)."""
        counts = []
        for names in (rb'"(?:input_tokens|prompt_tokens)"', rb'"(?:output_tokens|completion_tokens)"'):
            found = re.findall(names + rb"\s*:\s*(\d+)", b"".join(self.recent))
            counts.append(int(found[-1]) if found else None)
        return counts[0], counts[1]


RELAY_TAIL = 8192  # bytes of a relayed stream kept: its last usage fits


async def iter_raw(resp: aiohttp.ClientResponse) -> AsyncIterator[list[bytes]]:
    async for chunk in resp.content.iter_any():
        yield [chunk]


async def passthrough(request: web.Request, body: dict, backend: Backend, model: str,
                      key: str | None) -> web.StreamResponse:
    """Forward a request to a backend of the same dialect: the model mapped, the key injected, the answer
    relayed byte for byte."""
    config = request[CONFIG_KEY]
    upstream = request.app[UPSTREAM_KEY]
    rlog = request[LOG_KEY]
    payload = cap_output_tokens({**body, "model": model}, config.max_tokens)
    if backend.dialect == "anthropic":
        resp = await upstream.post_anthropic(backend, payload, key, request.headers.get("anthropic-version"),
                                             request.headers.get("anthropic-beta"))
    else:
        resp = await upstream.post_chat(backend, payload, key)
    if body.get("stream"):
        return await pump_stream(request, resp, backend, Relay(backend.dialect), iter_raw(resp))
    async with resp:
        try:
            raw = await resp.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise backend_failure(exc, config, backend) from None
    if log.isEnabledFor(logging.INFO):  # parsed only for the log line's token counts
        try:
            usage = json_loads(raw).get("usage") or {}
            rlog.input_tokens = usage.get("input_tokens", usage.get("prompt_tokens"))
            rlog.output_tokens = usage.get("output_tokens", usage.get("completion_tokens"))
        except (ValueError, AttributeError):
            pass
    return web.Response(body=raw, status=resp.status, content_type="application/json")


# ---- the original worker's URL routing, behind an allowlist ------------------------------------------------

URL_ROUTE = re.compile(r"^/(https?)/([^/]+)/(?:(.*)/)?([^/]+)/v1/messages(/count_tokens)?/?$")


async def handle_url_routed(request: web.Request) -> web.StreamResponse:
    """``/https/api.groq.com/openai/v1/<model>/v1/messages``: the backend named in the path (the original
    Worker's form), only for hosts in ``--allow-url-routing``. A configured key goes only to the exact URL it
    was configured for; any other allowed host gets the client's own key."""
    config = request[CONFIG_KEY]
    m = URL_ROUTE.match(request.path)
    if not m:
        raise web.HTTPNotFound()
    if not config.allow_url_routing:
        raise ProxyError(404, "backend-in-the-path URLs are off; start the proxy with --allow-url-routing HOST to "
                              "allow them", "not_found_error")
    scheme, host, path, model, count = m.groups()
    host = host.lower()
    hostname = host[1:].split("]")[0] if host.startswith("[") else host.rsplit(":", 1)[0]
    if host not in config.allow_url_routing and hostname not in config.allow_url_routing:
        raise ProxyError(403, f"host {hostname!r} is not in --allow-url-routing", "permission_error")
    base = normalize_backend_url(f"{scheme}://{host}/{path or ''}")
    same = [b for b in config.backends + (config.routing.primary,) if b.url == base and b.dialect == "openai"]
    backend = Backend(f"url:{host}", base, same[0].api_key if same else None, "openai")
    request[URL_ROUTE_KEY] = (backend, model)
    return await (handle_count_tokens(request) if count else handle_messages(request))


# ---- models and probes ----------------------------------------------------------------------------------

async def upstream_models(request: web.Request) -> list[str]:
    """Model ids the default backend lists, cached for five minutes per key; [] when it cannot say. The windows
    the list gives are remembered."""
    config = request[CONFIG_KEY]
    backend = config.routing.primary
    key = backend_key(request, backend)
    cache = request.app[MODELS_CACHE_KEY]
    cache_key = hashlib.sha256((key or "").encode()).hexdigest()
    hit = cache.get(cache_key)
    if hit and time.monotonic() - hit[0] < MODELS_TTL:
        return hit[1]
    upstream = request.app[UPSTREAM_KEY]
    assert upstream.session is not None
    if backend.dialect == "anthropic":
        url, headers = backend.anthropic_url + "/models?limit=1000", upstream.anthropic_headers(backend, key, None,
                                                                                                 None)
    else:
        url, headers = backend.url + "/models", upstream.openai_headers(backend, key, False)
    listed: dict[str, int | None] = {}
    try:
        async with upstream.session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=10),
                                        **upstream.network(backend)) as resp:
            if resp.status == 200:
                listed = listed_models(await resp.json(loads=json_loads, content_type=None))
    except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
        log.info("backend model list unavailable: %s", _describe(exc))
    remember_windows(request, backend, listed)
    ids = list(listed)
    if len(cache) >= 1024:  # one entry per client key when keys are forwarded: keep it bounded
        cache.clear()
    cache[cache_key] = (time.monotonic(), ids)
    return ids


async def handle_models(request: web.Request) -> web.Response:
    """The models clients may ask for, each with its context window where known (Anthropic's
    ``max_input_tokens``; ``context_length`` for OpenAI clients, as OpenRouter lists it)."""
    routing = request[CONFIG_KEY].routing
    listed = await upstream_models(request)  # first: it remembers the windows the list gives
    windows: dict[str, int | None] = {}
    for client, backend, model in routing.mapped_models():
        windows.setdefault(client, await model_window(request, backend, model))
    for model in listed:
        windows.setdefault(model, routing.window(routing.primary, model) or request.app[WINDOWS_KEY].get(
            (routing.primary.name, model)))
    ids = list(windows)
    if request[DIALECT_KEY] == "openai":
        owner = "anthropic" if routing.primary.dialect == "anthropic" else "claude_proxy"
        return web.json_response({"object": "list", "data": [
            {"id": i, "object": "model", "created": MODEL_CREATED, "owned_by": owner}
            | ({"context_length": windows[i]} if windows[i] else {}) for i in ids]}, dumps=json_dumps)
    created_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(MODEL_CREATED))
    data = [{"type": "model", "id": i, "display_name": i, "created_at": created_at, "lifecycle": "active"}
            | ({"max_input_tokens": windows[i]} if windows[i] else {}) for i in ids]
    return web.json_response({"data": data, "has_more": False, "first_id": ids[0] if ids else None,
                              "last_id": ids[-1] if ids else None}, dumps=json_dumps)


async def handle_metrics(request: web.Request) -> web.Response:
    """The Prometheus text format (it needs the proxy key when one is set, as every path but the probes do)."""
    text = request.app[METRICS_KEY].prometheus(max(0, len(request.app[STATE_KEY].inflight) - 1))
    return web.Response(body=text.encode(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def handle_usage(request: web.Request) -> web.Response:
    """Totals since start by backend and model, and by Claude Code session (``?session=ID``: that one only)."""
    metrics = request.app[METRICS_KEY]
    session = request.query.get("session")
    if session is not None:
        return web.json_response(metrics.usage.get(("session", session)), dumps=json_dumps)
    return web.json_response({
        "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(metrics.started)),
        "by_model": [{"backend": k.split("/", 1)[0], **v, "model": k.split("/", 1)[1]}
                     for (kind, k), v in sorted(metrics.usage.items()) if kind == "model"],
        "by_session": {k: v for (kind, k), v in metrics.usage.items() if kind == "session"}}, dumps=json_dumps)


async def handle_root(request: web.Request) -> web.Response:
    return web.json_response({"name": "claude_proxy", "version": __version__, "status": "ok"})


async def handle_health(request: web.Request) -> web.Response:
    if request.app[STATE_KEY].draining:
        return web.json_response({"status": "shutting_down"}, status=503)
    return web.json_response({"status": "ok", "backend_dialect": request[CONFIG_KEY].routing.primary.dialect})


def make_app(config: Config) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=config.max_body)
    upstream = Upstream(config)
    app[UPSTREAM_KEY] = upstream
    app[MODELS_CACHE_KEY] = {}
    app[WINDOWS_KEY] = {}
    app[STATE_KEY] = ServerState(config)
    app[METRICS_KEY] = upstream.metrics = Metrics()

    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        await upstream.start()
        yield
        await upstream.close()

    app.cleanup_ctx.append(lifecycle)
    app.on_response_prepare.append(add_cors_headers)
    app.router.add_post("/v1/messages", handle_messages)
    app.router.add_post("/v1/messages/count_tokens", handle_count_tokens)
    app.router.add_post("/v1/chat/completions", handle_chat_completions)
    app.router.add_post("/chat/completions", handle_chat_completions)  # clients configured without /v1
    app.router.add_post("/v1/responses", handle_responses)
    app.router.add_post("/responses", handle_responses)
    app.router.add_get("/v1/models", handle_models)
    app.router.add_get("/models", handle_models)
    app.router.add_get("/health", handle_health)
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_get("/usage", handle_usage)
    app.router.add_get("/", handle_root)  # GET routes answer HEAD too
    app.router.add_get("/api/hello", handle_root)
    app.router.add_post(r"/{scheme:https?}/{tail:.+}", handle_url_routed)
    return app


async def drain(app: web.Application, site: web.BaseSite, timeout: float) -> None:
    """Graceful shutdown: stop accepting, let in-flight requests finish for ``timeout`` seconds, then cut the
    rest (their streams get an error event saying why)."""
    state = app[STATE_KEY]
    state.draining = True
    await site.stop()
    pending = set(state.inflight)
    if pending:
        log.info("shutting down: waiting up to %gs for %d request(s)", timeout, len(pending))
        _, pending = await asyncio.wait(pending, timeout=timeout)
    if pending:
        log.warning("shutting down: cutting %d request(s) still running after %gs", len(pending), timeout)
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=5)


# ======================================================================================================
# 8. CLI
# ======================================================================================================

def proxy_base_url(config: Config) -> str:
    host = config.host
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://{host if ':' not in host else '[' + host + ']'}:{config.port}"


def configured_window(config: Config, model: str | None) -> int | None:
    """The configured window of the model Claude Code will ask for (its Sonnet by default)."""
    return config.routing.window(*config.routing.candidates(model or CLAUDE_TIER_NAMES["sonnet"])[0])


def picker_names(config: Config) -> dict[str, str]:
    """What Claude Code's /model picker shows for its Opus, Sonnet and Haiku entries: the backend model each
    goes to, not Claude's names and prices. Each entry keeps a Claude model id, so routing stays in the proxy."""
    env = {}
    for tier, claude_id in CLAUDE_TIER_NAMES.items():
        backend, target = config.routing.candidates(claude_id)[0]
        if target == claude_id:
            continue  # not mapped (Claude itself, or a backend that takes the name): nothing to rename
        window = config.routing.window(backend, target)
        env[f"ANTHROPIC_DEFAULT_{tier.upper()}_MODEL"] = claude_id
        env[f"ANTHROPIC_DEFAULT_{tier.upper()}_MODEL_NAME"] = target
        env[f"ANTHROPIC_DEFAULT_{tier.upper()}_MODEL_DESCRIPTION"] = f"{target} · via claude_proxy ({backend.name})" \
            + (f" · {window // 1000}k context" if window else "")
    return env


def claude_env(config: Config, base_url: str | None, key: str | None, model: str | None = None,
               small_model: str | None = None, tool_search: bool = False,
               picker_model: str | None = None) -> dict[str, str]:
    """The environment Claude Code needs to use this proxy."""
    env = {"ANTHROPIC_BASE_URL": (base_url or proxy_base_url(config)).rstrip("/"),
           "ANTHROPIC_API_KEY": key or (config.proxy_keys[0] if config.proxy_keys else "claude_proxy")}
    window = configured_window(config, model)
    if window:  # so Claude Code compacts before the backend's window is full: it reads the first for every
        # model name, from 100000 to 1000000 only; the second exactly, for names that do not start with claude-
        env["CLAUDE_CODE_AUTO_COMPACT_WINDOW"] = str(min(max(window, 100_000), 1_000_000))
        env["CLAUDE_CODE_MAX_CONTEXT_TOKENS"] = str(window)
    if model:
        env["ANTHROPIC_MODEL"] = model
    env.update(picker_names(config))
    if small_model:
        env["ANTHROPIC_DEFAULT_HAIKU_MODEL"] = small_model
        env["ANTHROPIC_SMALL_FAST_MODEL"] = small_model
    if tool_search:  # behind a base URL that is not Anthropic's, Claude Code loads every MCP tool up front
        env["ENABLE_TOOL_SEARCH"] = "true"
    if picker_model:  # one more entry in Claude Code's /model picker, e.g. "deepseek,deepseek-reasoner"
        backend, _, model = picker_model.partition(",")
        env["ANTHROPIC_CUSTOM_MODEL_OPTION"] = picker_model
        env["ANTHROPIC_CUSTOM_MODEL_OPTION_NAME"] = model or picker_model
        env["ANTHROPIC_CUSTOM_MODEL_OPTION_DESCRIPTION"] = f"{model} on {backend}, through claude_proxy" if model \
            else "through claude_proxy"
    return env


def write_claude_settings(path: str, env: dict[str, str], extra: dict[str, Any] | None = None) -> str | None:
    """Merge ``env`` into the ``env`` table of Claude Code's settings.json, keeping every other setting.

    The old file is copied to ``<path>.bak-<timestamp>`` first (returned); the new one is written atomically
    and readable only by its owner (it holds a key). A file that is not valid JSON is left alone.
    """
    data: dict[str, Any] = {}
    backup = None
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
            data = json.loads(text) if text.strip() else {}
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path} exists but cannot be read as JSON ({exc}); nothing was changed") from None
        if not isinstance(data, dict) or not isinstance(data.get("env", {}), dict):
            raise ValueError(f"{path} does not hold a settings object with an 'env' table; nothing was changed")
        backup = f"{path}.bak-{time.strftime('%Y%m%d-%H%M%S')}"
        shutil.copy2(path, backup)
    data.setdefault("env", {}).update(env)
    data.update(extra or {})
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)
    return backup


def statusline(base_url: str, key: str | None, stdin_text: str, timeout: float = 0.5) -> str:
    """Claude Code's status line: this session's model, tokens and cost from the running proxy's /usage; a
    mark when the proxy cannot be reached. Never raises: Claude Code shows a status line only when the command
    exits 0."""
    import urllib.parse
    import urllib.request
    try:
        session = json.loads(stdin_text or "{}").get("session_id")
    except (ValueError, AttributeError):
        session = None
    url = f"{base_url.rstrip('/')}/usage?session={urllib.parse.quote(str(session or ''))}"
    headers = {"x-api-key": key} if key else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
            totals = json.loads(resp.read() or b"null")
    except Exception:  # noqa: BLE001 - down, hung, refused, not JSON: the line says so, and the command exits 0
        return f"claude_proxy ✗ not reachable at {redact_url(base_url)}"
    if not isinstance(totals, dict):
        return "claude_proxy · no requests yet"
    cost = f" · ${totals['cost']:.4f}" if isinstance(totals.get("cost"), (int, float)) else ""
    return (f"claude_proxy · {totals.get('model', '?')} · {_short(totals.get('input_tokens', 0))} in · "
            f"{_short(totals.get('output_tokens', 0))} out{cost}")


def _short(n: Any) -> str:
    n = n if isinstance(n, (int, float)) else 0
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(int(n))


CODEX_PROVIDER = "claude_proxy"


def codex_config(base_url: str, key_env: str | None, model: str) -> tuple[dict[str, str], str]:
    """(top-level keys, the provider table) of Codex CLI's config.toml that point it at this proxy."""
    table = [f"[model_providers.{CODEX_PROVIDER}]", 'name = "claude_proxy"', f'base_url = "{base_url}/v1"',
             'wire_api = "responses"'] + ([f'env_key = "{key_env}"'] if key_env else [])
    return {"model_provider": f'"{CODEX_PROVIDER}"', "model": json.dumps(model)}, "\n".join(table) + "\n"


def write_codex_config(path: str, top: dict[str, str], table: str) -> str | None:
    """Merge the proxy's provider into Codex's config.toml, keeping everything else (the old file is saved as
    ``<path>.bak-<time>``, returned). A file that is not valid TOML is left alone."""
    import tomllib
    text = ""
    backup = None
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        try:
            tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path} exists but is not valid TOML ({exc}); nothing was changed") from None
        backup = f"{path}.bak-{time.strftime('%Y%m%d-%H%M%S')}"
        shutil.copy2(path, backup)
    lines, kept, in_ours, in_table = text.splitlines(), [], False, False
    for line in lines:
        header = re.match(r"\s*\[", line)
        if header:
            in_table = True
            in_ours = line.strip() == f"[model_providers.{CODEX_PROVIDER}]"
        if in_ours or (not in_table and re.match(rf"\s*({'|'.join(top)})\s*=", line)):
            continue
        kept.append(line)
    first_table = next((i for i, line in enumerate(kept) if re.match(r"\s*\[", line)), len(kept))
    merged = kept[:first_table] + [f"{k} = {v}" for k, v in top.items()] + kept[first_table:]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write("\n".join(merged).rstrip("\n") + "\n\n" + table)
    os.replace(tmp, path)
    return backup


CHECK_HINTS = {
    "authentication_error": "the backend rejected the key: set --api-key (without it, the key the client sends "
                            "is forwarded), or send the right --proxy-key",
    "permission_error": "the key is not allowed to use this model or endpoint",
    "not_found_error": "the backend does not know this model, or the URL is wrong: check --model (and the tier "
                       "models) against the backend's model list, and that --url ends where /chat/completions "
                       "should be appended (often …/v1)",
    "rate_limit_error": "rate-limited or out of quota at the backend: wait, or check the account",
    "overloaded_error": "the backend is overloaded: try again later",
    "timeout_error": "the backend did not answer in time: is it up? slow local models may need a larger "
                     "--read-timeout",
    "api_error": "the backend failed or could not be reached: check --url and that the server is running",
    "invalid_request_error": "the backend refused the request as sent: see its message above",
}


async def run_check(config: Config, base_url: str | None, model: str, key: str | None, timeout: float,
                    echo: Any) -> bool:
    """Send one small request as JSON and one as a stream; print status, latency, reply, or cause and hint."""
    runner = None
    if base_url is None:  # check the configured backend through an in-process proxy on a loopback port
        runner = web.AppRunner(make_app(config), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        backend, mapped = config.routing.candidates(model)[0]
        echo(f"checking backend {backend.name} at {redact_url(backend.endpoint)}: {model} → {mapped}")
    else:
        base_url = base_url.rstrip("/")
        echo(f"checking {base_url} with model {model}")
    key = key or (config.proxy_keys[0] if config.proxy_keys else "check")
    headers = {"x-api-key": key, "anthropic-version": ANTHROPIC_VERSION, "content-type": "application/json"}
    ok = True
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            for stream in (False, True):
                ok &= await _check_once(session, base_url, model, headers, stream, echo)
    finally:
        if runner is not None:
            await runner.cleanup()
    echo("OK: the backend answers, as JSON and as a stream." if ok else "FAILED: see the cause and hint above.")
    return ok


async def _check_once(session: aiohttp.ClientSession, base_url: str, model: str, headers: dict[str, str],
                      stream: bool, echo: Any) -> bool:
    label = "stream" if stream else "JSON  "
    body = {"model": model, "max_tokens": 64, "stream": stream,
            "messages": [{"role": "user", "content": "Reply with one short sentence: are you there?"}]}
    started = time.monotonic()
    try:
        async with session.post(base_url + "/v1/messages", json=body, headers=headers) as resp:
            raw = b""
            first = None
            async for chunk in resp.content.iter_any():
                first = first or time.monotonic()
                raw += chunk
            status = resp.status
    except (TimeoutError, aiohttp.ClientError) as exc:
        echo(f"  {label} no answer: cannot reach {base_url}: {_describe(exc) or 'timed out'}")
        echo("    hint: is the proxy running there? start it with `python claude_proxy.py …`, or fix --base-url")
        return False
    took = (time.monotonic() - started) * 1000
    error, text = None, ""
    try:
        if status >= 400 or not stream:
            data = json_loads(raw)
            if status >= 400 or data.get("type") == "error":
                error = data.get("error") or {}
            else:
                text = "".join(b.get("text", "") for b in data.get("content", []) if b.get("type") == "text")
        else:
            parser = SSEParser()
            for event in parser.feed(raw) + parser.close():
                data = json_loads(event.data)
                if event.event == "error":
                    error = data.get("error") or {}
                elif event.event == "content_block_delta" and data["delta"].get("type") == "text_delta":
                    text += data["delta"]["text"]
    except (ValueError, KeyError, TypeError, AttributeError):
        error = {"type": "api_error", "message": f"not an Anthropic answer: {raw[:200]!r}"}
    if error is not None:
        kind = error.get("type", "api_error")
        echo(f"  {label} HTTP {status} in {took:.0f} ms: {kind}: {error.get('message', '')}")
        echo(f"    hint: {CHECK_HINTS.get(kind, CHECK_HINTS['api_error'])}")
        return False
    ttfb = f", first byte {(first - started) * 1000:.0f} ms" if stream and first else ""
    reply = " ".join(text.split())
    echo(f"  {label} HTTP {status} in {took:.0f} ms{ttfb}: {reply[:120]!r}")
    if not reply:
        echo("    hint: the answer was empty; the model may need a larger max_tokens or a different model")
        return False
    return True


def startup_lines(config: Config) -> list[str]:
    base = proxy_base_url(config) if config.host in ("0.0.0.0", "::") else \
        f"http://{config.host if ':' not in config.host else '[' + config.host + ']'}:{config.port}"
    primary = config.routing.primary
    key = f"key {redact_key(primary.api_key)}" if primary.api_key else "key: the client's own"
    shown = [r for r in config.routing.routes if r.match != "*" or r.backend != primary.name or r.model]
    if config.model and not config.routes:  # the --model routes read better as one phrase
        shown = [r for r in shown if not (r.match in CLAUDE_NAME_GLOBS and r.model == config.model)]
    routes = "; ".join(f"{r.match} → {r.backend}:{r.model or '(as requested)'}"
                       + (f" (then {', '.join(f'{b}:{m or chr(42)}' for b, m in r.fallbacks)})" if r.fallbacks else "")
                       for r in shown)
    client_key_hint = '<a --proxy-key>' if config.proxy_keys else 'any-value' if primary.api_key else \
        '<your backend key>'
    search = f"; web search via {config.search.provider} ({redact_url(config.search.url)})" if config.search else ""
    first = (f"claude_proxy {__version__} listening on {base} → {redact_url(primary.endpoint)} ({key}); "
             f"model {config.model or 'as requested'}{'; ' + routes if routes else ''}{search}")
    return [first,
            f"  export ANTHROPIC_BASE_URL={base}",
            f"  export ANTHROPIC_API_KEY={client_key_hint}",
            f"  OpenAI clients: base URL {base}/v1"]


def reload_config(app: web.Application, build: Callable[[], Config]) -> None:
    """SIGHUP: the configuration read again (``build``) for new requests; requests in flight finish with theirs.
    Key pools, cooldowns and lessons carry over by backend. A file with a mistake is refused, and logged with its
    FILE:LINE, and the running configuration stays."""
    state = app[STATE_KEY]
    try:
        new = build()
    except ValueError as exc:  # ConfigFileError included
        log.error("reload refused, the running configuration stays: %s", exc)
        return
    old = state.config
    kept = [name for name in ("host", "port", "workers", "max_connections", "connect_timeout", "read_timeout",
                              "max_body") if getattr(old, name) != getattr(new, name)]
    if kept:
        log.warning("reload: %s take effect at the next start only", ", ".join(kept))
    state.config = app[UPSTREAM_KEY].config = new
    app[MODELS_CACHE_KEY].clear()
    app[WINDOWS_KEY].clear()
    redact_in_logs(new.secret_values)
    log.info("reloaded: backends %s; %d routes; model %s", ", ".join(new.routing.backends), len(new.routing.routes),
             new.model or "as requested")


async def serve(config: Config, reuse_port: bool = False, announce: bool = True,
                rebuild: Callable[[], Config] | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then drain (``--drain-timeout``) and exit; on SIGHUP, ``rebuild`` the
    configuration (from the config file) and use it for new requests."""
    _raise_open_files_limit()
    app = make_app(config)
    # handler_cancellation: a client that goes away cancels its handler, which closes the upstream request
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, backlog=4096, reuse_port=reuse_port or None)
    await site.start()
    if announce:
        for line in startup_lines(config):
            print(line, flush=True)
    for backend in config.routing.backends.values():
        if announce and not backend.tls_verify:
            log.warning("backend %s: tls_verify = false: its certificate is not checked, so anyone on the way can "
                        "read and change its traffic (and its key)", backend.name)
    if announce and not config.loopback_only and not config.proxy_keys:
        log.warning("listening on %s without --proxy-key: anyone who can reach this port can use %s",
                    config.host, "your backend key" if config.api_key else "the proxy")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if rebuild is not None and hasattr(signal, "SIGHUP"):
        loop.add_signal_handler(signal.SIGHUP, reload_config, app, rebuild)
    try:
        await stop.wait()
        log.info("signal received: no new connections; draining")
        await drain(app, site, config.drain_timeout)
    finally:
        await runner.cleanup()


def _raise_open_files_limit() -> None:
    """Each stream holds two sockets; the common soft limit of 1024 would cap a proxy near 500 streams."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 1 << 20), hard))
    except (ImportError, ValueError, OSError):
        pass


def serve_workers(config: Config, rebuild: Callable[[], Config] | None = None) -> None:
    """``--workers N``: N processes on one port (SO_REUSEPORT; the kernel spreads connections). The proxy is
    stateless, so nothing is shared; the parent only forwards SIGTERM/SIGINT/SIGHUP and waits."""
    children = []
    for i in range(config.workers):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                asyncio.run(serve(config, reuse_port=True, announce=i == 0, rebuild=rebuild))
            except BaseException:  # noqa: BLE001 - a worker must never return into the parent's code
                code = 1
            finally:
                os._exit(code)
        children.append(pid)

    def forward(signum: int, _frame: Any) -> None:
        for child in children:
            try:
                os.kill(child, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    if rebuild is not None:
        signal.signal(signal.SIGHUP, forward)
    status = 0
    for child in children:
        _, code = os.waitpid(child, 0)
        status = status or os.waitstatus_to_exitcode(code)
    if status:
        sys.exit(status)


class _JsonFormatter(logging.Formatter):
    """``--log-format json``: one JSON object per line; a request's line carries its facts as fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"time": self.formatTime(record), "level": record.levelname.lower()}
        request = getattr(record, "request", None)
        out.update(request if isinstance(request, dict) else {"message": record.getMessage()})
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        return json_dumps(out)


class _RedactingFilter(logging.Filter):
    """Last line of defence: no configured key reaches a log line, whatever formatted it."""

    def __init__(self, keys: Iterable[str]):
        super().__init__()
        self.keys = [k for k in keys if k]

    def filter(self, record: logging.LogRecord) -> bool:
        if self.keys:
            msg = record.getMessage()
            clean = scrub(msg, self.keys)
            if clean != msg:
                record.msg, record.args = clean, None
        return True


def redact_in_logs(keys: Iterable[str]) -> None:
    """Keep ``keys`` out of every line the root logger's handlers write (they are added to what is kept out)."""
    for handler in logging.getLogger().handlers:
        found = [f for f in handler.filters if isinstance(f, _RedactingFilter)]
        if found:
            found[0].keys = list(dict.fromkeys(found[0].keys + [k for k in keys if k]))
        else:
            handler.addFilter(_RedactingFilter(keys))


def _build_cli():  # click is imported lazily so the module imports without it
    import click
    from click.core import ParameterSource

    help_text = """Serve the Anthropic Messages API (Claude Code, the anthropic SDK) from any OpenAI-compatible
    backend, and the OpenAI Chat Completions API from Anthropic. Serving is the default; `setup-claude` and
    `check` are the two helpers.

    \b
    Examples:
      python claude_proxy.py                                    # local Ollama, no key
      python claude_proxy.py --url api.deepseek.com/v1 --api-key sk-... --model deepseek-chat
      python claude_proxy.py --url api.groq.com/openai/v1 --api-key gsk_... \\
          --model llama-3.3-70b-versatile --haiku-model llama-3.1-8b-instant
      python claude_proxy.py --backend anthropic --api-key sk-ant-... --model claude-sonnet-4-5
      python claude_proxy.py --config routes.toml               # several backends, routes, fallbacks
      python claude_proxy.py setup-claude                       # point Claude Code at the proxy
      python claude_proxy.py --url api.deepseek.com/v1 --api-key sk-... check   # test the backend
    \b
    Then:  ANTHROPIC_BASE_URL=http://127.0.0.1:8082 ANTHROPIC_API_KEY=unused claude
    or an OpenAI client (LibreChat, SillyTavern, openai SDK) at http://127.0.0.1:8082/v1

    Every option can also be set in the environment (CLAUDE_PROXY_<OPTION>, e.g. CLAUDE_PROXY_URL);
    OPENAI_BASE_URL and OPENAI_API_KEY are used when the CLAUDE_PROXY_ ones are unset.
    """

    @click.group(help=help_text, invoke_without_command=True,
                 context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
    @click.version_option(__version__, "--version", prog_name="claude_proxy", message="%(prog)s %(version)s")
    @click.option("--config", "config_file", envvar="CLAUDE_PROXY_CONFIG", default=None,
                  type=click.Path(dir_okay=False),
                  help="TOML file with [[backends]], [[routes]] and [server] settings; flags override it.")
    @click.option("--url", envvar=["CLAUDE_PROXY_URL", "OPENAI_BASE_URL"], default=None,
                  help=f"Backend base URL; /chat/completions (or /v1/messages) is appended. https:// is assumed, "
                       f"http:// for localhost. [default: {DEFAULT_URL}, or {DEFAULT_ANTHROPIC_URL} with "
                       f"--backend anthropic]")
    @click.option("--backend", envvar="CLAUDE_PROXY_BACKEND", default="openai", show_default=True,
                  type=click.Choice(BACKENDS),
                  help="The backend's dialect: an OpenAI-compatible /chat/completions, or Anthropic /v1/messages.")
    @click.option("--api-key", envvar=["CLAUDE_PROXY_API_KEY", "OPENAI_API_KEY"], default=None,
                  help="Backend key (Authorization: Bearer; x-api-key to Anthropic). Unset: the client's own key "
                       "is forwarded.")
    @click.option("--model", envvar="CLAUDE_PROXY_MODEL", default=None,
                  help="Backend model for every Claude model name. Unset: the requested name is sent as is.")
    @click.option("--haiku-model", envvar="CLAUDE_PROXY_HAIKU_MODEL", default=None,
                  help="Backend model for requests whose model contains 'haiku'.")
    @click.option("--sonnet-model", envvar="CLAUDE_PROXY_SONNET_MODEL", default=None,
                  help="Backend model for requests whose model contains 'sonnet'.")
    @click.option("--opus-model", envvar="CLAUDE_PROXY_OPUS_MODEL", default=None,
                  help="Backend model for requests whose model contains 'opus'.")
    @click.option("--host", envvar="CLAUDE_PROXY_HOST", default="127.0.0.1", show_default=True,
                  help="Address to listen on.")
    @click.option("--port", envvar="CLAUDE_PROXY_PORT", default=8082, show_default=True, type=int,
                  help="Port to listen on.")
    @click.option("--max-tokens", envvar="CLAUDE_PROXY_MAX_TOKENS", default=None, type=click.IntRange(min=1),
                  help="Cap on max_tokens asked of the backend (Claude Code asks for 32k-128k). "
                       "Without it a backend that names its limit in an error is retried with that limit.")
    @click.option("--context-window", envvar="CLAUDE_PROXY_CONTEXT_WINDOW", default=None, type=click.IntRange(min=1),
                  help="The backend model's context window in tokens: overflow errors then always carry the numbers "
                       "Claude Code compacts by, and setup-claude tells Claude Code when to compact.")
    @click.option("--upstream-proxy", envvar="CLAUDE_PROXY_UPSTREAM_PROXY", default=None,
                  help="An HTTP proxy for the backends (http://[user:password@]host:port; https backends through "
                       "CONNECT). Unset: HTTPS_PROXY, HTTP_PROXY and NO_PROXY decide.")
    @click.option("--ca-file", envvar="CLAUDE_PROXY_CA_FILE", default=None,
                  help="A CA bundle (PEM) to check the backends' certificates against, for a private CA "
                       "(SSL_CERT_FILE is also respected).")
    @click.option("--web-search", envvar="CLAUDE_PROXY_WEB_SEARCH", default=None,
                  type=click.Choice(WEB_SEARCH_PROVIDERS),
                  help="Run Claude Code's web searches with this provider for backends that cannot search "
                       "themselves. Without it a search answers 'unavailable'.")
    @click.option("--web-search-url", envvar="CLAUDE_PROXY_WEB_SEARCH_URL", default=None,
                  help="SearXNG's address (needed); for Brave and Tavily, another API address.")
    @click.option("--web-search-key", envvar=WEB_SEARCH_KEY_ENV, default=None,
                  help="The search provider's API key (Brave, Tavily).")
    @click.option("--system-turns", envvar="CLAUDE_PROXY_SYSTEM_TURNS", default=None, type=click.Choice(SYSTEM_TURNS),
                  help="System turns inside the conversation (Claude Code sends them): 'keep' them in place, or "
                       "'fold' them into the next user turn for chat templates that take a system message only "
                       "first. Unset: kept, and folded once the backend refuses them.")
    @click.option("--reasoning-effort", envvar="CLAUDE_PROXY_REASONING_EFFORT", default="off", show_default=True,
                  type=click.Choice(REASONING_EFFORT_CHOICES),
                  help="Send reasoning_effort: 'auto' derives it from the request's thinking settings; "
                       "'off' never sends it (non-reasoning models reject it).")
    @click.option("--connect-timeout", envvar="CLAUDE_PROXY_CONNECT_TIMEOUT", default=10.0, show_default=True,
                  type=float, help="Seconds to wait for a connection to the backend.")
    @click.option("--read-timeout", envvar="CLAUDE_PROXY_READ_TIMEOUT", default=600.0, show_default=True,
                  type=float, help="Longest silence from the backend (first byte, between stream chunks).")
    @click.option("--retries", envvar="CLAUDE_PROXY_RETRIES", default=2, show_default=True, type=click.IntRange(0, 10),
                  help="Retries on connection errors, 429 and 5xx before any byte reached the client.")
    @click.option("--proxy-key", "proxy_keys", envvar="CLAUDE_PROXY_KEY", multiple=True,
                  help="Require clients to present this key (x-api-key or Bearer); repeatable or comma-separated. "
                       "Never forwarded: the backend gets --api-key.")
    @click.option("--cors-origin", "cors_origins", envvar="CLAUDE_PROXY_CORS_ORIGIN", multiple=True,
                  help="Allow browser calls from this origin (repeatable, comma-separated, or '*'). Default: none.")
    @click.option("--allow-url-routing", "allow_url_routing", envvar="CLAUDE_PROXY_ALLOW_URL_ROUTING",
                  multiple=True, help="Accept the original Worker's /https/HOST/path/MODEL/v1/messages URLs for "
                                      "these hosts (comma-separated). Off by default.")
    @click.option("--max-body", envvar="CLAUDE_PROXY_MAX_BODY", default="32MiB", show_default=True,
                  help="Largest request body (base64 images and PDFs are large); bigger ones get 413.")
    @click.option("--drain-timeout", envvar="CLAUDE_PROXY_DRAIN_TIMEOUT", default=30.0, show_default=True,
                  type=click.FloatRange(min=0), help="On SIGTERM/SIGINT, seconds to let running answers finish.")
    @click.option("--ping-interval", envvar="CLAUDE_PROXY_PING_INTERVAL", default=15.0, show_default=True,
                  type=click.FloatRange(min=0.01), help="Send a keep-alive on a stream silent for this many seconds.")
    @click.option("--max-connections", envvar="CLAUDE_PROXY_MAX_CONNECTIONS", default=1000, show_default=True,
                  type=click.IntRange(min=1), help="Size of the shared connection pool to the backend.")
    @click.option("--workers", envvar="CLAUDE_PROXY_WORKERS", default=1, show_default=True,
                  type=click.IntRange(1, 256), help="Processes serving the same port (SO_REUSEPORT), for many cores.")
    @click.option("--log-level", envvar="CLAUDE_PROXY_LOG_LEVEL", default="info", show_default=True,
                  type=click.Choice(LOG_LEVELS, case_sensitive=False))
    @click.option("--log-format", envvar="CLAUDE_PROXY_LOG_FORMAT", default="text", show_default=True,
                  type=click.Choice(LOG_FORMATS), help="'json': one JSON object per line, for log collectors.")
    @click.pass_context
    def cli(ctx: click.Context, **opts: Any) -> None:
        config_file = opts.pop("config_file")

        def build() -> Config:
            """The flags, and the config file where no flag was given; read again on SIGHUP."""
            merged = dict(opts)
            if config_file:
                for name, value in load_config_file(config_file).items():
                    explicit = ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT)
                    if name in ("backends", "routes") or not explicit:
                        merged[name] = value
                if ctx.get_parameter_source("url") not in (None, ParameterSource.DEFAULT):
                    merged.pop("default_backend", None)  # --url given: the flags' backend stays the default
            return Config(**merged)

        try:
            config = build()
        except ConfigFileError as exc:
            raise click.ClickException(str(exc)) from None
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
        ctx.obj = config
        if ctx.invoked_subcommand is not None:
            return
        logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s",
                            stream=sys.stderr)
        if config.log_format == "json":
            logging.getLogger().handlers[0].setFormatter(_JsonFormatter())
        redact_in_logs(config.secret_values)
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
        try:
            import uvloop  # type: ignore[import-not-found,unused-ignore]  # optional speed-up
            uvloop.install()
        except ImportError:
            pass
        if config.workers > 1 and not hasattr(socket, "SO_REUSEPORT"):
            raise click.BadParameter("--workers > 1 needs SO_REUSEPORT (Linux, BSD, macOS)")
        try:
            rebuild = build if config_file else None  # SIGHUP reads the config file again
            if config.workers > 1:
                serve_workers(config, rebuild)
            else:
                asyncio.run(serve(config, rebuild=rebuild))
        except KeyboardInterrupt:
            pass
        except OSError as exc:
            raise click.ClickException(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") \
                from None

    @cli.command("setup-claude")
    @click.option("--base-url", default=None, help="The proxy's URL [default: http://HOST:PORT from the flags].")
    @click.option("--key", default=None,
                  help="Value for ANTHROPIC_API_KEY [default: the first --proxy-key, else 'claude_proxy'].")
    @click.option("--claude-model", default=None, help="Also set ANTHROPIC_MODEL (Claude Code's main model).")
    @click.option("--small-model", default=None,
                  help="Also set ANTHROPIC_DEFAULT_HAIKU_MODEL and ANTHROPIC_SMALL_FAST_MODEL.")
    @click.option("--settings", "settings_path", default=None, type=click.Path(dir_okay=False),
                  help="Settings file [default: ~/.claude/settings.json].")
    @click.option("--tool-search", is_flag=True,
                  help="Also set ENABLE_TOOL_SEARCH=true: Claude Code then defers MCP tools and loads them on "
                       "demand, as it does with Anthropic's API (many MCP tools cost tens of thousands of tokens "
                       "per turn otherwise).")
    @click.option("--picker-model", default=None, metavar="BACKEND,MODEL",
                  help="Add this model to Claude Code's /model picker (ANTHROPIC_CUSTOM_MODEL_OPTION), e.g. "
                       "deepseek,deepseek-reasoner: the comma form goes straight to that configured backend.")
    @click.option("--statusline", "with_statusline", is_flag=True,
                  help="Also set Claude Code's statusLine to this proxy's statusline command (model, tokens, cost "
                       "of the session).")
    @click.option("--print", "print_only", is_flag=True, help="Print shell export lines instead of writing.")
    @click.pass_obj
    def setup_claude(config: Config, base_url: str | None, key: str | None, claude_model: str | None,
                     small_model: str | None, tool_search: bool, picker_model: str | None,
                     with_statusline: bool, settings_path: str | None, print_only: bool) -> None:
        """Point Claude Code at the proxy: merge ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY into its settings."""
        if picker_model and "," in picker_model and picker_model.partition(",")[0] not in config.routing.backends:
            raise click.BadParameter(f"{picker_model.partition(',')[0]!r} is not a configured backend (configured: "
                                     f"{', '.join(sorted(config.routing.backends))})", param_hint="--picker-model")
        env = claude_env(config, base_url, key, claude_model, small_model, tool_search, picker_model)
        if print_only:
            for name, value in env.items():
                click.echo(f"export {name}={shlex.quote(value)}")
            return
        path = settings_path or os.path.join(os.path.expanduser("~"), ".claude", "settings.json")
        command = " ".join(shlex.quote(x) for x in (sys.executable, os.path.abspath(__file__), "statusline",
                                                              "--base-url", base_url or proxy_base_url(config)))
        extra = {"statusLine": {"type": "command", "command": command}} if with_statusline else None
        try:
            backup = write_claude_settings(path, env, extra)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"wrote {', '.join(env)} to {path}" + (f" (previous file saved as {backup})" if backup else ""))
        window = configured_window(config, claude_model)
        if window and window < 100_000 and (claude_model or "claude-").lower().startswith("claude-"):
            click.echo(f"note: for a Claude model name Claude Code compacts at 100000 tokens at the earliest; with a "
                       f"{window}-token window the proxy's 'prompt is too long' answer is what makes it compact in "
                       f"time. Name the backend's model instead (--claude-model MODEL) and Claude Code reads the "
                       f"window exactly.")
        if not shutil.which("claude"):
            click.echo("Claude Code is not installed here; install it with: npm install -g @anthropic-ai/claude-code")
        else:
            click.echo("start it with: claude")

    @cli.command("statusline")
    @click.option("--base-url", default=None, help="The running proxy [default: http://HOST:PORT from the flags].")
    @click.option("--key", default=None, help="The proxy key to send [default: the first --proxy-key].")
    @click.pass_obj
    def statusline_command(config: Config, base_url: str | None, key: str | None) -> None:
        """One status line for Claude Code (its statusLine setting): reads Claude Code's JSON on stdin, prints this
        session's model, tokens and cost from the running proxy, within a second, and always exits 0."""
        import select
        ready = select.select([sys.stdin], [], [], 0.2)[0] if sys.stdin and not sys.stdin.isatty() else []
        text = os.read(sys.stdin.fileno(), 1 << 20).decode("utf-8", "replace") if ready else ""  # never blocks
        click.echo(statusline(base_url or proxy_base_url(config), key or (config.proxy_keys[0] if config.proxy_keys
                                                                            else None), text))

    @cli.command("setup-codex")
    @click.option("--base-url", default=None, help="The proxy's URL [default: http://HOST:PORT from the flags].")
    @click.option("--key-env", default=None,
                  help="The environment variable Codex reads the proxy key from [default: CLAUDE_PROXY_KEY when "
                       "--proxy-key is set; none otherwise].")
    @click.option("--codex-model", default="gpt-5.5", show_default=True,
                  help="The model name Codex asks for: one it knows, so that it offers its full toolset (the proxy "
                       "maps gpt-*, o* and codex names to --model).")
    @click.option("--codex-config", "config_path", default=None, type=click.Path(dir_okay=False),
                  help="Codex's config file [default: ~/.codex/config.toml, or $CODEX_HOME/config.toml].")
    @click.option("--print", "print_only", is_flag=True, help="Print the configuration instead of writing it.")
    @click.pass_obj
    def setup_codex(config: Config, base_url: str | None, key_env: str | None, codex_model: str,
                    config_path: str | None, print_only: bool) -> None:
        """Point Codex CLI at the proxy: a model provider in its config.toml (the Responses door)."""
        key_env = key_env or ("CLAUDE_PROXY_KEY" if config.proxy_keys else None)
        top, table = codex_config((base_url or proxy_base_url(config)).rstrip("/"), key_env, codex_model)
        if print_only:
            click.echo("\n".join(f"{k} = {v}" for k, v in top.items()) + "\n\n" + table, nl=False)
            return
        home = os.environ.get("CODEX_HOME") or os.path.join(os.path.expanduser("~"), ".codex")
        path = config_path or os.path.join(home, "config.toml")
        try:
            backup = write_codex_config(path, top, table)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"wrote the {CODEX_PROVIDER} provider and model {codex_model} to {path}"
                   + (f" (previous file saved as {backup})" if backup else ""))
        if key_env:
            click.echo(f"Codex sends the proxy key from ${key_env}: export {key_env}=<a --proxy-key>")
        click.echo("start it with: codex" if shutil.which("codex") else
                   "Codex CLI is not installed here; install it with: npm install -g @openai/codex")

    @cli.command("check")
    @click.option("--base-url", default=None,
                  help="A running proxy (or any Anthropic-compatible URL) to check. Default: start the proxy "
                       "in-process from the usual flags and check the configured backend through it.")
    @click.option("--claude-model", "model", default="claude-sonnet-4-5", show_default=True,
                  help="The model name to ask for (mapped as usual).")
    @click.option("--key", default=None, help="Key to send [default: the first --proxy-key, else 'check'].")
    @click.option("--timeout", default=120.0, show_default=True, type=float, help="Seconds per request.")
    @click.pass_obj
    def check(config: Config, base_url: str | None, model: str, key: str | None, timeout: float) -> None:
        """Send a small request, JSON and streaming, and print a verdict (exit 0 on success, 1 on failure)."""
        ok = asyncio.run(run_check(config, base_url, model, key, timeout, click.echo))
        sys.exit(0 if ok else 1)

    return cli


def main(argv: list[str] | None = None) -> None:
    try:
        cli = _build_cli()
    except ImportError as exc:
        sys.exit(f"claude_proxy needs aiohttp and click ({exc}).\n"
                 f"Install them with: python3 -m pip install -r requirements.txt")
    cli(args=argv, prog_name="claude_proxy.py")


if __name__ == "__main__":
    main()
