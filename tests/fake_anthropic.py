"""A strict fake Anthropic Messages backend on 127.0.0.1.

Validates like api.anthropic.com (key and version headers, no unknown fields, max_tokens required, roles
alternating from a user turn, tool_result blocks first and matching the previous turn's tool_use ids, non-empty
text, no trailing whitespace in a final assistant turn, temperature ≤ 1 and not together with top_p, valid tool
names and ids, thinking budgets) and answers like it, JSON or SSE, with errors in Anthropic's shape.

The scripted model: ``TOOL_CALL:<name>:<json>`` markers → tool_use blocks; ``THINK:`` or a thinking request →
a thinking block with a signature; a last turn of tool results → text quoting them; otherwise a greeting. A
forced tool (``tool_choice`` type tool) answers with that tool and an input built from its schema.
Model names pick faults: ``overflow-*`` (Anthropic's "prompt is too long"), ``status-<N>-*``, ``overload-mid-*`` (``event: error`` after some text),
``cut-*`` (connection dropped mid-stream), ``adaptive-only-*`` (refuses ``thinking.type.enabled``).
Models released after Opus 4.6 (``claude-opus-4-7``/``4-8``, ``*-5``, ``fable``) refuse ``temperature`` other
than 1, ``top_p`` below 0.99 and any ``top_k``, as the real API does.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets

import pydantic
from aiohttp import web
from anthropic.types import message_create_params
from fake_openai import LoopbackServer

KNOWN_FIELDS = {"model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream", "temperature",
                "top_p", "top_k", "tools", "tool_choice", "thinking", "output_config", "service_tier", "container",
                "cache_control", "inference_geo", "context_management", "mcp_servers"}
ID_RE = re.compile(r"^[a-zA-Z0-9_-]+$")
NO_SAMPLING_MODELS = re.compile(r"opus-4-[7-9]|(?:sonnet|opus|haiku)-5|fable", re.IGNORECASE)
NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
STREAMING = pydantic.TypeAdapter(message_create_params.MessageCreateParamsStreaming)
NON_STREAMING = pydantic.TypeAdapter(message_create_params.MessageCreateParamsNonStreaming)


class Invalid(Exception):
    def __init__(self, message: str, status: int = 400, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.kind = status, kind


def error(status: int, kind: str, message: str, headers: dict | None = None) -> web.Response:
    return web.json_response({"type": "error", "error": {"type": kind, "message": message},
                              "request_id": "req_fake"}, status=status, headers=headers)


def _text_blocks_ok(blocks: list, where: str) -> None:
    for j, b in enumerate(blocks):
        if b.get("type") == "text" and not b.get("text", "").strip():
            raise Invalid(f"{where}.{j}: text content blocks must contain non-whitespace text")


class FakeAnthropic(LoopbackServer):
    def __init__(self, key: str | None = None):
        self.key = key
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.paths: list[str] = []
        self.port = 0
        self.runner: web.AppRunner | None = None

    def validate(self, body: dict) -> None:
        for k in body:
            if k not in KNOWN_FIELDS:
                raise Invalid(f"{k}: Extra inputs are not permitted")
        if not isinstance(body.get("model"), str):
            raise Invalid("model: Field required")
        if not isinstance(body.get("max_tokens"), int):
            raise Invalid("max_tokens: Field required")
        t, p = body.get("temperature"), body.get("top_p")
        if NO_SAMPLING_MODELS.search(body["model"]):
            for name, ok in (("temperature", t is None or t == 1), ("top_p", p is None or p >= 0.99),
                             ("top_k", "top_k" not in body)):
                if not ok:
                    raise Invalid(f"`{name}` is deprecated for this model.")
        if t is not None and not 0 <= t <= 1:
            raise Invalid("temperature: Input should be less than or equal to 1")
        if t is not None and p is not None:
            raise Invalid("`temperature` and `top_p` cannot both be specified for this model. Please use only one.")
        system = body.get("system")
        if system is not None and not isinstance(system, (str, list)):
            raise Invalid("system: Input should be a valid string")
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise Invalid("messages: at least one message is required")
        if msgs[0]["role"] != "user":
            raise Invalid("messages: first message must use the \"user\" role")
        prev_tool_ids: list[str] = []
        for i, m in enumerate(msgs):
            if m.get("role") not in ("user", "assistant"):
                raise Invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
            if i and msgs[i - 1]["role"] == m["role"]:
                raise Invalid("messages: roles must alternate between \"user\" and \"assistant\", but found multiple "
                              f"\"{m['role']}\" roles in a row")
            content = m.get("content")
            blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
            if not blocks:
                raise Invalid(f"messages.{i}: all messages must have non-empty content except for the optional final "
                              "assistant message")
            _text_blocks_ok(blocks, f"messages.{i}.content")
            if m["role"] == "user":
                results = [b for b in blocks if b.get("type") == "tool_result"]
                seen_other = False
                for b in blocks:
                    if b.get("type") == "tool_result" and seen_other:
                        raise Invalid(f"messages.{i}: tool_result blocks must come first in the content array")
                    seen_other = seen_other or b.get("type") != "tool_result"
                ids = [b.get("tool_use_id") for b in results]
                for tid in ids:
                    if tid not in prev_tool_ids:
                        raise Invalid(f"messages.{i}.content: unexpected `tool_use_id` found in `tool_result` blocks: "
                                      f"{tid}. Each `tool_result` block must have a corresponding `tool_use` block in "
                                      "the previous message.")
                missing = [t for t in prev_tool_ids if t not in ids]
                if missing:
                    raise Invalid(f"messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately "
                                  f"after: {', '.join(missing)}")
                for b in blocks:
                    if b.get("type") == "image":
                        src = b.get("source", {})
                        if src.get("type") == "base64" and src.get("media_type") not in (
                                "image/jpeg", "image/png", "image/gif", "image/webp"):
                            raise Invalid(f"messages.{i}: image media_type invalid")
                        if src.get("type") == "url" and set(src) != {"type", "url"}:
                            raise Invalid(f"messages.{i}: image source url: Extra inputs are not permitted")
                prev_tool_ids = []
            else:
                prev_tool_ids = []
                for b in blocks:
                    if b.get("type") == "tool_use":
                        if not ID_RE.match(b.get("id", "")):
                            raise Invalid(f"messages.{i}.content.tool_use.id: String should match pattern "
                                          "'^[a-zA-Z0-9_-]+$'")
                        prev_tool_ids.append(b["id"])
                if i == len(msgs) - 1:
                    last = blocks[-1]
                    if last.get("type") == "text" and last["text"] != last["text"].rstrip():
                        raise Invalid("messages: final assistant content cannot end with trailing whitespace")
        if prev_tool_ids:
            raise Invalid("messages: `tool_use` ids were found without `tool_result` blocks immediately after")
        for i, tool in enumerate(body.get("tools") or []):
            if not NAME_RE.match(tool.get("name", "")):
                raise Invalid(f"tools.{i}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'")
            if tool.get("input_schema", {}).get("type") != "object":
                raise Invalid(f"tools.{i}.custom.input_schema.type: Input should be 'object'")
        tc = body.get("tool_choice")
        if tc is not None and tc.get("type") not in ("auto", "any", "tool", "none"):
            raise Invalid("tool_choice.type: invalid")
        th = body.get("thinking")
        if th is not None and th.get("type") == "enabled":
            if "adaptive-only" in body["model"]:
                raise Invalid("thinking.type.enabled is not supported for this model. Use thinking.type.adaptive "
                              "and output_config.effort to control thinking behavior.")
            if not 1024 <= th.get("budget_tokens", 0) < body["max_tokens"]:
                raise Invalid("thinking.enabled.budget_tokens: must be ≥ 1024 and less than max_tokens")
            if t is not None and t != 1:
                raise Invalid("temperature may only be set to 1 when thinking is enabled")
            if tc and tc.get("type") in ("any", "tool"):
                raise Invalid("Thinking may not be enabled when tool_choice forces tool use.")
        if body["max_tokens"] > 64000:
            raise Invalid(f"max_tokens: {body['max_tokens']} > 64000, which is the maximum allowed number of output "
                          f"tokens for {body['model']}")
        try:  # and the types the official SDK declares for a request (its nested lists are checked above)
            (STREAMING if body.get("stream") else NON_STREAMING).validate_python(body, strict=True)
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            raise Invalid(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None

    def answer(self, body: dict) -> dict:
        msgs = body["messages"]
        last = msgs[-1]
        blocks = [{"type": "text", "text": last["content"]}] if isinstance(last["content"], str) else last["content"]
        content: list[dict] = []
        thinking = body.get("thinking", {}).get("type") in ("enabled", "adaptive")
        texts = " ".join(b.get("text", "") for b in blocks if b.get("type") == "text")
        if thinking or "THINK:" in texts:
            content.append({"type": "thinking", "thinking": "Considering the request.",
                            "signature": "sig_" + secrets.token_hex(8)})
        tc = body.get("tool_choice") or {}
        results = [b for b in blocks if b.get("type") == "tool_result"]
        if tc.get("type") == "tool":
            tool = next(t for t in body["tools"] if t["name"] == tc["name"])
            props = tool["input_schema"].get("properties", {})
            value = {k: ("Paris" if v.get("type") == "string" else 1) for k, v in props.items()}
            content.append({"type": "tool_use", "id": "toolu_" + secrets.token_hex(6), "name": tc["name"],
                            "input": value})
            stop = "tool_use"
        elif results and last["role"] == "user":
            quoted = " | ".join(r["content"] if isinstance(r.get("content"), str) else json.dumps(r.get("content"))
                                for r in results)
            content.append({"type": "text", "text": f"Tool result received: {quoted}"})
            stop = "end_turn"
        else:
            calls = list(re.finditer(r"TOOL_CALL:([A-Za-z0-9_-]+):(\{.*?\})(?=\s|$)", texts))
            for m in calls:
                content.append({"type": "tool_use", "id": "toolu_" + secrets.token_hex(6), "name": m.group(1),
                                "input": json.loads(m.group(2))})
            if not calls:
                images = sum(1 for m in msgs if isinstance(m["content"], list)
                             for b in m["content"] if b.get("type") == "image")
                docs = sum(1 for m in msgs if isinstance(m["content"], list)
                           for b in m["content"] if b.get("type") == "document")
                system = body.get("system")
                system_text = system if isinstance(system, str) else " ".join(
                    b.get("text", "") for b in system or [])
                text = f"Hello from {body['model']}! You said: {texts.strip()[-60:]}"
                if images:
                    text += f" [saw {images} image(s)]"
                if docs:
                    text += f" [saw {docs} document(s)]"
                if system_text:
                    text += f" [system: {system_text[:80]}]"
                content.append({"type": "text", "text": text})
            stop = "tool_use" if calls else "end_turn"
        for s in body.get("stop_sequences") or []:
            for b in content:
                if b["type"] == "text" and s in b["text"]:
                    b["text"] = b["text"].split(s)[0]
                    stop = "stop_sequence"
        return {"id": "msg_fake" + secrets.token_hex(6), "type": "message", "role": "assistant", "model": body["model"],
                "content": content, "stop_reason": stop,
                "stop_sequence": next((s for s in body.get("stop_sequences") or [] if stop == "stop_sequence"), None),
                "usage": {"input_tokens": max(1, len(json.dumps(msgs)) // 4), "output_tokens": 12,
                          "cache_creation_input_tokens": 0, "cache_read_input_tokens": 3}}

    async def messages(self, request: web.Request) -> web.StreamResponse:
        self.headers.append(dict(request.headers))
        self.paths.append(request.path_qs)
        if self.key is not None and request.headers.get("x-api-key") != self.key:
            return error(401, "authentication_error", "invalid x-api-key")
        if "anthropic-version" not in request.headers:
            return error(400, "invalid_request_error", "anthropic-version: header is required")
        try:
            body = await request.json()
        except ValueError:
            return error(400, "invalid_request_error", "There was an error parsing the body")
        self.requests.append(body)
        model = str(body.get("model", ""))
        if model.startswith("overflow-"):  # the prompt alone exceeds the context window
            return error(400, "invalid_request_error", "prompt is too long: 215000 tokens > 200000 maximum")
        m = re.match(r"status-(\d{3})", model)
        if m:
            status = int(m.group(1))
            kinds = {429: "rate_limit_error", 529: "overloaded_error", 500: "api_error", 404: "not_found_error",
                     401: "authentication_error", 403: "permission_error"}
            return error(status, kinds.get(status, "invalid_request_error"), f"Injected {status}",
                         {"retry-after": "0"} if status in (429, 529) else None)
        if request.path.endswith("/count_tokens"):
            return web.json_response({"input_tokens": 1000 + len(json.dumps(body.get("messages"))) // 4})
        try:
            self.validate(body)
        except Invalid as exc:
            return error(exc.status, exc.kind, str(exc))
        msg = self.answer(body)
        if not body.get("stream"):
            return web.json_response(msg)
        return await self.stream(request, msg, model)

    async def stream(self, request: web.Request, msg: dict, model: str) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        def ev(name: str, data: dict) -> bytes:
            return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()

        start = {**msg, "content": [], "stop_reason": None, "stop_sequence": None,
                 "usage": {**msg["usage"], "output_tokens": 1}}
        frames = [ev("message_start", {"type": "message_start", "message": start}), ev("ping", {"type": "ping"})]
        for i, b in enumerate(msg["content"]):
            if b["type"] == "text":
                frames.append(ev("content_block_start", {"type": "content_block_start", "index": i,
                                                         "content_block": {"type": "text", "text": ""}}))
                for piece in re.findall(r".{1,7}", b["text"], re.DOTALL):
                    frames.append(ev("content_block_delta", {"type": "content_block_delta", "index": i,
                                                             "delta": {"type": "text_delta", "text": piece}}))
            elif b["type"] == "thinking":
                frames.append(ev("content_block_start", {"type": "content_block_start", "index": i, "content_block": {
                    "type": "thinking", "thinking": "", "signature": ""}}))
                frames.append(ev("content_block_delta", {"type": "content_block_delta", "index": i, "delta": {
                    "type": "thinking_delta", "thinking": b["thinking"]}}))
                frames.append(ev("content_block_delta", {"type": "content_block_delta", "index": i, "delta": {
                    "type": "signature_delta", "signature": b["signature"]}}))
            else:
                frames.append(ev("content_block_start", {"type": "content_block_start", "index": i, "content_block": {
                    "type": "tool_use", "id": b["id"], "name": b["name"], "input": {}}}))
                raw = json.dumps(b["input"])
                for piece in [""] + re.findall(r".{1,6}", raw, re.DOTALL):
                    frames.append(ev("content_block_delta", {"type": "content_block_delta", "index": i, "delta": {
                        "type": "input_json_delta", "partial_json": piece}}))
            frames.append(ev("content_block_stop", {"type": "content_block_stop", "index": i}))
        frames.append(ev("message_delta", {"type": "message_delta", "delta": {
            "stop_reason": msg["stop_reason"], "stop_sequence": msg["stop_sequence"]},
            "usage": {"output_tokens": msg["usage"]["output_tokens"]}}))
        frames.append(ev("message_stop", {"type": "message_stop"}))
        if model.startswith("overload-mid"):
            frames = frames[:4] + [ev("error", {"type": "error", "error": {"type": "overloaded_error",
                                                                          "message": "Overloaded"}})]
        if model.startswith("cut-"):
            frames = frames[:5]
        for f in frames:
            await resp.write(f)
        if model.startswith("cut-"):
            await asyncio.sleep(0.05)
            request.transport.close()
            return resp
        await resp.write_eof()
        return resp

    async def models(self, request: web.Request) -> web.Response:
        self.paths.append(request.path_qs)
        if self.key is not None and request.headers.get("x-api-key") != self.key:
            return error(401, "authentication_error", "invalid x-api-key")
        ids = ["claude-opus-4-8", "claude-sonnet-4-5", "claude-haiku-4-5"]
        return web.json_response({"data": [{"type": "model", "id": i, "display_name": i,  # the API since Mar 2026
                                            "created_at": "2025-09-29T00:00:00Z", "lifecycle": "active",
                                            "max_input_tokens": 1000000 if "opus" in i else 200000,
                                            "max_tokens": 128000 if "opus" in i else 64000} for i in ids],
                                  "has_more": False, "first_id": ids[0], "last_id": ids[-1]})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_post("/v1/messages/count_tokens", self.messages)
        app.router.add_get("/v1/models", self.models)
        return app

