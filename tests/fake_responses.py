"""A strict fake of OpenAI's Responses API (``POST /v1/responses``) on 127.0.0.1.

It validates a request the way api.openai.com does (unknown parameters, types, enums, input items, tool schemas,
tool-call pairing, reasoning items replayed without their encrypted content, ``previous_response_id``) and answers
like it: the error envelope ``{"error": {"message", "type", "param", "code"}}`` with the API's own status codes and
wordings, a whole ``Response`` object as JSON, or an SSE stream with the real event grammar. It keeps no state
(every ``previous_response_id`` is unknown, as it is for a caller that sends ``store: false``). A scripted "model"
decides the answer from the conversation, so clients can run tool loops through it:

* ``TOOL_CALL:<name>:<json>`` in the last user text → a ``function_call`` item (several markers → several calls),
  only for a name among the request's function tools; for a custom tool (``{"type": "custom"}``) a
  ``custom_tool_call`` whose input is the json's ``"input"`` string. A forced ``tool_choice`` is obeyed.
* ``THINK:`` in the last user text, or a model name containing ``reason`` → a ``reasoning`` item first. Its summary
  ("Let me think about this carefully.") comes only when ``reasoning.summary`` is set, its ``encrypted_content`` (an
  opaque base64 blob naming the response, the item and the turn) only when ``include`` has
  ``"reasoning.encrypted_content"`` — otherwise the key is absent, as the API leaves it.
* the last input item is a tool output → ``Tool result received: <outputs joined by " | ">`` (first 400 chars)
* otherwise → ``Hello from <model>! You said: <last 80 chars of the last user text>``
* usage: input tokens ~ len(JSON)/4, cached 0, output and reasoning tokens; an answer longer than
  ``max_output_tokens`` is cut and comes back ``incomplete`` (reason ``max_output_tokens``), as the API does.

Model-name quirks: ``*reason*`` (a reasoning model: temperature/top_p/logprobs refused, and the fake's stand-in
for "reasoning must be carried across turns": a ``function_call_output`` for a call this fake made in a turn that
produced a reasoning item needs that reasoning item, with its ``encrypted_content``, earlier in the input than the
``function_call``; else a 400 saying so; each request that carried them right counts in ``reasoning_replays``),
``gpt-4*`` / ``chatgpt*`` (not reasoning models: ``reasoning.effort`` and ``include: reasoning.encrypted_content``
refused as the API refuses them), ``status-<N>-*`` (HTTP N with an error body in the API's shape),
``incomplete-*`` (status ``incomplete``, text cut short), ``cut-*`` (the stream dies mid-answer, no
``response.completed``), ``failed-*`` (``response.failed`` with an error object; the JSON answer has status
``failed``), ``unknown*`` (no such model). ``strict_when_absent`` (attribute, default False): validate a function
tool without ``strict`` as strict (see below). ``implicit_strict`` lists the function tools sent without ``strict``.

Streaming: ``event: <type>\\ndata: <json>\\n\\n``, ``sequence_number`` from 0: ``response.created``,
``response.in_progress``; per output item ``response.output_item.added``, then (reasoning)
``reasoning_summary_part.added``, ``reasoning_summary_text.delta``…, ``reasoning_summary_text.done``,
``reasoning_summary_part.done``; (message) ``content_part.added``, ``output_text.delta``…, ``output_text.done``,
``content_part.done``; (function call) ``function_call_arguments.delta``…, ``.done``; (custom tool call)
``custom_tool_call_input.delta``…, ``.done``; then ``response.output_item.done``; last ``response.completed``
(``response.incomplete``, ``response.failed``) with the whole response. No ``[DONE]``. Deltas carry an
``obfuscation`` field unless ``stream_options.include_obfuscation`` is false. The reasoning item in
``output_item.added`` has no ``encrypted_content``: it comes only in ``output_item.done`` and the final response
(the real API sends a *different*, partial blob in ``.added``; a client must take the one from ``.done``).

What was verified, and where (the ``search``/``read_file`` corpora: public repositories and issue threads):

* Request keys: the 34 of ``ResponseCreateParamsBase`` (+ ``stream``) in the installed openai SDK 3.57; every
  request/response/event type from ``openai/types/responses/*.py``; the SDK's stream accumulator
  (``openai/lib/streaming/responses/_responses.py``) and ``parse_response``.
* Stream grammar, item shapes (reasoning items carry no ``status``; ``summary: []`` and no ``encrypted_content``
  key without ``include``; ``function_call`` added with ``status: in_progress`` and ``arguments: ""``; message
  added with ``content: []``; ``output_text`` parts with ``annotations: []``, ``logprobs: []``; ``obfuscation``),
  the response object's fields and defaults, a ``response.failed`` carrying ``{"code", "message"}``: recordings
  of the live API in vercel/ai ``packages/openai/src/responses/__fixtures__/`` (openai-reasoning-encrypted-content,
  azure-gpt5-reasoning-multi-summary-no-encryption, openai-response-failed-only, openai-error). Custom tool calls
  (``ctc_`` ids, ``custom_tool_call_input.delta/.done``): Codex rollouts and proxies' tests in the index.
  Which events Codex reads (``output_item.done``, ``completed`` with ``usage``, ``failed`` with ``error.code``):
  openai/codex ``codex-rs/codex-api/src/sse/responses.rs``; Codex replays reasoning items *without* ``id`` (and
  without ``status``): ``codex-rs/protocol/src/models.rs``.
* Error wordings (message, param, code, status), from a conformance table of direct observations against the
  live API on 2026-08-30 (a ``*-validation-parity.test.mjs`` in the index) and from issue threads quoting real
  answers: ``Unknown parameter: 'x'.`` + ``Did you mean 'y'?`` (edit distance <= 2, keys already sent excluded);
  the ``messages`` hint; ``Missing required parameter: 'model'.`` / ``'input'.``; ``Invalid type for 'x':
  expected …, but got … instead.``; ``Invalid value: 'x'. Supported values are: …`` (roles, item types, content
  part types, include, truncation, service_tier, reasoning.effort/summary, text.format.type, verbosity, phase,
  tool_choice); ``Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16, but got N
  instead.`` (integer_below_min_value); ``Previous response with id 'x' not found.`` (400,
  previous_response_not_found: bigduu/Bamboo-agent#513, maximhq/bifrost#2441); ``Conversation/Prompt with id 'x'
  not found.`` (404); ``The requested model 'x' does not exist.`` (400, param model, model_not_found — the
  Responses API's answer to an unknown model, seen through the Python SDK and Codex; NOT Chat Completions' 404
  "The model `x` does not exist or you do not have access to it."); ``Unsupported parameter: 'temperature' is
  not supported with this model.``; ``logprobs are not supported with reasoning models.``;
  ``Unsupported parameter: 'reasoning.effort' is not supported with this model.`` and ``Encrypted content is not
  supported with this model.`` (param include) for gpt-4-class models; ``No tool call found for function call
  output with call_id X.`` and ``No tool output found for function call X.`` (400, param input, code null;
  custom-tool variants likewise); ``Item with id 'rs_…' not found. Items are not persisted when `store` is set
  to false. Try again with `store` set to true, or remove this item from your input.`` — HTTP **404**,
  invalid_request_error, param input, code null (home-assistant/core#150251, vercel/ai#10290,
  can1357/oh-my-pi#41); ``The encrypted content for item rs_… could not be verified. Reason: Encrypted content
  could not be decrypted or parsed.`` (400, invalid_encrypted_content); ``Item 'rs_…' of type 'reasoning' was
  provided without its required following item.``; a replayed reasoning item with ``status`` →
  ``Unknown parameter: 'input[N].status'.`` (unknown_parameter; live A/B on gpt-5.6-sol in
  digitallyinduced/haskell-agent#689, zyycn/codex-proxy-rs#201, lidge-jun/opencodex#2252); a reasoning item
  with non-empty ``content`` → ``Invalid 'input[N].content': array too long. Expected an array with maximum
  length 0, …`` (array_above_max_length); ``Invalid 'input[N].id': 'x'. Expected an ID that begins with 'fc'.``;
  strict schemas: ``Invalid schema for function 'NAME': In context=('properties', 'x'), 'additionalProperties'
  is required to be supplied and to be false.`` / ``… 'required' is required to be supplied and to be an array
  including every key in properties. Missing 'y'.`` / ``'oneOf' is not permitted.`` (param
  tools[i].parameters, code invalid_function_parameters), and ``schema must be a JSON Schema of 'type:
  "object"', got 'type: "None"'.``; 401 ``Incorrect API key provided: …`` (invalid_api_key).
* A function tool *without* ``strict`` is NOT refused by the real API: OpenAI's function-calling guide says
  Responses "will attempt to normalize your schema into strict mode when possible, and will fall back to
  non-strict, best-effort function calling if the schema cannot be made compatible" (quoted in
  0xPlaygrounds/rig#2477; vercel/ai#15889, open-webui#30046). So only ``strict: true`` is checked, unless
  ``strict_when_absent`` is set; the echoed tool says ``strict: true`` when the schema could be normalized.

Not verified (plausible choices): the non-streaming answer of a ``failed`` response (200 with status ``failed``
here); the order between checks the table does not cover; the ``id`` prefix rule for items other than
``function_call`` ('rs', 'msg', 'ctc' assumed); when exactly "without its required following item" fires (here: a
reasoning item with an ``id`` that is last or followed by a user/system/developer message or a tool output); the
wording for a reasoning item with neither ``id`` nor ``encrypted_content``; whether ``Missing 'a'`` lists several
keys; the echoed ``tools`` after strict normalization; the bodies of ``status-<N>`` errors other than 500/429.
``reasoning.generate_summary`` is refused as unknown (live table), though the SDK still lists it.

Run standalone: ``python tests/fake_responses.py --port 9001 [--key sk-...]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
import secrets
import time
from typing import Any

from aiohttp import web
from fake_openai import LoopbackServer, Reject, openai_error

# ResponseCreateParamsBase in the openai SDK (3.57), plus "stream": the keys the endpoint knows.
KNOWN_PARAMS = (
    "model", "input", "include", "instructions", "max_output_tokens", "max_tool_calls", "metadata",
    "parallel_tool_calls", "previous_response_id", "prompt", "prompt_cache_key", "prompt_cache_options",
    "prompt_cache_retention", "reasoning", "safety_identifier", "service_tier", "store", "stream", "stream_options",
    "temperature", "text", "tool_choice", "tools", "top_logprobs", "top_p", "truncation", "user", "background",
    "background_options", "context_management", "conversation", "image", "moderation", "access_programs",
)
INCLUDABLE = ("file_search_call.results", "web_search_call.results", "web_search_call.action.sources",
              "message.input_image.image_url", "computer_call_output.output.image_url",
              "code_interpreter_call.outputs", "reasoning.encrypted_content", "message.output_text.logprobs")
ITEM_TYPES = ("additional_tools", "agent_message", "apply_patch_call", "apply_patch_call_output",
              "code_interpreter_call", "compaction", "compaction_trigger", "computer_call", "computer_call_output",
              "custom_tool_call", "custom_tool_call_output", "file_search_call", "function_call",
              "function_call_output", "image_generation_call", "item_reference", "local_shell_call",
              "local_shell_call_output", "mcp_approval_request", "mcp_approval_response", "mcp_call",
              "mcp_list_tools", "message", "multi_agent_call", "multi_agent_call_output", "program",
              "program_output", "reasoning", "shell_call", "shell_call_output", "tool_search_call",
              "tool_search_output", "web_search_call")
ROLES = ("assistant", "system", "developer", "user")
PART_TYPES = ("input_text", "input_image", "input_audio", "output_text", "refusal", "input_file",
              "computer_screenshot", "summary_text", "encrypted_content")
INPUT_PARTS = ("input_text", "input_image", "input_file", "scoped_content", "input_audio")
OUTPUT_PARTS = ("output_text", "refusal")
TOOL_OUTPUT_PARTS = ("input_text", "input_image", "input_file", "scoped_content")
TOOL_TYPES = ("function", "custom", "file_search", "web_search", "web_search_preview", "computer_use_preview",
              "computer", "mcp", "code_interpreter", "image_generation", "local_shell", "shell", "apply_patch",
              "tool_search", "namespace")
ITEM_KEYS = {  # the members an input item may carry (the SDK's param types; status refused on reasoning items)
    "message": {"type", "role", "content", "id", "status"},
    "function_call": {"type", "call_id", "name", "arguments", "id", "status", "namespace", "caller", "async"},
    "function_call_output": {"type", "call_id", "output", "id", "status", "caller", "name", "namespace"},
    "reasoning": {"type", "id", "summary", "content", "encrypted_content"},
    "custom_tool_call": {"type", "call_id", "name", "input", "id", "status", "namespace", "caller", "async"},
    "custom_tool_call_output": {"type", "call_id", "output", "id", "caller"},
    "item_reference": {"type", "id"},
}
ID_PREFIX = {"function_call": "fc", "reasoning": "rs", "custom_tool_call": "ctc", "message": "msg"}
FUNCTION_TOOL_KEYS = {"type", "name", "description", "parameters", "strict", "async", "allowed_callers",
                      "defer_loading", "output_schema"}
CUSTOM_TOOL_KEYS = {"type", "name", "description", "format", "async", "allowed_callers", "defer_loading"}
NAME_RE = re.compile(r"^[a-zA-Z0-9_-]+$")
ENUMS = {"truncation": ("auto", "disabled"), "prompt_cache_retention": ("in_memory", "24h"),
         "service_tier": ("auto", "default", "fast", "flex", "priority")}
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
SUMMARIES = ("concise", "detailed", "auto")
# (key, expected kind, the API's name for it) in the order the API reports them.
TYPED_PARAMS = (
    ("tools", list, "an array of tools"), ("metadata", dict, "a metadata object"), ("text", dict, "an object"),
    ("temperature", float, "a decimal"), ("top_p", float, "a decimal"), ("parallel_tool_calls", bool, "a boolean"),
    ("stream", bool, "a boolean"), ("stream_options", dict, "an object"), ("background", bool, "a boolean"),
    ("max_output_tokens", int, "an integer"), ("max_tool_calls", int, "an integer"), ("reasoning", dict, "an object"),
    ("user", str, "a string"), ("safety_identifier", str, "a string"), ("prompt_cache_options", dict, "an object"),
    ("prompt_cache_key", str, "a string"), ("instructions", str, "a string"), ("store", bool, "a boolean"),
    ("top_logprobs", int, "an integer"), ("context_management", list, "an array of objects"),
    ("moderation", dict, "an object"), ("previous_response_id", str, "a string"), ("prompt", dict, "an object"),
)
SUMMARY_TEXT = "Let me think about this carefully."
BLOB_PREFIX = "gAAAAAB"  # what the API's encrypted blobs look like (Fernet tokens); the rest is base64 JSON
CALL_ID_RE = re.compile(r"call_([RN])([0-9a-f]{20})(\d{3})")
SERVER_ERROR = ("An error occurred while processing your request. You can retry your request, or contact us through "
                "our help center at help.openai.com if the error persists. Please include the request ID {} in "
                "your message.")
STATUS_ERRORS = {  # status-<N>-* models: (message, type, code)
    400: ("Bad request.", "invalid_request_error", None),
    403: ("You are not allowed to sample from this model", "invalid_request_error", None),
    408: ("Request timed out.", "invalid_request_error", None),
    429: ("Rate limit reached for requests. Please try again in 20ms. Visit https://platform.openai.com/account/"
          + "rate-limits to learn more.", "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request. Sorry about that!", "server_error", None),
    502: ("Bad gateway.", "server_error", None),
    503: ("The server is overloaded or not ready yet.", "server_error", None),
}


def kind_of(value: Any, null: str = "an object") -> str:
    """How the API names a JSON value's type in 'but got … instead' (null counts as an object at a typed key)."""
    if value is None:
        return null
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def is_kind(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def one_of(values: tuple[str, ...] | list[str]) -> str:
    quoted = [f"'{v}'" for v in values]
    return quoted[0] if len(quoted) == 1 else (", ".join(quoted[:-1]) + (", and " if len(quoted) > 2 else " and ")
                                                + quoted[-1])


def invalid_value(value: Any, supported: tuple[str, ...] | list[str], param: str) -> Reject:
    shown = value if isinstance(value, str) else ""
    return Reject(f"Invalid value: '{shown}'. Supported values are: {one_of(supported)}.", param, code="invalid_value")


def invalid_type(param: str, expected: str, value: Any, null: str = "an object") -> Reject:
    return Reject(f"Invalid type for '{param}': expected {expected}, but got {kind_of(value, null)} instead.", param,
                  code="invalid_type")


def missing(param: str) -> Reject:
    return Reject(f"Missing required parameter: '{param}'.", param, code="missing_required_parameter")


def unknown(param: str, suggestions: list[str] | None = None) -> Reject:
    hint = ""
    if suggestions:
        hint = " Did you mean " + " or ".join(f"'{s}'" for s in suggestions) + "?"
    return Reject(f"Unknown parameter: '{param}'.{hint}", param, code="unknown_parameter")


def edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def suggestions(key: str, sent: dict) -> list[str]:
    """Known keys within two edits of ``key`` and not already in the body, nearest first (as the API suggests)."""
    near = [(d, k) for k in KNOWN_PARAMS if k not in sent and abs(len(k) - len(key)) <= 2
            and (d := edit_distance(key, k)) <= 2]
    return [k for _, k in sorted(near)]


def strict_schema_error(schema: Any, path: tuple[str, ...] = ()) -> str | None:
    """The first way ``schema`` breaks strict mode, in the API's words (after "In context=…, "), or None."""
    if not isinstance(schema, dict):
        return None
    where = f"In context={path!r}, "
    if "oneOf" in schema:
        return where + "'oneOf' is not permitted."
    if schema.get("type") == "object" or "properties" in schema:
        if schema.get("additionalProperties") is not False:
            return where + "'additionalProperties' is required to be supplied and to be false."
        props = schema.get("properties") or {}
        required = schema.get("required")
        absent = [k for k in props if not isinstance(required, list) or k not in required]
        if absent:
            return (where + "'required' is required to be supplied and to be an array including every key in "
                    f"properties. Missing '{absent[0]}'.")
        for name, sub in props.items():
            found = strict_schema_error(sub, (*path, "properties", name))
            if found:
                return found
    if isinstance(schema.get("items"), dict):
        found = strict_schema_error(schema["items"], (*path, "items"))
        if found:
            return found
    for key in ("anyOf", "allOf"):
        for n, sub in enumerate(schema.get(key) or []):
            found = strict_schema_error(sub, (*path, key, str(n)))
            if found:
                return found
    for key in ("$defs", "definitions"):
        for name, sub in (schema.get(key) or {}).items():
            found = strict_schema_error(sub, (*path, key, name))
            if found:
                return found
    return None


def make_blob(payload: dict) -> str:
    return BLOB_PREFIX + base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode()


def read_blob(blob: Any) -> dict | None:
    """The payload of an encrypted_content this fake made, or None (anything else "could not be decrypted")."""
    if not isinstance(blob, str) or not blob.startswith(BLOB_PREFIX):
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(blob[len(BLOB_PREFIX):].encode()))
    except (ValueError, TypeError):
        return None
    return payload if isinstance(payload, dict) and payload.get("fake") == "responses/1" else None


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(p.get("text", "") for p in content or [] if isinstance(p, dict)
                    and p.get("type") in ("input_text", "output_text") and isinstance(p.get("text"), str))


def tokens(text: str) -> int:
    return max(1, len(text) // 4) if text else 0


def pieces(text: str, size: int = 5) -> list[str]:
    return re.findall(rf".{{1,{size}}}", text, re.DOTALL)


class FakeResponses(LoopbackServer):
    def __init__(self, key: str | None = None):
        self.key = key  # None: any Authorization (or none) is accepted
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.reasoning_replays = 0  # requests to a *reason* model that carried the reasoning of their tool turns
        self.implicit_strict: list[str] = []  # function tools sent without "strict" (the API's default applies)
        self.strict_when_absent = False  # True: a function tool without "strict" is validated as strict: true
        self.disconnects = 0
        self.port = 0
        self.runner: web.AppRunner | None = None

    # ---- validation, in the order the API reports -------------------------------------------------
    def validate(self, body: Any) -> list[dict]:
        """Check a request as the API does; returns its input as a list of items."""
        if not isinstance(body, dict):
            raise Reject("We could not parse the JSON body of your request. (HINT: This likely means you aren't "
                         "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
                         "sent was not valid JSON. If you have trouble figuring out how to fix this, please contact "
                         "us through our help center at help.openai.com.)")
        if "model" not in body:
            raise missing("model")
        if "input" not in body:
            raise missing("input")
        for key in body:
            if key == "messages":
                raise Reject("Unsupported parameter: 'messages'. In the Responses API, this parameter has moved to "
                             "'input'. Try again with the new parameter. See the API documentation for more "
                             "information: https://platform.openai.com/docs/api-reference/responses/create.",
                             code="unsupported_parameter")
            if key not in KNOWN_PARAMS:
                raise unknown(key, suggestions(key, body))
        model = body["model"]
        if not isinstance(model, str):
            raise invalid_type("model", "a string", model)
        if model == "":
            raise Reject("The requested model '' does not exist.", "model", code="model_not_found")
        items = self._check_input(body["input"])
        self._check_params(body)
        self._check_tools(body)
        return items

    def _check_input(self, value: Any) -> list[dict]:
        if isinstance(value, str):
            return [{"type": "message", "role": "user", "content": value}] if value else []
        if not isinstance(value, list):  # null is measured as "expected a string"
            raise invalid_type("input", "a string" if value is None else "one of a string or array of input items",
                               value)
        for i, item in enumerate(value):
            self._check_item(item, i)
        return value

    def _check_item(self, item: Any, i: int) -> None:
        at = f"input[{i}]"
        if not isinstance(item, dict):
            raise invalid_type(at, "an input item", item, null="null")
        kind = item.get("type", "message")
        if kind not in ITEM_TYPES:
            raise invalid_value(kind, ITEM_TYPES, at)
        if kind == "message" and item.get("role") not in ROLES:
            raise invalid_value(item.get("role"), ROLES, at)
        allowed = ITEM_KEYS.get(kind)
        if allowed is not None:
            extra = {"phase"} if kind == "message" and item.get("role") == "assistant" else set()
            for key in item:
                if key not in allowed | extra:
                    raise unknown(f"{at}.{key}")
        prefix = ID_PREFIX.get(kind)
        if prefix and "id" in item and not (isinstance(item["id"], str) and item["id"].startswith(prefix)):
            raise Reject(f"Invalid '{at}.id': '{item['id']}'. Expected an ID that begins with '{prefix}'.",
                         f"{at}.id", code="invalid_value")
        if kind == "message":
            if "phase" in item and item["phase"] not in ("commentary", "final_answer"):
                raise invalid_value(item["phase"], ("commentary", "final_answer"), f"{at}.phase")
            if "content" not in item:
                raise missing(f"{at}.content")
            self._check_parts(item["content"], f"{at}.content",
                              OUTPUT_PARTS if item["role"] == "assistant" else INPUT_PARTS)
        elif kind in ("function_call", "custom_tool_call"):
            for key in ("call_id", "name", "arguments" if kind == "function_call" else "input"):
                if key not in item:
                    raise missing(f"{at}.{key}")
                if not isinstance(item[key], str):
                    raise invalid_type(f"{at}.{key}", "a string", item[key])
        elif kind in ("function_call_output", "custom_tool_call_output"):
            for key in ("call_id", "output"):
                if key not in item:
                    raise missing(f"{at}.{key}")
            if not isinstance(item["call_id"], str):
                raise invalid_type(f"{at}.call_id", "a string", item["call_id"])
            if not isinstance(item["output"], str):
                self._check_parts(item["output"], f"{at}.output", TOOL_OUTPUT_PARTS)
        elif kind == "reasoning":
            if "summary" not in item:
                raise missing(f"{at}.summary")
            if not isinstance(item["summary"], list):
                raise invalid_type(f"{at}.summary", "an array", item["summary"])
            for j, part in enumerate(item["summary"]):
                if not isinstance(part, dict) or part.get("type") != "summary_text":
                    raise invalid_value(part.get("type") if isinstance(part, dict) else None, ("summary_text",),
                                        f"{at}.summary[{j}].type")
                if not isinstance(part.get("text"), str):
                    raise missing(f"{at}.summary[{j}].text")
            content = item.get("content")
            if isinstance(content, list) and content:
                raise Reject(f"Invalid '{at}.content': array too long. Expected an array with maximum length 0, but "
                             f"got an array with length {len(content)} instead.", f"{at}.content",
                             code="array_above_max_length")
            enc = item.get("encrypted_content")
            if enc is not None and not isinstance(enc, str):
                raise invalid_type(f"{at}.encrypted_content", "a string", enc)
            if "id" not in item and not enc:
                raise missing(f"{at}.id")

    def _check_parts(self, content: Any, at: str, allowed: tuple[str, ...]) -> None:
        if isinstance(content, str):
            return
        if not isinstance(content, list):
            raise invalid_type(at, "one of a string or array of input content items", content)
        for j, part in enumerate(content):
            where = f"{at}[{j}]"
            if not isinstance(part, dict):
                raise invalid_type(where, "an object", part, null="null")
            kind = part.get("type")
            if kind not in PART_TYPES and kind != "scoped_content":
                raise invalid_value(kind, PART_TYPES, f"{where}.type")
            if kind not in allowed:
                raise invalid_value(kind, allowed, where)
            if kind in ("input_text", "output_text") and not isinstance(part.get("text"), str):
                raise missing(f"{where}.text")
            if kind == "refusal" and not isinstance(part.get("refusal"), str):
                raise missing(f"{where}.refusal")
            if kind == "input_image" and not (part.get("image_url") or part.get("file_id")):
                raise missing(f"{where}.image_url")

    def _check_params(self, body: dict) -> None:
        if body.get("moderation") is not None and not isinstance(body["moderation"], dict):
            raise invalid_type("moderation", "an object", body["moderation"])
        include = body.get("include")
        if include is not None:
            if not isinstance(include, list):
                raise invalid_type("include", "an array of one of 'fil...lts', 'web...lts', 'web...ces', 'mes...url', "
                                   "'com...url', 'cod...uts', 'rea...ent', or 'mes...obs'", include)
            for n, value in enumerate(include):
                if value not in INCLUDABLE:
                    raise invalid_value(value, INCLUDABLE, f"include[{n}]")
        for key, kind, name in TYPED_PARAMS:
            value = body.get(key)
            if value is not None and not is_kind(value, kind):
                raise invalid_type(key, name, value)
            if key == "metadata" and isinstance(value, dict) and len(value) > 16:
                raise Reject(f"Invalid 'metadata': too many properties. Expected an object with at most 16 "
                             f"properties, but got an object with {len(value)} properties instead.", "metadata",
                             code="object_above_max_properties")
            if key == "text" and isinstance(value, dict):
                self._check_text(value)
            if key == "stream_options" and isinstance(value, dict):
                for sub in value:
                    if sub != "include_obfuscation":
                        raise unknown(f"stream_options.{sub}")
            if key == "max_output_tokens" and isinstance(value, int) and value < 16:
                raise Reject(f"Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16, "
                             f"but got {value} instead.", "max_output_tokens", code="integer_below_min_value")
            if key == "max_tool_calls" and isinstance(value, int) and value < 1:
                raise Reject(f"Invalid 'max_tool_calls': integer below minimum value. Expected a value >= 1, but "
                             f"got {value} instead.", "max_tool_calls", code="integer_below_min_value")
            if key == "reasoning" and isinstance(value, dict):
                for sub in value:
                    if sub not in ("effort", "summary", "context", "mode"):
                        raise unknown(f"reasoning.{sub}")
                if value.get("effort") is not None and value["effort"] not in EFFORTS:
                    raise invalid_value(value["effort"], EFFORTS, "reasoning.effort")
                if value.get("summary") is not None and value["summary"] not in SUMMARIES:
                    raise invalid_value(value["summary"], SUMMARIES, "reasoning.summary")
            if key == "prompt_cache_key":  # the enums are reported at their place in the API's order
                self._check_enum(body, "prompt_cache_retention")
                self._check_enum(body, "truncation")
            if key == "store":
                self._check_enum(body, "service_tier")
        self._check_tool_choice(body)

    @staticmethod
    def _check_enum(body: dict, key: str) -> None:
        value = body.get(key)
        if value is None:
            return
        if not isinstance(value, str):
            quoted = [f"'{v}'" for v in ENUMS[key]]
            listed = " or ".join(quoted) if len(quoted) == 2 else ", ".join(quoted[:-1]) + ", or " + quoted[-1]
            raise invalid_type(key, f"one of {listed}", value)
        if value not in ENUMS[key]:
            raise invalid_value(value, ENUMS[key], key)

    @staticmethod
    def _check_text(text: dict) -> None:
        for sub in text:
            if sub not in ("format", "verbosity"):
                raise unknown(f"text.{sub}")
        if text.get("verbosity") is not None and text["verbosity"] not in ("low", "medium", "high"):
            raise invalid_value(text["verbosity"], ("low", "medium", "high"), "text.verbosity")
        fmt = text.get("format")
        if isinstance(fmt, dict):
            if fmt.get("type") not in ("json_object", "text", "json_schema"):
                raise invalid_value(fmt.get("type"), ("json_object", "text", "json_schema"), "text.format.type")
            if fmt["type"] == "json_schema":
                if not isinstance(fmt.get("name"), str):
                    raise missing("text.format.name")
                if fmt.get("strict") is True:
                    problem = strict_schema_error(fmt.get("schema"))
                    if problem:
                        raise Reject(f"Invalid schema for response_format '{fmt['name']}': {problem}",
                                     "text.format.schema", code="invalid_json_schema")

    @staticmethod
    def _check_tool_choice(body: dict) -> None:
        choice = body.get("tool_choice")
        if choice is None:
            return
        if isinstance(choice, str):
            if choice not in ("none", "auto", "required"):
                raise invalid_value(choice, ("none", "auto", "required"), "tool_choice")
        elif isinstance(choice, dict):
            if choice.get("type") in ("function", "custom") and not isinstance(choice.get("name"), str):
                raise missing("tool_choice.name")
        else:
            raise invalid_type("tool_choice", "one of an object or 'none', 'auto', or 'required'", choice)

    def _check_tools(self, body: dict) -> None:
        for i, tool in enumerate(body.get("tools") or []):
            at = f"tools[{i}]"
            if not isinstance(tool, dict):
                raise invalid_type(at, "an object", tool, null="null")
            if "type" not in tool:
                raise missing(f"{at}.type")
            if tool["type"] not in TOOL_TYPES:
                raise invalid_value(tool["type"], TOOL_TYPES, f"{at}.type")
            if tool["type"] not in ("function", "custom"):
                continue
            for key in tool:
                if key not in (FUNCTION_TOOL_KEYS if tool["type"] == "function" else CUSTOM_TOOL_KEYS):
                    if key == "function":  # a Chat Completions-shaped tool has no top-level name
                        raise missing(f"{at}.name")
                    raise unknown(f"{at}.{key}")
            name = tool.get("name")
            if name is None:
                raise missing(f"{at}.name")
            if not isinstance(name, str) or not NAME_RE.match(name) or len(name) > 64:
                raise Reject(f"Invalid '{at}.name': string does not match pattern. Expected a string that matches "
                             f"the pattern '^[a-zA-Z0-9_-]+$'.", f"{at}.name", code="invalid_value")
            if tool["type"] != "function":
                continue
            params = tool.get("parameters")
            if params is not None and not isinstance(params, dict):
                raise invalid_type(f"{at}.parameters", "an object", params)
            if params and params.get("type") != "object":
                shown = json.dumps(params["type"]) if "type" in params else '"None"'
                raise Reject(f"Invalid schema for function '{name}': schema must be a JSON Schema of 'type: "
                             f"\"object\"', got 'type: {shown}'.", f"{at}.parameters",
                             code="invalid_function_parameters")
            if tool.get("strict") is None:
                self.implicit_strict.append(name)
            if tool.get("strict") is True or (tool.get("strict") is None and self.strict_when_absent):
                problem = strict_schema_error(params or {"type": "object", "properties": {}})
                if problem:
                    raise Reject(f"Invalid schema for function '{name}': {problem}", f"{at}.parameters",
                                 code="invalid_function_parameters")

    def check_state(self, body: dict, items: list[dict]) -> None:
        """What needs server-side state (none is kept: stored ids are all unknown), then the input as a whole."""
        if body.get("conversation") is not None and body.get("previous_response_id") is not None:
            raise Reject("Mutually exclusive parameters: ''. Ensure you are only providing one of: 'pre..._id' or "
                         "'conversation'.", code="mutually_exclusive_parameters")
        previous = body.get("previous_response_id")
        if previous is not None:
            raise Reject(f"Previous response with id '{previous}' not found.", "previous_response_id",
                         code="previous_response_not_found")
        conversation = body.get("conversation")
        if conversation is not None:
            conv_id = conversation.get("id") if isinstance(conversation, dict) else conversation
            raise Reject(f"Conversation with id '{conv_id}' not found.", status=404)
        if isinstance(body.get("prompt"), dict):
            raise Reject(f"Prompt with id '{body['prompt'].get('id')}' not found.", status=404)
        for n, item in enumerate(items):
            if item.get("type") == "item_reference":
                raise Reject(f"Item with id '{item.get('id')}' not found.", "input", status=404)
            if item.get("type") != "reasoning":
                continue
            enc = item.get("encrypted_content")
            if not enc:
                hint = "" if body.get("store", True) else (
                    " Items are not persisted when `store` is set to false. Try again with `store` set to true, or "
                    "remove this item from your input.")
                raise Reject(f"Item with id '{item.get('id')}' not found.{hint}", "input", status=404)
            blob = read_blob(enc)
            if blob is None or ("id" in item and blob.get("iid") != item["id"]):
                where = f"for item {item['id']} " if "id" in item else ""
                raise Reject(f"The encrypted content {where}could not be verified. Reason: Encrypted content could "
                             f"not be decrypted or parsed.", code="invalid_encrypted_content")
            following = items[n + 1] if n + 1 < len(items) else None
            if "id" in item and (following is None or following.get("type") in (
                    "function_call_output", "custom_tool_call_output") or (
                    following.get("type", "message") == "message" and following.get("role") != "assistant")):
                raise Reject(f"Item '{item['id']}' of type 'reasoning' was provided without its required following "
                             f"item.", "input")
        calls: dict[str, str] = {}
        answered: set[str] = set()
        for item in items:
            kind = item.get("type")
            if kind in ("function_call", "custom_tool_call"):
                calls[item["call_id"]] = kind
            elif kind in ("function_call_output", "custom_tool_call_output"):
                what = "function call" if kind == "function_call_output" else "custom tool call"
                if calls.get(item["call_id"]) != kind.removesuffix("_output"):
                    raise Reject(f"No tool call found for {what} output with call_id {item['call_id']}.", "input")
                answered.add(item["call_id"])
        for call_id, kind in calls.items():
            if call_id not in answered:
                what = "function call" if kind == "function_call" else "custom tool call"
                raise Reject(f"No tool output found for {what} {call_id}.", "input")
        if not items:
            raise Reject("One of \"input\" or \"previous_response_id\" or 'prompt' or 'conversation' must be "
                         "provided.", code="missing_required_parameter")

    def check_model(self, body: dict, items: list[dict]) -> None:
        """What this model takes (the API's capability pass), then the fake's rule for reasoning across turns."""
        model = body["model"]
        reasoning_model = "reason" in model
        if reasoning_model:
            for key in ("temperature", "top_p"):
                if body.get(key) is not None:
                    raise Reject(f"Unsupported parameter: '{key}' is not supported with this model.", key)
            if "message.output_text.logprobs" in (body.get("include") or []) or body.get("top_logprobs"):
                param = "include" if "message.output_text.logprobs" in (body.get("include") or []) else "top_logprobs"
                raise Reject("logprobs are not supported with reasoning models.", param, code="unsupported_parameter")
        if model.startswith(("gpt-4", "chatgpt")):
            if (body.get("reasoning") or {}).get("effort") is not None:
                raise Reject("Unsupported parameter: 'reasoning.effort' is not supported with this model.",
                             "reasoning.effort", code="unsupported_parameter")
            if "reasoning.encrypted_content" in (body.get("include") or []):
                raise Reject("Encrypted content is not supported with this model.", "include")
        if not reasoning_model:
            return
        # The fake's stand-in for "reasoning must be carried across turns": a call this fake made in a turn with a
        # reasoning item (its call id says so) needs that item, with its encrypted_content, before the call.
        checked = 0
        for k, item in enumerate(items):
            if item.get("type") not in ("function_call", "custom_tool_call"):
                continue
            minted = CALL_ID_RE.fullmatch(item["call_id"])
            if not minted or minted.group(1) != "R":
                continue
            carried = any(prior.get("type") == "reasoning" and (read_blob(prior.get("encrypted_content")) or {})
                          .get("turn") == minted.group(2) for prior in items[:k])
            if not carried:
                raise Reject(f"The reasoning item of the turn that made tool call {item['call_id']} was not passed "
                             f"back: a reasoning model needs it, with its encrypted_content, in `input` before the "
                             f"{item['type']} item.", "input")
            checked += 1
        if checked:
            self.reasoning_replays += 1

    # ---- the scripted model ---------------------------------------------------------------------
    def answer(self, body: dict, items: list[dict]) -> dict:
        model = body["model"]
        tools = {t["name"]: t for t in body.get("tools") or [] if t.get("type") in ("function", "custom")}
        user_text = next((text_of(it.get("content")) for it in reversed(items)
                          if it.get("type", "message") == "message" and it.get("role") == "user"), "")
        reasoning = "THINK:" in user_text or "reason" in model
        calls: list[dict] = []
        text = ""
        trailing = []
        for item in reversed(items):
            if item.get("type") not in ("function_call_output", "custom_tool_call_output"):
                break
            out = item["output"]
            trailing.append(out if isinstance(out, str) else text_of(out) or json.dumps(out))
        if trailing:
            text = "Tool result received: " + " | ".join(reversed(trailing))[:400]
        else:
            for m in re.finditer(r"TOOL_CALL:([A-Za-z0-9_-]+):(\{.*?\})(?=\s|$)", user_text):
                name, raw = m.group(1), m.group(2)
                tool = tools.get(name)
                try:
                    args = json.loads(raw)
                except ValueError:
                    continue
                if tool is None:
                    continue
                if tool["type"] == "custom":
                    calls.append({"kind": "custom", "name": name, "input": str(args.get("input", ""))
                                  if isinstance(args, dict) else raw})
                else:
                    calls.append({"kind": "function", "name": name, "arguments": raw})
            choice = body.get("tool_choice")
            forced = choice.get("name") if isinstance(choice, dict) else (
                next(iter(tools), None) if choice == "required" else None)
            if forced in tools and not calls:  # a forced tool is called, as a real model must
                tool = tools[forced]
                words = user_text.strip().rsplit("\n", 1)[-1][-200:]
                if tool["type"] == "custom":
                    calls.append({"kind": "custom", "name": forced, "input": words})
                else:
                    props = (tool.get("parameters") or {}).get("properties") or {}
                    calls.append({"kind": "function", "name": forced,
                                  "arguments": json.dumps({"query": words} if "query" in props else {})})
            if choice == "none":
                calls = []
            if not calls:
                text = f"Hello from {model}! You said: {user_text.strip()[-80:]}"
                images = sum(1 for it in items if isinstance(it.get("content"), list)
                             for p in it["content"] if isinstance(p, dict) and p.get("type") == "input_image")
                if images:
                    text += f" [saw {images} image(s)]"
        if body.get("parallel_tool_calls") is False:
            calls = calls[:1]
        return {"reasoning": reasoning, "calls": calls, "text": text}

    # ---- building the response ------------------------------------------------------------------
    def build(self, body: dict, items: list[dict], ans: dict) -> dict:
        """The output items (as ``output_item.done`` has them), status, usage and the response's fields."""
        model = body["model"]
        rid_hex = secrets.token_hex(25)
        rid = "resp_" + rid_hex
        token = rid_hex[:20]

        def item_id(prefix: str) -> str:
            return f"{prefix}_{rid_hex[:18]}{secrets.token_hex(16)}"

        include = body.get("include") or []
        summary_wanted = (body.get("reasoning") or {}).get("summary") is not None
        reasoning_tokens = tokens(SUMMARY_TEXT) if ans["reasoning"] else 0
        text, calls, status, incomplete = ans["text"], ans["calls"], "completed", None
        spent = tokens(text) + sum(tokens(c.get("arguments", c.get("input", ""))) + 5 for c in calls)
        limit = body.get("max_output_tokens")
        if model.startswith("incomplete-") or (limit is not None and reasoning_tokens + spent > limit):
            status, incomplete = "incomplete", {"reason": "max_output_tokens"}
            room = len(text) // 2 if model.startswith("incomplete-") else max(0, limit - reasoning_tokens) * 4
            text = (text or "Hello")[:room] if not calls else ""
            calls = []
        output: list[dict] = []
        call_ids = []
        if ans["reasoning"]:
            rs_id = item_id("rs")
            item: dict[str, Any] = {"id": rs_id, "type": "reasoning"}
            call_ids = [f"call_R{token}{n:03d}" for n in range(len(calls))]  # the call id says: a reasoning turn
            if "reasoning.encrypted_content" in include:
                item["encrypted_content"] = make_blob({"fake": "responses/1", "rid": rid, "iid": rs_id,
                                                       "turn": token, "calls": call_ids, "model": model})
            item["summary"] = [{"type": "summary_text", "text": SUMMARY_TEXT}] if summary_wanted else []
            output.append(item)
        else:
            call_ids = [f"call_N{token}{n:03d}" for n in range(len(calls))]
        if text or (status == "incomplete" and not calls):
            output.append({"id": item_id("msg"), "type": "message", "status": status,
                           "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": text}],
                           "role": "assistant"})
        for call, call_id in zip(calls, call_ids):
            if call["kind"] == "function":
                output.append({"id": item_id("fc"), "type": "function_call", "status": "completed",
                               "arguments": call["arguments"], "call_id": call_id, "name": call["name"]})
            else:
                output.append({"id": item_id("ctc"), "type": "custom_tool_call", "status": "completed",
                               "call_id": call_id, "name": call["name"], "input": call["input"]})
        out_tokens = reasoning_tokens + tokens(text) + sum(
            tokens(c.get("arguments", c.get("input", ""))) + 5 for c in calls)
        in_tokens = max(1, len(json.dumps(body.get("input")) + (body.get("instructions") or "")
                               + json.dumps(body.get("tools") or [])) // 4)
        usage = {"input_tokens": in_tokens, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                 "output_tokens": out_tokens, "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
                 "total_tokens": in_tokens + out_tokens}
        if model.startswith("failed-"):
            status, output, usage = "failed", [], None
        return {"id": rid, "created_at": int(time.time()), "status": status, "incomplete_details": incomplete,
                "output": output, "usage": usage}

    def response_object(self, body: dict, built: dict, status: str, output: list[dict], usage: dict | None,
                        request_id: str) -> dict:
        model = body["model"]
        reasoning = body.get("reasoning") or {}
        text = {"format": {"type": "text"}, "verbosity": "medium", **(body.get("text") or {})}
        tools = []
        for tool in body.get("tools") or []:
            if tool.get("type") == "function":
                strict = tool.get("strict")
                if strict is None:  # the API's default: strict when the schema can be made strict
                    strict = strict_schema_error(tool.get("parameters") or {"type": "object", "properties": {}}) \
                        is None or self.strict_when_absent
                tools.append({"type": "function", "description": tool.get("description"), "name": tool["name"],
                              "parameters": tool.get("parameters"), "strict": strict})
            else:
                tools.append(tool)
        tier = body.get("service_tier") or "auto"
        final = status not in ("in_progress", "queued")
        if final:
            tier = "priority" if tier == "fast" else "default" if tier == "auto" else tier
        error = None
        if status == "failed":
            error = {"code": "server_error", "message": SERVER_ERROR.format(request_id)}
        return {
            "id": built["id"], "object": "response", "created_at": built["created_at"], "status": status,
            "background": bool(body.get("background")),
            "completed_at": int(time.time()) if status == "completed" else None, "error": error,
            "incomplete_details": built["incomplete_details"] if status == "incomplete" else None,
            "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
            "max_tool_calls": body.get("max_tool_calls"), "model": model, "output": output,
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"), "prompt_cache_key": body.get("prompt_cache_key"),
            "prompt_cache_retention": body.get("prompt_cache_retention"),
            "reasoning": {"effort": reasoning.get("effort", "medium" if "reason" in model else None),
                          "summary": reasoning.get("summary")},
            "safety_identifier": body.get("safety_identifier"), "service_tier": tier,
            "store": body.get("store", True), "temperature": body.get("temperature", 1.0), "text": text,
            "tool_choice": body.get("tool_choice", "auto"), "tools": tools,
            "top_logprobs": body.get("top_logprobs", 0), "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation", "disabled"), "usage": usage if final else None,
            "user": body.get("user"), "metadata": body.get("metadata") or {},
        }

    def events(self, body: dict, built: dict, request_id: str) -> list[dict]:
        """The stream's events, in the API's grammar (sequence numbers are added as they are sent)."""
        obfuscate = (body.get("stream_options") or {}).get("include_obfuscation", True)

        def ev(kind: str, **fields: Any) -> dict:
            if obfuscate and "delta" in fields:
                fields["obfuscation"] = secrets.token_urlsafe(12)[: max(1, 16 - len(fields["delta"]))]
            return {"type": kind, **fields}

        def snapshot(status: str, output: list[dict], usage: dict | None = None) -> dict:
            return self.response_object(body, built, status, output, usage, request_id)

        out = [ev("response.created", response=snapshot("in_progress", [])),
               ev("response.in_progress", response=snapshot("in_progress", []))]
        if built["status"] == "failed":
            return [*out, ev("response.failed", response=snapshot("failed", []))]
        for n, item in enumerate(built["output"]):
            iid = item["id"]
            if item["type"] == "reasoning":
                out.append(ev("response.output_item.added", output_index=n,
                              item={"id": iid, "type": "reasoning", "summary": []}))
                for s, part in enumerate(item["summary"]):
                    common = {"item_id": iid, "output_index": n, "summary_index": s}
                    out.append(ev("response.reasoning_summary_part.added", **common,
                                  part={"type": "summary_text", "text": ""}))
                    out += [ev("response.reasoning_summary_text.delta", **common, delta=d)
                            for d in pieces(part["text"], 8)]
                    out.append(ev("response.reasoning_summary_text.done", **common, text=part["text"]))
                    out.append(ev("response.reasoning_summary_part.done", **common, part=part))
            elif item["type"] == "message":
                text = item["content"][0]["text"]
                out.append(ev("response.output_item.added", output_index=n,
                              item={"id": iid, "type": "message", "status": "in_progress", "content": [],
                                    "role": "assistant"}))
                common = {"item_id": iid, "output_index": n, "content_index": 0}
                out.append(ev("response.content_part.added", **common,
                              part={"type": "output_text", "annotations": [], "logprobs": [], "text": ""}))
                out += [ev("response.output_text.delta", **common, delta=d, logprobs=[]) for d in pieces(text)]
                out.append(ev("response.output_text.done", **common, text=text, logprobs=[]))
                out.append(ev("response.content_part.done", **common, part=item["content"][0]))
            elif item["type"] == "function_call":
                out.append(ev("response.output_item.added", output_index=n,
                              item={**item, "status": "in_progress", "arguments": ""}))
                out += [ev("response.function_call_arguments.delta", item_id=iid, output_index=n, delta=d)
                        for d in pieces(item["arguments"])]
                out.append(ev("response.function_call_arguments.done", item_id=iid, output_index=n,
                              arguments=item["arguments"]))
            else:
                out.append(ev("response.output_item.added", output_index=n,
                              item={**item, "status": "in_progress", "input": ""}))
                out += [ev("response.custom_tool_call_input.delta", item_id=iid, output_index=n, delta=d)
                        for d in pieces(item["input"])]
                out.append(ev("response.custom_tool_call_input.done", item_id=iid, output_index=n,
                              input=item["input"]))
            out.append(ev("response.output_item.done", output_index=n, item=item))
        last = "response.incomplete" if built["status"] == "incomplete" else "response.completed"
        out.append(ev(last, response=snapshot(built["status"], built["output"], built["usage"])))
        return out

    # ---- HTTP -------------------------------------------------------------------------------------
    def auth_error(self, auth: str) -> web.Response | None:
        if self.key is None or auth == f"Bearer {self.key}":
            return None
        if not auth:
            return openai_error(401, "You didn't provide an API key. You need to provide your API key in an "
                                     "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), "
                                     "or as the password field (with blank username) if you're accessing the API "
                                     "from your browser and are prompted for a username and password. You can "
                                     "obtain an API key from https://platform.openai.com/account/api-keys.")
        used = auth.removeprefix("Bearer ")
        shown = used[:3] + "*" * (len(used) - 7) + used[-4:] if len(used) > 8 else used
        return openai_error(401, f"Incorrect API key provided: {shown}. You can find your API key at "
                                 f"https://platform.openai.com/account/api-keys.", code="invalid_api_key")

    async def create(self, request: web.Request) -> web.StreamResponse:
        self.headers.append(dict(request.headers))
        request_id = "req_" + secrets.token_hex(16)
        headers = {"x-request-id": request_id, "openai-version": "2020-10-01"}
        try:
            body = json.loads(await request.read())
        except ValueError:
            body = None
        self.requests.append(body if isinstance(body, dict) else {"_unparsed": True})
        denied = self.auth_error(request.headers.get("Authorization", ""))
        if denied is not None:
            denied.headers.update(headers)
            return denied
        model = str(body.get("model", "")) if isinstance(body, dict) else ""
        m = re.match(r"status-(\d{3})", model)
        if m:
            status = int(m.group(1))
            message, type_, code = STATUS_ERRORS.get(status, (f"Error {status}.", "server_error" if status >= 500
                                                              else "invalid_request_error", None))
            extra = {"retry-after": "0"} if status == 429 else {}
            return openai_error(status, message, type_, code, headers={**headers, **extra})
        try:
            items = self.validate(body)
            if model.startswith("unknown"):
                raise Reject(f"The requested model '{model}' does not exist.", "model", code="model_not_found")
            assert isinstance(body, dict)
            self.check_state(body, items)
            self.check_model(body, items)
        except Reject as exc:
            return openai_error(exc.status, str(exc), param=exc.param, code=exc.code, headers=headers)
        built = self.build(body, items, self.answer(body, items))
        if body.get("stream"):
            return await self.stream(request, body, built, request_id, headers)
        return web.json_response(self.response_object(body, built, built["status"], built["output"],
                                                      built["usage"], request_id), headers=headers)

    async def stream(self, request: web.Request, body: dict, built: dict, request_id: str,
                     headers: dict) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8", **headers})
        await resp.prepare(request)
        events = self.events(body, built, request_id)
        cut = body["model"].startswith("cut-")
        if cut:
            events = events[: max(3, len(events) // 2)]
        try:
            for seq, event in enumerate(events):
                event = {"type": event["type"], "sequence_number": seq,
                         **{k: v for k, v in event.items() if k != "type"}}
                await resp.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
            if cut:
                await asyncio.sleep(0.05)
                if request.transport is not None:
                    request.transport.close()  # dies mid-answer: no response.completed
                return resp
            await resp.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnects += 1
            raise
        return resp

    async def models_list(self, request: web.Request) -> web.Response:
        denied = self.auth_error(request.headers.get("Authorization", ""))
        if denied is not None:
            return denied
        return web.json_response({"object": "list", "data": [
            {"id": name, "object": "model", "created": 1700000000, "owned_by": "system"}
            for name in ("gpt-5-fake", "fake-reason-model", "gpt-4.1-fake")]})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/responses", self.create)
        app.router.add_get("/v1/models", self.models_list)
        return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--key", default=None)
    parser.add_argument("--log", default=None, help="append each request body as a JSON line to this file")
    args = parser.parse_args()
    fake = FakeResponses(key=args.key)
    if args.log:
        log_file = args.log

        class Logged(list):
            def append(self, body: Any) -> None:
                with open(log_file, "a") as fh:
                    fh.write(json.dumps(body) + "\n")
                super().append(body)
        fake.requests = Logged()
    web.run_app(fake.app(), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
