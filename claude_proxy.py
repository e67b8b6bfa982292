#!/usr/bin/env python3
"""claude_proxy: serve the Anthropic Messages API from any OpenAI-compatible backend.

Claude Code, the ``anthropic`` SDK and other Anthropic clients call ``POST /v1/messages``; the proxy translates
each request to ``POST {url}/chat/completions`` on OpenAI, Gemini, DeepSeek, Groq, OpenRouter, Ollama, vLLM or
llama.cpp, and translates the answer (JSON or SSE stream) back, event for event.

Usage::

    # a local Ollama, no key at all
    python claude_proxy.py --model qwen2.5-coder:32b

    # DeepSeek for everything Claude Code asks for
    python claude_proxy.py --url api.deepseek.com/v1 --api-key sk-... --model deepseek-chat

    # one provider, a cheaper model for haiku requests
    python claude_proxy.py --url api.groq.com/openai/v1 --api-key gsk_... \\
        --model llama-3.3-70b-versatile --haiku-model llama-3.1-8b-instant

Then point Claude Code at it::

    ANTHROPIC_BASE_URL=http://127.0.0.1:8082 ANTHROPIC_API_KEY=unused claude

The module is importable: translators are pure functions (``anthropic_to_openai_request``,
``openai_to_anthropic_response``), the stream translator is ``OpenAIToAnthropicStream``, SSE parsing is
``SSEParser``, and ``make_app(config)`` builds the aiohttp application.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import hashlib
import ipaddress
import json
import logging
import math
import os
import random
import re
import secrets
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Iterable
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

try:  # optional speed-up; the standard library is the fallback
    import orjson

    def json_dumps(obj: Any) -> str:
        return orjson.dumps(obj).decode()

    json_loads = orjson.loads
except ImportError:  # pragma: no cover - depends on the environment
    def json_dumps(obj: Any) -> str:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))

    json_loads = json.loads

__version__ = "0.2.0"
log = logging.getLogger("claude_proxy")


# ======================================================================================================
# 2. Configuration
# ======================================================================================================

DEFAULT_URL = "http://localhost:11434/v1"
TIERS = ("haiku", "sonnet", "opus")


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
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"backend URL must be http(s)://host[:port][/path], got {url!r}")
    url = url.rstrip("/")
    for suffix in ("/chat/completions", "/completions"):
        if url.endswith(suffix):
            url = url[: -len(suffix)]
    return url


def _is_loopback_name(host: str) -> bool:
    if host in ("localhost", "::1") or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Config:
    url: str = DEFAULT_URL
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

    def __post_init__(self) -> None:
        object.__setattr__(self, "url", normalize_backend_url(self.url))
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError("--max-tokens must be at least 1")
        if self.reasoning_effort not in REASONING_EFFORT_CHOICES:
            raise ValueError(f"--reasoning-effort must be one of {', '.join(REASONING_EFFORT_CHOICES)}")

    @property
    def chat_url(self) -> str:
        return self.url + "/chat/completions"

    def tier_model(self, tier: str) -> str | None:
        return getattr(self, f"{tier}_model")

    def backend_model(self, requested: str) -> str:
        """The model the backend is asked for.

        A tier word (haiku/sonnet/opus) picks its override; any other Claude name gets ``--model``; a name that
        is neither goes to the backend as named, so ``ANTHROPIC_MODEL=deepseek-reasoner`` just works.
        """
        low = requested.lower()
        for tier in TIERS:
            if tier in low and self.tier_model(tier):
                return self.tier_model(tier)  # type: ignore[return-value]
        if self.model and (low.startswith("claude") or "claude" in low or any(t in low for t in TIERS)):
            return self.model
        return requested

    def mapped_models(self) -> list[tuple[str, str]]:
        """(client-facing id, backend model) pairs, for ``/v1/models`` and the start-up line."""
        out: list[tuple[str, str]] = []
        names = {"haiku": "claude-haiku-4-5", "sonnet": "claude-sonnet-4-5", "opus": "claude-opus-4-1"}
        for tier in TIERS:
            target = self.tier_model(tier) or self.model
            if target:
                out.append((names[tier], target))
        if self.model:
            out.append((self.model, self.model))
        return out


def redact_key(key: str | None) -> str:
    if not key:
        return "none"
    return f"{key[:3]}…{key[-4:]}" if len(key) > 12 else "***"


# ======================================================================================================
# 3. Errors
# ======================================================================================================

# Anthropic error type for each HTTP status the proxy can answer with (protocols.md D).
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

    def __init__(self, status: int, message: str, kind: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.kind = kind or ANTHROPIC_ERROR_TYPES.get(status) or (
            "invalid_request_error" if status < 500 else "api_error")
        self.message = message
        self.headers = headers or {}

    def anthropic_body(self, request_id: str | None = None) -> dict:
        body: dict[str, Any] = {"type": "error", "error": {"type": self.kind, "message": self.message}}
        if request_id:
            body["request_id"] = request_id
        return body

    def openai_body(self) -> dict:
        return {"error": {"message": self.message, "type": OPENAI_ERROR_TYPES.get(self.kind, self.kind),
                          "param": None, "code": self.kind}}


def bad_request(message: str) -> ProxyError:
    return ProxyError(400, message, "invalid_request_error")


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
        title = re.search(r"<title>(.*?)</title>", text, re.I | re.S)
        snippet = title.group(1).strip() if title else re.sub(r"<[^>]+>", " ", text)
        return "backend answered with an HTML page: " + " ".join(snippet.split())[:200]
    return text[:500]


def error_from_backend(status: int, body: str, headers: Any, backend: str) -> ProxyError:
    """Map a non-2xx backend answer to the status and error type Anthropic itself would use."""
    message = _backend_message(body) or f"backend answered HTTP {status} with an empty body"
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


# ======================================================================================================
# 4. Request and response translators (pure: dict in, dict out)
# ======================================================================================================

REASONING_EFFORT_CHOICES = ("off", "auto", "minimal", "low", "medium", "high")

# Block types an Anthropic client may legitimately send. Anything else is a 400 naming the type.
KNOWN_BLOCK_TYPES = {
    "text", "image", "document", "search_result", "tool_use", "tool_result", "thinking", "redacted_thinking",
    "tool_reference", "server_tool_use", "web_search_tool_result", "web_fetch_tool_result",
    "code_execution_tool_result", "bash_code_execution_tool_result", "text_editor_code_execution_tool_result",
    "tool_search_tool_result", "container_upload", "mcp_tool_use", "mcp_tool_result", "mid_conv_system",
}
# JSON-schema keywords Gemini's OpenAI endpoint rejects with "Unknown name ... Cannot find field" (protocols.md H.3).
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
OPENAI_REASONING_MODEL = re.compile(r"^(?:openai/)?(?:o\d|gpt-5)", re.I)


def openai_tool_name(name: str) -> str:
    """A function name OpenAI accepts; long or odd MCP names get a stable, reversible-by-map short form."""
    if OPENAI_TOOL_NAME.match(name):
        return name
    clean = re.sub(r"[^a-zA-Z0-9_-]", "_", name)
    if len(clean) <= 64 and clean:
        return clean
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{clean[:55]}_{digest}"


def tool_name_map(tools: Any) -> dict[str, str]:
    """OpenAI function name → Anthropic tool name, for the names ``openai_tool_name`` had to change."""
    out = {}
    for tool in tools or []:
        if isinstance(tool, dict) and isinstance(tool.get("name"), str):
            short = openai_tool_name(tool["name"])
            if short != tool["name"]:
                out[short] = tool["name"]
    return out


def sanitize_tool_id(tool_id: Any, prefix: str = "toolu_") -> str:
    if isinstance(tool_id, str) and TOOL_ID_OK.match(tool_id):
        return tool_id
    if isinstance(tool_id, str) and tool_id:
        return re.sub(r"[^a-zA-Z0-9_-]", "_", tool_id)
    return prefix + secrets.token_hex(12)


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
        elif key == "required" and isinstance(value, list):
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


def _expect(cond: bool, message: str) -> None:
    if not cond:
        raise bad_request(message)


def _text_of(content: Any, where: str) -> str:
    """Text of a string or a list of text blocks (system prompts, system turns)."""
    if isinstance(content, str):
        return content
    _expect(isinstance(content, list), f"{where}: expected a string or a list of text blocks")
    parts = []
    for i, block in enumerate(content):
        _expect(isinstance(block, dict), f"{where}.{i}: expected an object")
        if block.get("type") == "text":
            _expect(isinstance(block.get("text"), str), f"{where}.{i}.text: expected a string")
            parts.append(block["text"])
        elif block.get("type") == "mid_conv_system":
            parts.append(_text_of(block.get("content", ""), f"{where}.{i}.content"))
        else:
            raise bad_request(f"{where}.{i}: block type {block.get('type')!r} is not allowed here (text only)")
    return "\n\n".join(p for p in parts if p)


def _image_part(block: dict, where: str) -> dict:
    source = block.get("source")
    _expect(isinstance(source, dict), f"{where}.source: expected an object")
    if source.get("type") == "base64":
        _expect(isinstance(source.get("data"), str), f"{where}.source.data: expected a base64 string")
        media = source.get("media_type") or "image/png"
        return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{source['data']}"}}
    if source.get("type") == "url":
        _expect(isinstance(source.get("url"), str), f"{where}.source.url: expected a string")
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    if source.get("type") == "file":
        return {"type": "text", "text": f"[image file {source.get('file_id', '')}: not available to this model]"}
    raise bad_request(f"{where}.source.type: expected 'base64' or 'url', got {source.get('type')!r}")


def _document_part(block: dict, where: str) -> dict:
    """PDFs become an OpenAI ``file`` part; text-ish documents become text. Never an error (issue #2)."""
    source = block.get("source")
    _expect(isinstance(source, dict), f"{where}.source: expected an object")
    title = block.get("title") if isinstance(block.get("title"), str) else None
    head = f"Document: {title}\n" if title else ""
    kind = source.get("type")
    if kind == "base64":
        media = source.get("media_type") or "application/pdf"
        data = source.get("data")
        _expect(isinstance(data, str), f"{where}.source.data: expected a base64 string")
        if media.startswith("text/"):
            try:
                return {"type": "text", "text": head + base64.b64decode(data).decode("utf-8", "replace")}
            except (ValueError, TypeError):
                raise bad_request(f"{where}.source.data: not valid base64") from None
        name = title or ("document.pdf" if media == "application/pdf" else "document")
        return {"type": "file", "file": {"filename": name, "file_data": f"data:{media};base64,{data}"}}
    if kind == "text":
        return {"type": "text", "text": head + str(source.get("data", ""))}
    if kind == "content":
        content = source.get("content")
        text = content if isinstance(content, str) else "\n".join(
            b.get("text", "") for b in content or [] if isinstance(b, dict) and b.get("type") == "text")
        return {"type": "text", "text": head + text}
    if kind == "url":
        return {"type": "text", "text": f"{head}[document at {source.get('url')}]"}
    if kind == "file":
        return {"type": "text", "text": f"{head}[document file {source.get('file_id', '')}]"}
    raise bad_request(f"{where}.source.type: unsupported document source {kind!r}")


def _search_result_text(block: dict) -> str:
    body = "\n".join(b.get("text", "") for b in block.get("content") or [] if isinstance(b, dict))
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
                lines.append(item.get("title") or item.get("text") or item.get("url") or "")
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
                texts.append(_search_result_text(item))
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


def _convert_messages(messages: list, openai_messages: list[dict]) -> None:
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
            openai_messages.append(_assistant_message(blocks, where))
            pending_tool_ids = [c["id"] for c in openai_messages[-1].get("tool_calls", [])]
        else:
            pending_tool_ids = _user_messages(blocks, where, openai_messages, pending_tool_ids)
    if pending_tool_ids:
        _answer_missing_tools(openai_messages, pending_tool_ids)


def _answer_missing_tools(out: list[dict], pending: list[str]) -> None:
    # OpenAI rejects a tool_calls turn not followed by one tool message per id.
    for tool_id in pending:
        out.append({"role": "tool", "tool_call_id": tool_id, "content": "(no result)"})
    pending.clear()


def _assistant_message(blocks: list[dict], where: str) -> dict:
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
            calls.append({"id": sanitize_tool_id(block.get("id")), "type": "function",
                          "function": {"name": openai_tool_name(block["name"]), "arguments": json_dumps(tool_input)}})
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


def _user_messages(blocks: list[dict], where: str, out: list[dict], pending: list[str]) -> list[str]:
    parts: list[dict] = []
    moved: list[dict] = []  # images/documents from tool results: tool messages cannot carry them
    for j, block in enumerate(blocks):
        kind = block["type"]
        bw = f"{where}.content.{j}"
        if kind == "tool_result":
            tool_id = sanitize_tool_id(block.get("tool_use_id"))
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
            parts.append({"type": "text", "text": _search_result_text(block)})
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
    elif not out or out[-1]["role"] not in ("tool",):
        out.append({"role": "user", "content": "(empty message)"})
    return []


def _convert_tools(tools: Any, tool_choice: Any) -> tuple[list[dict], Any, bool | None]:
    _expect(tools is None or isinstance(tools, list), "tools: expected a list")
    out = []
    for i, tool in enumerate(tools or []):
        _expect(isinstance(tool, dict), f"tools.{i}: expected an object")
        ttype = tool.get("type")
        if ttype not in (None, "custom") and "input_schema" not in tool:
            continue  # server tools (web_search, code_execution, ...) run at Anthropic; no backend can run them
        name = tool.get("name")
        _expect(isinstance(name, str) and name, f"tools.{i}.name: expected a non-empty string")
        schema = tool.get("input_schema") or {"type": "object", "properties": {}}
        _expect(isinstance(schema, dict), f"tools.{i}.input_schema: expected an object")
        params = sanitize_schema(schema)
        params.setdefault("type", "object")
        if params.get("type") == "object":
            params.setdefault("properties", {})
        fn: dict[str, Any] = {"name": openai_tool_name(name), "parameters": params}
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
            choice = {"type": "function", "function": {"name": openai_tool_name(tool_choice["name"])}}
        else:
            raise bad_request(f"tool_choice.type: expected auto, any, tool or none, got {ctype!r}")
        if tool_choice.get("disable_parallel_tool_use") is True:
            parallel = False
    if not out:
        return [], None, None
    return out, choice, parallel


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
        budget = thinking.get("budget_tokens") or 0
        return "low" if budget < 4096 else "medium" if budget < 16384 else "high"
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
            _expect(0 <= v <= (1 if key == "temperature" else 1), f"{key}: must be between 0 and 1, got {v}")
    if body.get("stop_sequences") is not None:
        ss = body["stop_sequences"]
        _expect(isinstance(ss, list) and all(isinstance(s, str) for s in ss),
                "stop_sequences: expected a list of strings")
    if body.get("stream") is not None:
        _expect(isinstance(body["stream"], bool), "stream: expected a boolean")
    if body.get("system") is not None:
        _text_of(body["system"], "system")


def anthropic_to_openai_request(body: dict, backend_model: str, max_tokens_cap: int | None = None,
                                reasoning_effort: str = "off") -> dict:
    """Translate a validated Anthropic Messages request into an OpenAI Chat Completions request."""
    validate_messages_request(body)
    messages: list[dict] = []
    system = body.get("system")
    if system is not None:
        text = _text_of(system, "system")
        if text:
            messages.append({"role": "system", "content": text})
    _convert_messages(body["messages"], messages)
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
    tools, choice, parallel = _convert_tools(body.get("tools"), body.get("tool_choice"))
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


def _parse_tool_arguments(args: Any) -> dict:
    """Tool arguments as an object. Empty means ``{}``; truncated JSON is closed rather than lost."""
    if isinstance(args, dict):
        return args
    if not isinstance(args, str) or not args.strip():
        return {}
    try:
        value = json_loads(args)
        return value if isinstance(value, dict) else {"value": value}
    except ValueError:
        pass
    repaired = _repair_json(args)
    if repaired is not None:
        return repaired
    return {}


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


def _stop_reason(finish: str | None, has_tools: bool, matched: str | None) -> str:
    if has_tools:
        return "tool_use"  # some backends say "stop" for tool calls (vLLM, Ollama, forced tool_choice)
    if matched is not None:
        return "stop_sequence"
    return FINISH_TO_STOP.get(finish or "stop", "end_turn")


def _matched_stop(choice: dict, stop_sequences: list[str] | None) -> str | None:
    # vLLM reports the matched string as stop_reason, SGLang as matched_stop; OpenAI does not say.
    for key in ("stop_reason", "matched_stop"):
        val = choice.get(key)
        if isinstance(val, str) and stop_sequences and val in stop_sequences:
            return val
    return None


def anthropic_usage(usage: Any) -> dict[str, int] | None:
    """OpenAI usage → Anthropic usage; Anthropic's input_tokens excludes cache reads."""
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens") or 0
    details = usage.get("prompt_tokens_details") or {}
    cached = (details.get("cached_tokens") if isinstance(details, dict) else 0) or usage.get(
        "prompt_cache_hit_tokens") or 0
    cached = min(cached, prompt)
    return {"input_tokens": int(prompt - cached), "output_tokens": int(usage.get("completion_tokens") or 0),
            "cache_read_input_tokens": int(cached), "cache_creation_input_tokens": 0}


def new_message_id(backend_id: Any = None) -> str:
    if isinstance(backend_id, str) and backend_id:
        clean = re.sub(r"[^a-zA-Z0-9_-]", "", backend_id)[:40]
        if clean:
            return "msg_" + clean.removeprefix("chatcmpl-")
    return "msg_" + secrets.token_hex(12)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # some backends answer with parts even in JSON mode
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def openai_to_anthropic_response(resp: dict, requested_model: str, tool_names: dict[str, str] | None = None,
                                 stop_sequences: list[str] | None = None,
                                 input_estimate: int = 0) -> dict:
    """Translate an OpenAI chat.completion into an Anthropic Message."""
    if not isinstance(resp, dict):
        raise ProxyError(502, "backend answered with JSON that is not an object", "api_error")
    if resp.get("error"):
        raise ProxyError(502, "backend error: " + _backend_message(json_dumps(resp)), "api_error")
    choices = resp.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ProxyError(502, "backend answered without choices", "api_error")
    choice = choices[0]
    message = choice.get("message") or {}
    content: list[dict] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = _content_text(message.get("content"))
    if text:
        content.append({"type": "text", "text": text})
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        content.append({"type": "text", "text": refusal})
    names = tool_names or {}
    for call in message.get("tool_calls") or []:
        if not isinstance(call, dict):
            continue
        fn = call.get("function") or {}
        name = fn.get("name") or ""
        content.append({"type": "tool_use", "id": sanitize_tool_id(call.get("id")), "name": names.get(name, name),
                        "input": _parse_tool_arguments(fn.get("arguments"))})
    if isinstance(message.get("function_call"), dict):  # legacy single function call
        fc = message["function_call"]
        content.append({"type": "tool_use", "id": sanitize_tool_id(None), "name": names.get(fc.get("name"), fc.get(
            "name") or ""), "input": _parse_tool_arguments(fc.get("arguments"))})
    has_tools = any(b["type"] == "tool_use" for b in content)
    matched = _matched_stop(choice, stop_sequences)
    stop = "refusal" if refusal and not has_tools else _stop_reason(choice.get("finish_reason"), has_tools, matched)
    usage = anthropic_usage(resp.get("usage") or choice.get("usage"))
    if usage is None:
        usage = {"input_tokens": input_estimate, "output_tokens": estimate_text_tokens(
            text + (reasoning if isinstance(reasoning, str) else "")), "cache_read_input_tokens": 0,
                 "cache_creation_input_tokens": 0}
    return {"id": new_message_id(resp.get("id")), "type": "message", "role": "assistant", "model": requested_model,
            "content": content, "stop_reason": stop, "stop_sequence": matched if stop == "stop_sequence" else None,
            "usage": usage}


# ---- max_tokens limits named in backend errors ------------------------------------------------------

_LIMIT_PATTERNS = [
    re.compile(r"valid range of max_tokens is \[\s*\d+\s*,\s*(\d+)\s*\]", re.I),  # DeepSeek
    re.compile(r"supports at most (\d+) completion tokens", re.I),  # OpenAI
    re.compile(r"max(?:imum)?[_ ](?:completion[_ ])?tokens?`?\s*(?:must be|should be|is|of)?\s*(?:less than or equal "
               r"to|<=|at most|no more than|up to|limited to|lower than)\s*`?(\d+)", re.I),  # Groq, generic
    re.compile(r"max(?:imum)?[_ ]tokens?.{0,80}?(?:maximum|max|limit|upper bound)(?: value)?(?: for [`\w]+)?"
               r"(?: is| of)?\s*:?\s*`?(\d+)", re.I),
]
_CONTEXT_PATTERN = re.compile(r"maximum context length is (\d+) tokens.*?\((\d+) in the messages", re.I | re.S)


def max_tokens_limit_from_error(message: str, requested: int) -> int | None:
    """The output limit a backend names when it refuses ``max_tokens``, if it names one below the request."""
    m = _CONTEXT_PATTERN.search(message)  # vLLM: context minus prompt is what is left for the answer
    if m:
        limit = int(m.group(1)) - int(m.group(2))
        return limit if 0 < limit < requested else None
    if not re.search(r"max[_ ]?(?:completion[_ ])?tokens|completion tokens|output tokens", message, re.I):
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


def estimate_text_tokens(text: str) -> int:
    """A calibrated estimate of BPE tokens (within ~10% of cl100k/Claude tokenizers on prose, code and JSON).

    Short words are one token, long words about one per four letters; digits go in threes; runs of
    punctuation cost about one per two characters; non-ASCII characters cost about one each.
    """
    if not text:
        return 0
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
    return max(1, round(total))


def _block_tokens(block: Any) -> float:
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
    for msg in body.get("messages") or []:
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
                    tool.get("description", "") if isinstance(tool.get("description"), str) else "")
                if "input_schema" in tool:
                    total += estimate_text_tokens(json_dumps(tool["input_schema"]))
    return max(1, round(total))


# ======================================================================================================
# 5. Stream translators
# ======================================================================================================

Event = tuple[str, dict]


class OpenAIToAnthropicStream:
    """Turns OpenAI ``chat.completion.chunk`` dicts into Anthropic stream events.

    ``start()`` once, ``feed(chunk)`` per chunk, then exactly one of ``finish(saw_done)`` or ``fail(error)``.
    Every method returns the events to send, in order. Blocks are opened one at a time and indexed 0,1,2…;
    tool calls are keyed by their ``index`` (or ``id`` when a backend omits it), so parallel calls, text after
    a call and whole calls in one chunk all come out as separate, well-formed blocks.
    """

    def __init__(self, model: str, input_tokens: int = 0, tool_names: dict[str, str] | None = None,
                 stop_sequences: list[str] | None = None, message_id: str | None = None):
        self.model = model
        self.input_estimate = input_tokens
        self.tool_names = tool_names or {}
        self.stop_sequences = stop_sequences
        self.message_id = message_id or new_message_id()
        self.index = -1
        self.open: str | None = None  # "thinking" | "text" | "tool"
        self.tool_key: Any = None
        self.tools: dict[Any, dict] = {}  # backend key → {"index", "id", "name", "args", "started"}
        self.finish_reason: str | None = None
        self.matched_stop: str | None = None
        self.usage: dict | None = None
        self.out_chars = 0
        self.saw_tool = False
        self.refused = False
        self.done = False

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> list[Event]:
        message = {"id": self.message_id, "type": "message", "role": "assistant", "model": self.model,
                   "content": [], "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": self.input_estimate, "output_tokens": 1,
                             "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}
        return [("message_start", {"type": "message_start", "message": message}), ("ping", {"type": "ping"})]

    def feed(self, chunk: dict) -> list[Event]:
        events: list[Event] = []
        if not isinstance(chunk, dict):
            return events
        if chunk.get("error"):
            raise ProxyError(502, "backend error mid-stream: " + _backend_message(json_dumps(chunk)), "api_error")
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices:
            return events  # Azure's prompt-filter chunk, xAI's/OpenAI's usage-only chunk
        choice = choices[0]
        if not isinstance(choice, dict):
            return events
        if isinstance(choice.get("usage"), dict):  # Moonshot puts usage inside the choice
            self.usage = choice["usage"]
        delta = choice.get("delta")
        if isinstance(delta, dict):
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                events += self._open("thinking")
                events.append(self._delta({"type": "thinking_delta", "thinking": reasoning}))
                self.out_chars += len(reasoning)
            text = _content_text(delta.get("content"))
            refusal = delta.get("refusal")
            if isinstance(refusal, str) and refusal:
                text += refusal
                self.refused = True
            if text:
                events += self._open("text")
                events.append(self._delta({"type": "text_delta", "text": text}))
                self.out_chars += len(text)
            calls = delta.get("tool_calls")
            if isinstance(calls, list):
                for call in calls:
                    if isinstance(call, dict):
                        events += self._tool_delta(call)
            elif isinstance(delta.get("function_call"), dict):
                events += self._tool_delta({"index": 0, **delta["function_call"]} if "name" not in delta[
                    "function_call"] else {"index": 0, "function": delta["function_call"]})
        finish = choice.get("finish_reason")
        if finish:
            self.finish_reason = finish
            self.matched_stop = _matched_stop(choice, self.stop_sequences) or self.matched_stop
            events += self._close()
        return events

    def finish(self, saw_done: bool = True) -> list[Event]:
        """The backend ended the stream. Without ``[DONE]`` *and* without a finish_reason it was cut off."""
        if self.done:
            return []
        if not saw_done and self.finish_reason is None:
            return self.fail(ProxyError(502, "the backend closed the stream before finishing the answer "
                                             "(no finish_reason, no [DONE])", "api_error"))
        events = self._flush_unnamed_tools()
        events += self._close()
        self.done = True
        usage = anthropic_usage(self.usage) or {
            "input_tokens": self.input_estimate, "output_tokens": max(1, round(self.out_chars / 4))}
        stop = _stop_reason(self.finish_reason, self.saw_tool, self.matched_stop)
        if self.refused and not self.saw_tool:
            stop = "refusal"
        delta_usage = {"output_tokens": usage["output_tokens"], "input_tokens": usage["input_tokens"]}
        if usage.get("cache_read_input_tokens"):
            delta_usage["cache_read_input_tokens"] = usage["cache_read_input_tokens"]
        events.append(("message_delta", {"type": "message_delta", "delta": {
            "stop_reason": stop, "stop_sequence": self.matched_stop if stop == "stop_sequence" else None},
            "usage": delta_usage}))
        events.append(("message_stop", {"type": "message_stop"}))
        return events

    def fail(self, error: ProxyError) -> list[Event]:
        """End the stream with an error event: a client must never mistake a broken answer for a whole one."""
        if self.done:
            return []
        self.done = True
        return [("error", {"type": "error", "error": {"type": error.kind, "message": error.message}})]

    # -- blocks -----------------------------------------------------------------------------------
    def _delta(self, delta: dict) -> Event:
        return ("content_block_delta", {"type": "content_block_delta", "index": self.index, "delta": delta})

    def _close(self) -> list[Event]:
        if self.open is None:
            return []
        self.open = None
        self.tool_key = None
        return [("content_block_stop", {"type": "content_block_stop", "index": self.index})]

    def _open(self, kind: str) -> list[Event]:
        if self.open == kind and kind != "tool":
            return []
        events = self._close()
        self.index += 1
        self.open = kind
        block = {"type": "thinking", "thinking": "", "signature": ""} if kind == "thinking" else {
            "type": "text", "text": ""}
        events.append(("content_block_start", {"type": "content_block_start", "index": self.index,
                                               "content_block": block}))
        return events

    def _tool_delta(self, call: dict) -> list[Event]:
        fn = call.get("function") if isinstance(call.get("function"), dict) else {}
        name = fn.get("name") or call.get("name")
        args = fn.get("arguments", call.get("arguments"))
        if isinstance(args, dict):  # some backends send arguments as an object
            args = json_dumps(args)
        args = args if isinstance(args, str) else ""
        call_id = call.get("id") if isinstance(call.get("id"), str) and call.get("id") else None
        key = self._tool_key(call, call_id, name)
        state = self.tools.get(key)
        if state is None:
            state = {"id": sanitize_tool_id(call_id), "name": None, "args": "", "started": False}
            self.tools[key] = state
        if name and not state["name"]:
            state["name"] = name
        events: list[Event] = []
        if not state["started"]:
            state["args"] += args
            if not state["name"]:
                return events  # id before name (some backends): wait for the name
            events += self._start_tool(key, state)
            if state["args"]:
                events.append(self._delta({"type": "input_json_delta", "partial_json": state["args"]}))
        elif args:
            if self.tool_key != key:
                # A fragment for a call whose block is already closed cannot be placed in the grammar.
                raise ProxyError(502, "the backend interleaved the arguments of parallel tool calls", "api_error")
            state["args"] += args
            events.append(self._delta({"type": "input_json_delta", "partial_json": args}))
        return events

    def _tool_key(self, call: dict, call_id: str | None, name: str | None) -> Any:
        idx = call.get("index")
        if isinstance(idx, int) and not isinstance(idx, bool):
            existing = self.tools.get(("i", idx))
            # Gemini may reuse index 0 for each parallel call: a new id under a used index is a new call.
            if existing is not None and call_id and existing["started"] and call_id != existing["id"] and \
                    sanitize_tool_id(call_id) != existing["id"]:
                return ("id", call_id)
            return ("i", idx)
        if call_id:
            return ("id", call_id)
        if name or self.tool_key is None:
            return ("n", len(self.tools))  # no index, no id: a name starts a new call
        return self.tool_key

    def _start_tool(self, key: Any, state: dict) -> list[Event]:
        events = self._close()
        self.index += 1
        self.open = "tool"
        self.tool_key = key
        self.saw_tool = True
        state["started"] = True
        name = self.tool_names.get(state["name"], state["name"])
        events.append(("content_block_start", {"type": "content_block_start", "index": self.index,
                                               "content_block": {"type": "tool_use", "id": state["id"],
                                                                 "name": name, "input": {}}}))
        return events

    def _flush_unnamed_tools(self) -> list[Event]:
        events: list[Event] = []
        for key, state in self.tools.items():
            if not state["started"]:
                state["name"] = state["name"] or "unknown_tool"
                events += self._start_tool(key, state)
                if state["args"]:
                    events.append(self._delta({"type": "input_json_delta", "partial_json": state["args"]}))
        return events


def anthropic_message_events(message: dict) -> list[Event]:
    """A complete Anthropic message replayed as stream events (for backends that ignore ``stream: true``)."""
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None,
             "usage": {**message["usage"], "output_tokens": 1}}
    events: list[Event] = [("message_start", {"type": "message_start", "message": start})]
    for i, block in enumerate(message["content"]):
        if block["type"] == "text":
            first, delta = {"type": "text", "text": ""}, {"type": "text_delta", "text": block["text"]}
        elif block["type"] == "thinking":
            first, delta = {"type": "thinking", "thinking": "", "signature": ""}, {
                "type": "thinking_delta", "thinking": block["thinking"]}
        else:
            first = {**block, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json_dumps(block["input"])}
        events.append(("content_block_start", {"type": "content_block_start", "index": i, "content_block": first}))
        events.append(("content_block_delta", {"type": "content_block_delta", "index": i, "delta": delta}))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    events.append(("message_delta", {"type": "message_delta", "delta": {
        "stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]},
        "usage": {"output_tokens": message["usage"]["output_tokens"],
                  "input_tokens": message["usage"]["input_tokens"]}}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


# ======================================================================================================
# 6. SSE reading and writing
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
            if line.endswith("\r"):
                line = line[:-1]
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
        if value.startswith(" "):
            value = value[1:]
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


async def iter_sse(response: aiohttp.ClientResponse) -> AsyncIterator[SSEEvent]:
    parser = SSEParser()
    async for chunk in response.content.iter_any():
        for event in parser.feed(chunk):
            yield event
    for event in parser.close():
        yield event


# ======================================================================================================
# 7. Upstream client
# ======================================================================================================

RETRY_STATUSES = {429, 500, 502, 503, 504, 529}


class Upstream:
    """One shared aiohttp session to the backend: keep-alive, timeouts, retries before the first byte."""

    def __init__(self, config: Config):
        self.config = config
        self.session: aiohttp.ClientSession | None = None
        self.learned_limits: dict[str, int] = {}

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=512, limit_per_host=256, ttl_dns_cache=300, keepalive_timeout=60)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.config.connect_timeout,
                                        sock_read=self.config.read_timeout)
        self.session = aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=True,
                                             json_serialize=json_dumps)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    def headers(self, key: str | None, stream: bool) -> dict[str, str]:
        h = {"Content-Type": "application/json", "User-Agent": f"claude_proxy/{__version__}",
             "Accept": "text/event-stream" if stream else "application/json"}
        if key:
            h["Authorization"] = f"Bearer {key}"
        return h

    async def post_chat(self, payload: dict, key: str | None) -> aiohttp.ClientResponse:
        """POST /chat/completions; returns a 2xx response (body unread) or raises ProxyError.

        Connection failures, 429 and 5xx are retried with jittered backoff (honouring ``retry-after`` up to
        30 s); a 400 that names a smaller ``max_tokens`` limit is retried once with that limit.
        """
        assert self.session is not None
        backend_model = payload.get("model", "")
        tokens_key = "max_completion_tokens" if "max_completion_tokens" in payload else "max_tokens"
        learned = self.learned_limits.get(backend_model)
        if learned and payload.get(tokens_key, 0) > learned:
            payload = {**payload, tokens_key: learned}
        body = json_dumps(payload).encode()
        secrets_ = (key, self.config.api_key)
        attempt = 0
        clamped = False
        while True:
            try:
                resp = await self.session.post(self.config.chat_url, data=body,
                                               headers=self.headers(key, bool(payload.get("stream"))))
            except asyncio.TimeoutError:
                error = ProxyError(504, f"timed out connecting to the backend {self.config.url} "
                                        f"(connect timeout {self.config.connect_timeout:g}s)", "timeout_error")
            except aiohttp.ClientError as exc:
                error = ProxyError(502, scrub(f"cannot reach the backend {self.config.url}: {_describe(exc)}",
                                              secrets_), "api_error")
            else:
                if resp.status < 300:
                    return resp
                text = await _read_error_body(resp)
                error = error_from_backend(resp.status, scrub(text, secrets_), resp.headers, self.config.url)
                if resp.status == 400 and not clamped:
                    limit = max_tokens_limit_from_error(text, payload.get(tokens_key) or 0)
                    if limit:
                        clamped = True
                        self.learned_limits[backend_model] = limit
                        log.info("backend model %s allows at most %d output tokens; retrying with that",
                                 backend_model, limit)
                        payload = {**payload, tokens_key: limit}
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
            log.warning("backend attempt %d failed (%s); retrying in %.1fs", attempt, error.message, delay)
            await asyncio.sleep(delay)


def _describe(exc: BaseException) -> str:
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
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return ""
    finally:
        resp.release()


# ======================================================================================================
# 8. HTTP handlers and app
# ======================================================================================================

CONFIG_KEY = web.AppKey("config", Config)
UPSTREAM_KEY = web.AppKey("upstream", Upstream)
REQUEST_ID_KEY: Any = web.RequestKey("request_id", str) if hasattr(web, "RequestKey") else "request_id"
MODEL_CREATED = "2025-01-01T00:00:00Z"


def client_key(request: web.Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key.strip()
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return None


def anthropic_error_response(error: ProxyError, request_id: str) -> web.Response:
    headers = {"request-id": request_id, **error.headers}
    if error.status >= 500 or error.status == 429:
        headers["x-should-retry"] = "true"
    return web.Response(status=error.status, text=json_dumps(error.anthropic_body(request_id)),
                        content_type="application/json", headers=headers)


async def read_json(request: web.Request) -> Any:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ProxyError(413, f"request body is larger than the {request.app[CONFIG_KEY].max_body} byte limit",
                         "request_too_large") from None
    if not raw.strip():
        raise bad_request("request body is empty; expected a JSON object")
    try:
        return json_loads(raw)
    except ValueError as exc:
        raise bad_request(f"request body is not valid JSON: {exc}") from None


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    request_id = "req_" + uuid.uuid4().hex[:24]
    request[REQUEST_ID_KEY] = request_id
    started = time.monotonic()
    try:
        response = await handler(request)
    except ProxyError as exc:
        response = anthropic_error_response(exc, request_id)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kind = ANTHROPIC_ERROR_TYPES.get(exc.status, "invalid_request_error" if exc.status < 500 else "api_error")
        message = {404: f"no route for {request.method} {request.path}",
                   405: f"method {request.method} is not allowed on {request.path}",
                   413: "request body is too large"}.get(exc.status, exc.reason)
        response = anthropic_error_response(ProxyError(exc.status, message, kind), request_id)
    except Exception:  # a bug in the proxy must still answer in the client's dialect
        log.exception("internal error on %s %s", request.method, request.path)
        response = anthropic_error_response(ProxyError(500, "internal proxy error; see the proxy log", "api_error"),
                                            request_id)
    if not response.prepared:
        response.headers.setdefault("request-id", request_id)
    if request.path not in ("/", "/health"):
        log.info("%s %s %s → %s %.0fms", request_id, request.method, request.path, response.status,
                 (time.monotonic() - started) * 1000)
    return response


async def handle_messages(request: web.Request) -> web.StreamResponse:
    config = request.app[CONFIG_KEY]
    upstream = request.app[UPSTREAM_KEY]
    body = await read_json(request)
    validate_messages_request(body)
    requested = body["model"]
    backend_model = config.backend_model(requested)
    payload = anthropic_to_openai_request(body, backend_model, config.max_tokens, config.reasoning_effort)
    names = tool_name_map(body.get("tools"))
    stops = body.get("stop_sequences")
    key = config.api_key or client_key(request)
    log.debug("%s → %s %s stream=%s", request[REQUEST_ID_KEY], config.chat_url, backend_model, bool(body.get("stream")))
    if not body.get("stream"):
        resp = await upstream.post_chat(payload, key)
        async with resp:
            try:
                data = await resp.json(loads=json_loads, content_type=None)
            except (ValueError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
                raise ProxyError(502, f"backend {config.url} sent an unreadable answer: {_describe(exc)}",
                                 "api_error") from None
        message = openai_to_anthropic_response(data, requested, names, stops, count_request_tokens(body))
        return web.Response(text=json_dumps(message), content_type="application/json",
                            headers={"request-id": request[REQUEST_ID_KEY]})
    return await stream_messages(request, body, payload, key, names)


async def stream_messages(request: web.Request, body: dict, payload: dict, key: str | None,
                          names: dict[str, str]) -> web.StreamResponse:
    config = request.app[CONFIG_KEY]
    resp = await request.app[UPSTREAM_KEY].post_chat(payload, key)
    translator = OpenAIToAnthropicStream(body["model"], count_request_tokens(body), names,
                                         body.get("stop_sequences"))
    out = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                      "Cache-Control": "no-cache", "Connection": "keep-alive",
                                      "request-id": request[REQUEST_ID_KEY], "X-Accel-Buffering": "no"})
    async with resp:
        await out.prepare(request)
        if "json" in resp.headers.get("content-type", ""):
            # The backend ignored stream:true and answered in one piece; replay it as a stream.
            try:
                data = await resp.json(loads=json_loads, content_type=None)
                message = openai_to_anthropic_response(data, body["model"], names, body.get("stop_sequences"),
                                                       translator.input_estimate)
                await out.write(sse_frames(anthropic_message_events(message)))
            except ProxyError as exc:
                await out.write(sse_frames(translator.start() + translator.fail(exc)))
            except (ValueError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
                await out.write(sse_frames(translator.start() + translator.fail(ProxyError(
                    502, f"backend {config.url} sent an unreadable answer: {_describe(exc)}"))))
            await out.write_eof()
            return out
        await out.write(sse_frames(translator.start()))
        saw_done = False
        try:
            async for event in iter_sse(resp):
                data_text = event.data.strip()
                if data_text == "[DONE]":
                    saw_done = True
                    break
                if not data_text or event.event in ("ping", "keep-alive"):
                    continue
                try:
                    chunk = json_loads(data_text)
                except ValueError:
                    raise ProxyError(502, f"backend sent a stream chunk that is not JSON: {data_text[:200]!r}",
                                     "api_error") from None
                events = translator.feed(chunk)
                if events:
                    await out.write(sse_frames(events))
            events = translator.finish(saw_done)
        except ProxyError as exc:
            events = translator.fail(exc)
        except asyncio.TimeoutError:
            events = translator.fail(ProxyError(504, f"backend {config.url} sent nothing for "
                                                     f"{config.read_timeout:g}s mid-stream", "timeout_error"))
        except aiohttp.ClientError as exc:
            events = translator.fail(ProxyError(502, f"backend stream from {config.url} broke: {_describe(exc)}",
                                                "api_error"))
        if events:
            if events[-1][0] == "error":
                log.warning("%s stream ended in error: %s", request[REQUEST_ID_KEY], events[-1][1]["error"]["message"])
            await out.write(sse_frames(events))
        await out.write_eof()
    return out


async def handle_count_tokens(request: web.Request) -> web.Response:
    body = await read_json(request)
    validate_messages_request(body, count_only=True)
    return web.json_response({"input_tokens": count_request_tokens(body)})


async def handle_models(request: web.Request) -> web.Response:
    config = request.app[CONFIG_KEY]
    data = []
    for client_id, backend in config.mapped_models():
        if any(d["id"] == client_id for d in data):
            continue
        data.append({"type": "model", "id": client_id, "display_name": f"{client_id} → {backend}",
                     "created_at": MODEL_CREATED})
    return web.json_response({"data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
                              "last_id": data[-1]["id"] if data else None})


async def handle_root(request: web.Request) -> web.Response:
    return web.json_response({"name": "claude_proxy", "version": __version__, "status": "ok"})


async def handle_health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "backend": request.app[CONFIG_KEY].url})


def make_app(config: Config) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=config.max_body)
    app[CONFIG_KEY] = config
    upstream = Upstream(config)
    app[UPSTREAM_KEY] = upstream

    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        await upstream.start()
        yield
        await upstream.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_post("/v1/messages", handle_messages)
    app.router.add_post("/v1/messages/count_tokens", handle_count_tokens)
    app.router.add_get("/v1/models", handle_models)
    app.router.add_get("/health", handle_health)
    app.router.add_get("/", handle_root)  # GET routes answer HEAD too
    app.router.add_get("/api/hello", handle_root)
    return app


# ======================================================================================================
# 9. CLI
# ======================================================================================================

def startup_lines(config: Config) -> list[str]:
    mapping = ", ".join(f"{t} → {config.tier_model(t)}" for t in TIERS if config.tier_model(t))
    model = config.model or "as requested"
    base = f"http://{config.host if ':' not in config.host else '[' + config.host + ']'}:{config.port}"
    key = f"key {redact_key(config.api_key)}" if config.api_key else "key: the client's own"
    return [
        f"claude_proxy {__version__} listening on {base} → {config.chat_url} ({key}); "
        f"model {model}{'; ' + mapping if mapping else ''}",
        f"  export ANTHROPIC_BASE_URL={base}",
        f"  export ANTHROPIC_API_KEY={'any-value' if config.api_key else '<your backend key>'}",
    ]


async def serve(config: Config) -> None:
    app = make_app(config)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, backlog=1024)
    await site.start()
    for line in startup_lines(config):
        print(line, flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


class _RedactingFilter(logging.Filter):
    """Last line of defence: no configured key reaches a log line, whatever formatted it."""

    def __init__(self, keys: list[str]):
        super().__init__()
        self.keys = [k for k in keys if k]

    def filter(self, record: logging.LogRecord) -> bool:
        if self.keys:
            msg = record.getMessage()
            clean = scrub(msg, self.keys)
            if clean != msg:
                record.msg, record.args = clean, None
        return True


def _build_cli():  # click is imported lazily so the module imports without it
    import click

    help_text = """Serve the Anthropic Messages API (Claude Code, the anthropic SDK) from any OpenAI-compatible
    backend.

    \b
    Examples:
      python claude_proxy.py                                    # local Ollama, no key
      python claude_proxy.py --url api.deepseek.com/v1 --api-key sk-... --model deepseek-chat
      python claude_proxy.py --url api.groq.com/openai/v1 --api-key gsk_... \\
          --model llama-3.3-70b-versatile --haiku-model llama-3.1-8b-instant
    \b
    Then:  ANTHROPIC_BASE_URL=http://127.0.0.1:8082 ANTHROPIC_API_KEY=unused claude

    Every option can also be set in the environment (CLAUDE_PROXY_<OPTION>, e.g. CLAUDE_PROXY_URL);
    OPENAI_BASE_URL and OPENAI_API_KEY are used when the CLAUDE_PROXY_ ones are unset.
    """

    @click.command(help=help_text, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
    @click.option("--url", envvar=["CLAUDE_PROXY_URL", "OPENAI_BASE_URL"], default=DEFAULT_URL, show_default=True,
                  help="Backend base URL; /chat/completions is appended. https:// is assumed, http:// for localhost.")
    @click.option("--api-key", envvar=["CLAUDE_PROXY_API_KEY", "OPENAI_API_KEY"], default=None,
                  help="Backend key (sent as Authorization: Bearer). Unset: the client's own key is forwarded.")
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
    @click.option("--log-level", envvar="CLAUDE_PROXY_LOG_LEVEL", default="info", show_default=True,
                  type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False))
    def cli(**opts: Any) -> None:
        try:
            config = Config(**opts)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
        logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s",
                            stream=sys.stderr)
        logging.getLogger().handlers[0].addFilter(_RedactingFilter([config.api_key or ""]))
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
        try:
            import uvloop  # optional speed-up
            uvloop.install()
        except ImportError:
            pass
        try:
            asyncio.run(serve(config))
        except KeyboardInterrupt:
            pass
        except OSError as exc:
            raise click.ClickException(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}")

    return cli


def main(argv: list[str] | None = None) -> None:
    _build_cli()(args=argv, prog_name="claude_proxy.py")


if __name__ == "__main__":
    main()
