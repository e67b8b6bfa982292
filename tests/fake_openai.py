"""A strict fake OpenAI-compatible backend on 127.0.0.1.

It validates requests the way api.openai.com does (unknown parameters, roles, tool-call pairing, tool names,
max_tokens against the model's limit, keys) and answers like it, JSON or SSE. A small scripted "model" decides
the answer from the conversation, so real clients (the SDKs, Claude Code) can run tool loops through it:

* ``TOOL_CALL:<name>:<json>`` in the last user text → a tool call (several markers → parallel calls)
* ``THINK:`` in the last user text → ``reasoning_content`` before the answer
* the last message is a tool result → a text answer quoting it
* otherwise → ``Hello from <model>! You said: ...``

Model names pick quirks and faults: ``overflow-<openai|vllm|llamacpp|gemini|plain>`` (that server's answer to a prompt
longer than its context window), ``*mistral*`` (tool-call ids must be 9 alphanumeric characters, Mistral's
400 otherwise), ``*strict-fields*`` (a 422 for ``reasoning_content``/``extra_content`` in messages), ``*pyargs*`` (tool
arguments written as a Python dict), ``*cumulative*`` (each stream chunk repeats the whole arguments so far), ``*qwen3*`` (a chat template that takes a system message only first: 400,
or with ``500`` in the name an HTTP 500 as Ollama answers), ``*gemini*`` (tool calls without index), ``*ollama*`` (whole tool calls in one
chunk, no usage), ``*small*`` (8192 output tokens max), ``cut-*`` (stream dies mid-answer), ``status-<N>-*``
(answers HTTP N), ``html-*`` (an HTML 502 page), ``nodone-*`` (no [DONE]), ``hang-*`` (never answers),
``stall-*`` (three chunks, then silence), ``silent-<s>`` (silent for s seconds after the first chunk),
``trickle-<s>`` (each chunk s seconds apart), ``flaky-<n>`` (the first n calls answer 503), ``ratelimited-<s>``
(the first call answers 429 with retry-after s), ``reset-*`` (closes the connection without answering),
``echokey-*`` (a 401 quoting the whole Authorization header: worse than any real backend), ``*gemini-3*`` (tool
calls carry a thought_signature that must come back on the next turn, as Gemini 3 demands), ``*r1*`` (reasoning
inlined in the content as <think>…</think>), ``textcalls-<family>*`` (no tool parser: the calls come back as text
in that model family's markup, see ``TEXT_CALLS``; with ``noparser`` in the name, tool_choice "auto" is refused as vLLM
refuses it when started without --enable-auto-tool-choice). Unknown models → 404.
Handlers notice a client that went away and record it in ``aborts``.

Run standalone: ``python tests/fake_openai.py --port 9000 [--key sk-...]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import jsonschema
from aiohttp import web

KNOWN_PARAMS = {
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "stream",
    "stream_options", "stop", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs",
    "user", "tools", "tool_choice", "parallel_tool_calls", "response_format", "seed", "reasoning_effort",
    "functions", "function_call", "metadata", "store", "service_tier", "modalities", "audio", "prediction",
    "safety_identifier", "prompt_cache_key", "verbosity", "web_search_options",
}
MODEL_OUTPUT_LIMIT = {"small": 8192}
DEFAULT_LIMIT = 131072
GEMINI_REJECTED = {"$schema", "additionalProperties", "propertyNames", "const", "exclusiveMinimum",
                   "exclusiveMaximum", "$defs", "definitions", "$ref", "default", "examples", "title"}
NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
OVERFLOW_ANSWERS = {  # model "overflow-<server>": (body, status) of each server's context-overflow answer
    "openai": ({"error": {"message": "This model's maximum context length is 131072 tokens. However, your messages "
                                     "resulted in 140000 tokens. Please reduce the length of the messages.",
                          "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}},
               400),
    "vllm": ({"object": "error", "message": "This model's maximum context length is 32768 tokens. However, you "
                                           "requested 40000 tokens (36000 in the messages, 4000 in the completion). "
                                           "Please reduce the length of the messages or completion.",
              "type": "BadRequestError", "param": None, "code": 400}, 400),
    "llamacpp": ({"error": {"code": 400, "message": "the request exceeds the available context size, try increasing "
                                                     "it", "type": "exceed_context_size_error",
                            "n_prompt_tokens": 40000, "n_ctx": 32768}}, 400),
    "gemini": ([{"error": {"code": 400, "message": "The input token count (1200000) exceeds the maximum number of "
                                                   "tokens allowed (1048576).", "status": "INVALID_ARGUMENT"}}], 400),
    "plain": ({"error": {"message": "The prompt exceeds the context window of this model.", "type": "invalid_request_error",
                         "param": None, "code": None}}, 400),
}
# The request schema of OpenAI's own OpenAPI description (tests/data/openai-chat-request.schema.json says where it
# comes from): every body the proxy sends is checked against it.
with open(Path(__file__).parent / "data" / "openai-chat-request.schema.json", encoding="utf-8") as _fh:
    REQUEST_SCHEMA = jsonschema.Draft202012Validator(json.load(_fh))


def openai_error(status: int, message: str, type_: str = "invalid_request_error", code: Any = None,
                 param: Any = None, headers: dict | None = None) -> web.Response:
    return web.json_response({"error": {"message": message, "type": type_, "param": param, "code": code}},
                             status=status, headers=headers)


def _param_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _xml_params(args: dict, key: str, value: str) -> str:
    return "".join(f"{key.format(k)}{value.format(_param_value(v))}" for k, v in args.items())


# How each model family writes tool calls when the server's tool parser is off: (name, arguments dict) list →
# the text. Forms as the models' chat templates and vLLM's tool parsers have them.
TEXT_CALLS = {
    "hermes": lambda calls: "\n".join(f'<tool_call>\n{json.dumps({"name": n, "arguments": a})}\n</tool_call>'
                                      for n, a in calls),
    "qwen3coder": lambda calls: "\n".join(
        f"<tool_call>\n<function={n}>\n" + _xml_params(a, "<parameter={}>\n", "{}\n</parameter>\n")
        + "</function>\n</tool_call>" for n, a in calls),
    "glm": lambda calls: "".join(f"<tool_call>{n}\n" + _xml_params(a, "<arg_key>{}</arg_key>\n",
                                                                  "<arg_value>{}</arg_value>\n") + "</tool_call>"
                                 for n, a in calls),
    "mistral": lambda calls: "[TOOL_CALLS]" + json.dumps([{"name": n, "arguments": a} for n, a in calls]),
    "mistral11": lambda calls: "".join(f"[TOOL_CALLS]{n}[ARGS]{json.dumps(a)}" for n, a in calls),
    # Markers a server stripped as special tokens (a Hugging Face tokenizer with skip_special_tokens):
    "mistralbare": lambda calls: "".join(f"{n}{json.dumps(a)}" for n, a in calls),
    "kimibare": lambda calls: "".join(f"functions.{n}:{i}{json.dumps(a)}" for i, (n, a) in enumerate(calls)),
    "llama": lambda calls: "; ".join(json.dumps({"name": n, "parameters": a}) for n, a in calls),
    "llamatag": lambda calls: "<|python_tag|>" + "; ".join(json.dumps({"name": n, "parameters": a}) for n, a in calls),
    "kimi": lambda calls: "<|tool_calls_section_begin|>" + "".join(
        f"<|tool_call_begin|>functions.{n}:{i}<|tool_call_argument_begin|>{json.dumps(a)}<|tool_call_end|>"
        for i, (n, a) in enumerate(calls)) + "<|tool_calls_section_end|>",
    "deepseek": lambda calls: "<｜tool▁calls▁begin｜>" + "\n".join(
        f"<｜tool▁call▁begin｜>function<｜tool▁sep｜>{n}\n```json\n{json.dumps(a)}\n```<｜tool▁call▁end｜>"
        for n, a in calls) + "<｜tool▁calls▁end｜>",
    "deepseek31": lambda calls: "<｜tool▁calls▁begin｜>" + "".join(
        f"<｜tool▁call▁begin｜>{n}<｜tool▁sep｜>{json.dumps(a)}<｜tool▁call▁end｜>" for n, a in calls)
        + "<｜tool▁calls▁end｜>",
}
# Families that write a word before the call (the others answer with the call alone).
TEXT_CALL_PREAMBLE = {"hermes": "I'll check that.\n\n", "qwen3coder": "Let me run it.\n", "kimi": "Sure. ",
                      "deepseek": "Running the tool.", "glm": "\n"}


class Reject(Exception):
    def __init__(self, message: str, param: str | None = None, status: int = 400, code: Any = None,
                 body: dict | None = None):
        super().__init__(message)
        self.status, self.param, self.code, self.body = status, param, code, body  # body: another server's shape


class LoopbackServer:
    """start()/stop() for a fake whose ``app()`` builds its aiohttp application; serves on 127.0.0.1."""
    runner: web.AppRunner | None = None
    port = 0

    def app(self) -> web.Application:
        raise NotImplementedError

    async def start(self, port: int = 0) -> int:
        self.runner = web.AppRunner(self.app(), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self.port

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()


class FakeOpenAI(LoopbackServer):
    def __init__(self, key: str | None = None, models: set[str] | None = None):
        self.key = key
        self.models = models  # None: any model not starting with "unknown" exists
        self.n_ctx: int | None = None  # what /props reports (llama.cpp); None: no such endpoint
        self.rate_limited_keys: set[str] = set()  # keys answered with OpenAI's 429 (retry-after 20)
        self.revoked_keys: set[str] = set()  # keys answered with OpenAI's 401
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.port = 0
        self.runner: web.AppRunner | None = None
        self.disconnects = 0
        self.aborts: list[tuple[str, float]] = []  # (model, loop time the client was seen gone)
        self.calls: dict[str, int] = {}

    # ---- validation ---------------------------------------------------------------------------
    def validate(self, body: dict) -> None:
        if not isinstance(body, dict):
            raise Reject("We could not parse the JSON body of your request.")
        for key in body:
            if key not in KNOWN_PARAMS:
                raise Reject(f"Unrecognized request argument supplied: {key}", key)
        if "model" not in body:
            raise Reject("you must provide a model parameter", "model")
        if "stream_options" in body and not body.get("stream"):
            raise Reject("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                         "stream_options")
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise Reject("[] is too short - 'messages'", "messages")
        if "noparser" in body["model"] and body.get("tools") and body.get("tool_choice", "auto") == "auto":
            raise Reject("", body={"object": "error", "message": '"auto" tool choice requires --enable-auto-tool-choice '
                                   'and --tool-call-parser to be set', "type": "BadRequestError", "param": None,
                                   "code": 400})
        if "qwen3" in body["model"].lower() and any(m.get("role") == "system" for m in msgs[1:]):
            # Qwen 3's chat template raises this; vLLM, SGLang and current llama.cpp answer 400, Ollama and older
            # llama.cpp servers an HTTP 500 with the template's error (model names with "500").
            raise Reject("System message must be at the beginning.", None, 500 if "500" in body["model"] else 400)
        self._provider_rules(body["model"].lower(), msgs)
        owed: list[str] = []
        for i, m in enumerate(msgs):
            role = m.get("role")
            if role not in ("system", "developer", "user", "assistant", "tool"):
                raise Reject(f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', "
                             f"'tool', and 'function'.", f"messages[{i}].role")
            if role == "tool":
                if m.get("tool_call_id") not in owed:
                    raise Reject("Invalid parameter: messages with role 'tool' must be a response to a preceeding "
                                 "message with 'tool_calls'.", f"messages.[{i}].role")
                owed.remove(m["tool_call_id"])
                self._check_text_content(m.get("content"), i, text_only=True)
                continue
            if owed:
                raise Reject("An assistant message with 'tool_calls' must be followed by tool messages responding "
                             "to each 'tool_call_id'. The following tool_call_ids did not have response messages: "
                             + ", ".join(owed), f"messages.[{i}].role")
            if role == "assistant":
                for call in m.get("tool_calls") or []:
                    if "gemini-3" in body["model"]:
                        sig = ((call.get("extra_content") or {}).get("google") or {}).get("thought_signature")
                        if sig != f"sig/{call.get('id')}+=":
                            raise Reject(f"Function call is missing a thought_signature in functionCall parts. "
                                         f"(call {call.get('id')})", f"messages[{i}]")
                    if call.get("type") != "function" or not isinstance(call.get("function", {}).get("arguments"),
                                                                          str):
                        raise Reject("Invalid tool_calls entry", f"messages.[{i}].tool_calls")
                    json.loads(call["function"]["arguments"])
                    owed.append(call["id"])
                if m.get("content") is None and not m.get("tool_calls"):
                    raise Reject("Invalid value for 'content': expected a string, got null.",
                                 f"messages.[{i}].content")
                if m.get("content") is not None:
                    self._check_text_content(m["content"], i, text_only=True)
            else:
                self._check_text_content(m.get("content"), i, text_only=role != "user")
        if owed:
            raise Reject("An assistant message with 'tool_calls' must be followed by tool messages responding to "
                         "each 'tool_call_id'. The following tool_call_ids did not have response messages: "
                         + ", ".join(owed), "messages")
        for i, tool in enumerate(body.get("tools") or []):
            fn = tool.get("function") or {}
            if tool.get("type") != "function" or not NAME_RE.match(fn.get("name", "")):
                raise Reject(f"Invalid 'tools[{i}].function.name': string does not match pattern. Expected a "
                             f"string that matches the pattern '^[a-zA-Z0-9_-]+$'.", f"tools[{i}].function.name")
            if "gemini" in body["model"]:
                bad = self._find_keys(fn.get("parameters"), GEMINI_REJECTED)
                if bad:
                    raise Reject(f'Invalid JSON payload received. Unknown name "{bad}" at '
                                 f"'tools[0].function_declarations[{i}].parameters': Cannot find field.")
        tc = body.get("tool_choice")
        if tc is not None and tc not in ("auto", "none", "required") and not (
                isinstance(tc, dict) and tc.get("type") == "function"):
            raise Reject(f"Invalid value: '{tc}'. Supported values are: 'none', 'auto', and 'required'.",
                         "tool_choice")
        for param, marker in (("stream_options", "oldserver"), ("reasoning_effort", "gpt-4o"),
                              ("temperature", "o3")):
            if marker in body["model"] and param in body:
                raise Reject(f"Unrecognized request argument supplied: {param}" if param != "temperature" else
                             "Unsupported parameter: 'temperature' is not supported with this model.", param)
        if "temperature" in body and not (0 <= body["temperature"] <= 2):
            raise Reject("temperature out of range", "temperature")
        limit = next((v for k, v in MODEL_OUTPUT_LIMIT.items() if k in body["model"]), DEFAULT_LIMIT)
        asked = body.get("max_completion_tokens", body.get("max_tokens"))
        if asked is not None and asked > limit:
            raise Reject(f"max_tokens is too large: {asked}. This model supports at most {limit} completion tokens, "
                         f"whereas you provided {asked}.", "max_tokens", code="invalid_value")
        error = jsonschema.exceptions.best_match(REQUEST_SCHEMA.iter_errors(body))
        if error is not None:  # everything else the official API schema says of a request
            path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
            raise Reject(f"Invalid value for '{path}': {error.message}", path or None)

    def _provider_rules(self, model: str, msgs: list) -> None:
        """Mistral takes tool-call ids of exactly 9 alphanumeric characters; servers that validate messages
        strictly (pydantic, extra="forbid") refuse the extension fields other backends want."""
        if "mistral" in model:
            for m in msgs:
                ids = [c.get("id") for c in m.get("tool_calls") or []] + [m.get("tool_call_id")] * ("tool_call_id" in m)
                for tool_id in ids:
                    if not re.fullmatch(r"[a-zA-Z0-9]{9}", str(tool_id)):
                        message = f"Tool call id was {tool_id} but must be a-z, A-Z, 0-9, with a length of 9."
                        raise Reject(message, body={"object": "error", "message": message,
                                                    "type": "invalid_request_error", "param": None, "code": None})
        if "strict-fields" in model:
            for i, m in enumerate(msgs):
                for name in ("reasoning_content", "extra_content"):
                    places = [m] + [c for c in m.get("tool_calls") or [] if isinstance(c, dict)]
                    if any(name in place for place in places):
                        raise Reject("Extra inputs are not permitted", status=422, body={"detail": [{
                            "type": "extra_forbidden", "loc": ["body", "messages", i, name],
                            "msg": "Extra inputs are not permitted", "input": "…"}]})

    def _check_text_content(self, content: Any, i: int, text_only: bool) -> None:
        if isinstance(content, str):
            return
        if not isinstance(content, list):
            raise Reject(f"Invalid type for 'messages[{i}].content': expected one of a string or array of objects.",
                         f"messages[{i}].content")
        allowed = {"text"} if text_only else {"text", "image_url", "file", "input_audio"}
        for j, part in enumerate(content):
            if part.get("type") not in allowed:
                raise Reject(f"Invalid value: '{part.get('type')}'. Supported values are: "
                             f"{', '.join(sorted(allowed))}.", f"messages[{i}].content[{j}].type")

    def _find_keys(self, schema: Any, keys: set[str]) -> str | None:
        if isinstance(schema, dict):
            for k, v in schema.items():
                if k in keys:
                    return k
                found = self._find_keys(v if k != "properties" else list(v.values()), keys)
                if found:
                    return found
        elif isinstance(schema, list):
            for v in schema:
                found = self._find_keys(v, keys)
                if found:
                    return found
        return None

    # ---- the scripted model -------------------------------------------------------------------
    def answer(self, body: dict) -> dict:
        msgs = body["messages"]
        last = msgs[-1]
        reasoning = None
        calls = []
        if last["role"] == "tool":
            results = []
            for m in reversed(msgs):
                if m["role"] != "tool":
                    break
                results.append(m["content"] if isinstance(m["content"], str) else json.dumps(m["content"]))
            text = "Tool result received: " + " | ".join(reversed(results))[:400]
        else:
            user_text = ""
            for m in reversed(msgs):
                if m["role"] == "user":
                    c = m["content"]
                    user_text = c if isinstance(c, str) else " ".join(
                        p.get("text", "") for p in c if p.get("type") == "text")
                    break
            if "THINK:" in user_text:
                reasoning = "Let me think about this carefully."
            for n, m in enumerate(re.finditer(r"TOOL_CALL:([A-Za-z0-9_-]+):(\{.*?\})(?=\s|$)", user_text)):
                arguments = m.group(2)
                if "pyargs" in body["model"]:  # a model writing its arguments as a Python dict
                    arguments = repr(json.loads(arguments))
                calls.append({"id": f"c{n}{int(time.time() * 1000) % 10000000:07d}" if "mistral" in body["model"].lower()
                              else f"call_{n}_{int(time.time() * 1000) % 100000}", "name": m.group(1),
                              "arguments": arguments})
            forced = (body.get("tool_choice") or {}).get("function", {}).get("name") \
                if isinstance(body.get("tool_choice"), dict) else None
            if forced and not calls:  # a forced tool is called, as a real model must: with the user's words
                tool = next(t["function"] for t in body.get("tools", []) if t["function"]["name"] == forced)
                words = user_text.strip().rsplit("\n", 1)[-1][-200:]
                calls.append({"id": f"call_f_{int(time.time() * 1000) % 100000}", "name": forced, "arguments":
                              json.dumps({"query": words} if "query" in tool["parameters"].get("properties", {})
                                         else {})})
            images = sum(1 for m in msgs if isinstance(m.get("content"), list)
                         for p in m["content"] if p.get("type") == "image_url")
            text = "" if calls else f"Hello from {body['model']}! You said: {user_text.strip()[-80:]}"
            if images and not calls:
                text += f" [saw {images} image(s)]"
        prompt_tokens = max(1, len(json.dumps(msgs)) // 4)
        return {"text": text, "reasoning": reasoning, "calls": calls, "prompt_tokens": prompt_tokens,
                "completion_tokens": max(1, len(text) // 4 + 5 * len(calls))}

    # ---- HTTP -------------------------------------------------------------------------------
    async def chat(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        self.headers.append(dict(request.headers))
        try:
            body = await request.json()
        except ValueError:
            return openai_error(400, "We could not parse the JSON body of your request.")
        self.requests.append(body)
        used = auth[7:]
        if used in self.rate_limited_keys:  # OpenAI's answer to a key over its requests-per-minute limit
            return openai_error(429, "Rate limit reached for gpt-4o in organization org-fake on requests per min "
                                     "(RPM): Limit 3, Used 3, Requested 1. Please try again in 20s. Visit "
                                     "https://platform.openai.com/account/rate-limits to learn more.", "requests",
                                "rate_limit_exceeded", headers={"retry-after": "20"})
        if (self.key is not None and auth != f"Bearer {self.key}") or used in self.revoked_keys:
            shown = auth[7:][:3] + "*" * 10 + auth[-4:] if len(auth) > 14 else auth
            return openai_error(401, f"Incorrect API key provided: {shown}. You can find your API key at "
                                     f"https://platform.openai.com/account/api-keys.", code="invalid_api_key")
        model = str(body.get("model", ""))
        self.calls[model] = self.calls.get(model, 0) + 1
        fault = await self.fault(request, model)
        if fault is not None:
            return fault
        m = re.match(r"status-(\d{3})", model)
        if m:
            status = int(m.group(1))
            headers = {"retry-after": "0"} if status == 429 else None
            return openai_error(status, f"Injected failure {status}", "server_error" if status >= 500 else
                                "rate_limit_error" if status == 429 else "invalid_request_error", headers=headers)
        if model.startswith("overflow-"):  # the prompt alone exceeds the context window, as each server says it
            answer, status = OVERFLOW_ANSWERS[model.split("-")[1]]
            return web.json_response(answer, status=status)
        if model.startswith("html-"):
            return web.Response(status=502, content_type="text/html",
                                text="<html><head><title>502 Bad Gateway</title></head><body><center>"
                                     "<h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>")
        if model.startswith("unknown") or (self.models is not None and model not in self.models):
            return openai_error(404, f"The model `{model}` does not exist or you do not have access to it.",
                                code="model_not_found")
        try:
            self.validate(body)
        except Reject as exc:
            if exc.body is not None:
                return web.json_response(exc.body, status=exc.status)
            return openai_error(exc.status, str(exc), param=exc.param, code=exc.code)
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            return openai_error(400, f"Invalid request: {exc}")
        ans = self.answer(body)
        family = re.match(r"textcalls-([a-z0-9]+)", model)
        if family and ans["calls"]:  # no tool parser: the model's calls arrive as text
            calls = [(c["name"], json.loads(c["arguments"])) for c in ans["calls"]]
            ans["text"] = TEXT_CALL_PREAMBLE.get(family.group(1), "") + TEXT_CALLS[family.group(1)](calls)
            ans["calls"] = []
        if "r1" in model and ans["text"]:
            ans["text"] = "<think>\nWeighing the options.\n</think>\n\n" + ans["text"]
        if "gemini-3" in model:
            for call in ans["calls"]:
                call["extra_content"] = {"google": {"thought_signature": f"sig/{call['id']}+="}}
        if body.get("stream"):
            return await self.stream(request, body, ans)
        message: dict[str, Any] = {"role": "assistant", "content": ans["text"] or None, "refusal": None}
        if ans["reasoning"]:
            message["reasoning_content"] = ans["reasoning"]
        if ans["calls"]:
            message["tool_calls"] = [{"id": c["id"], "type": "function",
                                      "function": {"name": c["name"], "arguments": c["arguments"]},
                                      **({"extra_content": c["extra_content"]} if "extra_content" in c else {})}
                                     for c in ans["calls"]]
        return web.json_response({
            "id": "chatcmpl-fake123", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": "tool_calls" if ans["calls"] else "stop"}],
            "usage": {"prompt_tokens": ans["prompt_tokens"], "completion_tokens": ans["completion_tokens"],
                      "total_tokens": ans["prompt_tokens"] + ans["completion_tokens"],
                      "prompt_tokens_details": {"cached_tokens": 0}}})

    async def wait_or_abort(self, request: web.Request, model: str, seconds: float) -> bool:
        """Sleep, watching the connection; True (and recorded) if the client went away."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while loop.time() < end:
            if request.transport is None or request.transport.is_closing():
                self.aborts.append((model, loop.time()))
                return True
            await asyncio.sleep(0.02)
        return False

    async def fault(self, request: web.Request, model: str) -> web.StreamResponse | None:
        n = self.calls[model]
        if model.startswith("hang-"):
            await self.wait_or_abort(request, model, 3600)
            return web.Response(status=499)
        if model.startswith("reset-"):
            request.transport.close()
            return web.Response(status=499)
        if model.startswith("echokey-"):
            return openai_error(401, f"Incorrect API key provided: {request.headers.get('Authorization')}",
                                code="invalid_api_key")
        m = re.match(r"flaky-(\d+)", model)
        if m and n <= int(m.group(1)):
            return openai_error(503, "The server is overloaded, try again", "server_error")
        m = re.match(r"ratelimited-([\d.]+)", model)
        if m and n == 1:
            return openai_error(429, "Rate limit reached", "rate_limit_error", "rate_limit_exceeded",
                                headers={"retry-after": m.group(1)})
        return None

    async def stream(self, request: web.Request, body: dict, ans: dict) -> web.StreamResponse:
        model = body["model"]
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        base = {"id": "chatcmpl-fake456", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": model}

        def chunk(delta: dict | None, finish: str | None = None, **extra: Any) -> bytes:
            choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None,
                                                 "finish_reason": finish}]
            return b"data: " + json.dumps({**base, "choices": choices, **extra}).encode() + b"\n\n"

        frames = [chunk({"role": "assistant", "content": "", "refusal": None})]
        if ans["reasoning"]:
            for piece in re.findall(r".{1,8}", ans["reasoning"], re.DOTALL):
                frames.append(chunk({"reasoning_content": piece}))
        for piece in re.findall(r".{1,6}", ans["text"], re.DOTALL):
            frames.append(chunk({"content": piece}))
        for n, call in enumerate(ans["calls"]):
            if "ollama" in model:
                frames.append(chunk({"tool_calls": [{"index": n, "id": call["id"], "type": "function", "function": {
                    "name": call["name"], "arguments": call["arguments"]}}]}))
            elif "gemini" in model:
                frames.append(chunk({"tool_calls": [{"id": call["id"], "type": "function", "function": {
                    "name": call["name"], "arguments": call["arguments"]},
                    **({"extra_content": call["extra_content"]} if "extra_content" in call else {})}]}))
            else:
                frames.append(chunk({"tool_calls": [{"index": n, "id": call["id"], "type": "function",
                                                     "function": {"name": call["name"], "arguments": ""}}]}))
                pieces = re.findall(r".{1,5}", call["arguments"], re.DOTALL)
                if "cumulative" in model:  # every chunk repeats the whole argument string so far
                    pieces = ["".join(pieces[:k + 1]) for k in range(len(pieces))]
                for piece in pieces:
                    frames.append(chunk({"tool_calls": [{"index": n, "function": {"arguments": piece}}]}))
        frames.append(chunk({}, "tool_calls" if ans["calls"] else "stop"))
        usage = {"prompt_tokens": ans["prompt_tokens"], "completion_tokens": ans["completion_tokens"],
                 "total_tokens": ans["prompt_tokens"] + ans["completion_tokens"]}
        if (body.get("stream_options") or {}).get("include_usage") and "ollama" not in model:
            frames.append(chunk(None, usage=usage))
        if not model.startswith("nodone-"):
            frames.append(b"data: [DONE]\n\n")
        if model.startswith("cut-"):
            frames = frames[: max(2, len(frames) // 2)]
        delay = float(model.split("-")[1]) if re.match(r"trickle-[\d.]+", model) else 0.0
        try:
            for i, frame in enumerate(frames):
                await resp.write(frame)
                if model.startswith("stall-") and i == 2:
                    await self.wait_or_abort(request, model, 3600)
                    return resp
                if model.startswith("silent-") and i == 0 and await self.wait_or_abort(
                        request, model, float(model.split("-")[1])):
                    return resp
                if delay and await self.wait_or_abort(request, model, delay):
                    return resp
            if model.startswith("cut-"):
                await asyncio.sleep(0.05)
                request.transport.close()  # die mid-stream, no [DONE], no finish_reason
                return resp
            await resp.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnects += 1
            raise
        return resp

    async def models_list(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": "fake-model", "object": "model", "created": 1700000000, "owned_by": "fake"},
            {"id": "overflow-plain-vllm", "object": "model", "created": 1700000000, "owned_by": "vllm",
             "max_model_len": 4096}]})  # vLLM reports each model's window

    async def props(self, request: web.Request) -> web.Response:
        """llama.cpp's server properties, with the context size it was started with (``n_ctx`` set by a test)."""
        if self.n_ctx is None:
            return web.Response(status=404, text="File Not Found")
        return web.json_response({"default_generation_settings": {"n_ctx": self.n_ctx}, "total_slots": 1})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/v1/models", self.models_list)
        app.router.add_get("/props", self.props)
        return app



def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--key", default=None)
    parser.add_argument("--log", default=None, help="append each request body as a JSON line to this file")
    args = parser.parse_args()
    fake = FakeOpenAI(key=args.key)
    if args.log:
        original = fake.validate

        def logging_validate(body: dict) -> None:
            with open(args.log, "a") as fh:
                fh.write(json.dumps(body) + "\n")
            original(body)
        fake.validate = logging_validate  # type: ignore[method-assign]
    web.run_app(fake.app(), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
