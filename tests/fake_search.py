"""Fake web-search providers on 127.0.0.1: SearXNG, the Brave Search API and Tavily, answering as the real ones do.

Every fake serves a deterministic corpus: for a query Q (its ``site:`` operators removed, see below) result i (from 1)
is titled ``f"{Q} - result {i}"`` and lives at ``https://<domain>/<slug of Q>/<i>``, the domain cycling through
``DOMAINS`` (docs.example.com, blog.example.org, news.example.net) so that domain filters can be tested. A fake's
``corpus_size`` (30) is how many results a query has in all; 0 makes every query find nothing. Each keeps
``requests`` (one dict per request: method, path, query, headers, json, form, body) and has ``fail_status``
(answer that status with the service's own body for it), ``delay`` (seconds before answering; a client that goes
away ends the wait and counts in ``aborts``) and ``bad_json`` (a 200 whose JSON body is cut off half-way).

``site:D`` / ``-site:D`` in a SearXNG or Brave query keep only / drop results on D or its subdomains (both pass such
operators to a web index that honours them); Tavily's ``include_domains`` / ``exclude_domains`` match the same way.

What was checked, and where
---------------------------
SearXNG (searxng/searxng at 9fea41204fdf, 2026-08-22):
* searx/webapp.py ``search()``: GET and POST; ``format`` outside html/csv/json/rss counts as html; a format missing
  from ``search.formats`` → ``flask.abort(403)`` (no 403 handler is registered, so Werkzeug's own page; its text is
  Werkzeug 3.1.8's ``Forbidden``, rendered here to check it); no ``q`` → the index page, or for json
  ``{"error": "No query"}`` with 400 (``index_error``); a ``SearxParameterException`` → 400 with its message; any other
  failure → ``{"error": "search error"}`` with 500. ``pre_request``: form fields win over URL arguments.
* searx/webadapter.py + searx/exceptions.py: pageno, safesearch, time_range and language checks and their wording
  (``Invalid value X for parameter P`` / ``Empty P parameter``), in that order.
* searx/webutils.py ``get_json_response`` (key order; sets become lists, datetimes isoformat) and
  searx/result_types/_base.py ``LegacyResult`` (the fields of a result); searx/settings.yml ships ``formats: [html]``.
* ``number_of_results`` was dropped by commit dd27fce3b (2026-05-25); releases before it (most deployed ones) send it,
  and it is 0 for nearly every query (searxng/searxng#5034): ``number_of_results`` (bool) picks the release.
* Key order of a live result: ihor-sokoliuk/mcp-searxng#91. The limiter's 429 is the bare text ``Too Many Requests``
  (searx/botdetection/_helpers.py).
Brave (https://api-dashboard.search.brave.com/app/documentation/web-search/{query,response-headers,responses}, as
mirrored in DigiSavvy-Inc/brave-search-api-docs; its API reference's error examples; bodies captured from the live API):
* ``GET /res/v1/web/search``; ``q`` required, 1-400 characters; ``count`` default 20, at most 20; ``offset`` 0-9
  (pages of ``count``); ``X-RateLimit-Limit/-Policy/-Remaining/-Reset`` as "per-second, per-month" pairs (values as
  captured live for the paid "Search" plan: ``50, 0`` / ``49, 0`` / ``1, <seconds to month end>``).
* A bad ``X-Subscription-Token`` → 422 ``SUBSCRIPTION_TOKEN_INVALID`` in the gateway's shape (sorted keys, no id or
  time) as captured live twice (NVIDIA NemoClaw onboarding transcript; a client fixture "captured 2026-09-06"); no
  header → 422 ``VALIDATION`` with ``loc ["header","x-subscription-token"]`` (a client's note of a live probe); the
  token is checked before the parameters (same notes).
* Parameter errors: ``{"type":"ErrorResponse","error":{"id","status":422,"code":"VALIDATION","detail":"Unable to
  validate request parameter(s)","meta":{...}},"time"}`` (egoist/chatwise-releases#936); the missing-``q`` entry
  ``{"type":"missing","loc":["query","q"],"msg":"Field required"}`` and an ``int_parsing`` entry with ``input``
  (client fixtures of live answers) — Pydantic v2's error types, so the range errors use Pydantic's wording.
* 429 ``RATE_LIMITED``, ``detail`` "Request rate limit exceeded for plan", ``meta`` with plan/rate/quota and
  ``component: rate_limiter`` (egoist/chatwise-releases#1296; a client fixture "captured 2026-08-02").
* The API reference documents 404 ``SUBSCRIPTION_NOT_FOUND`` "No subscription found." (its examples write an
  ``errors`` list; live bodies carry one ``error`` object, which is what is sent here).
* Success shape and key order from two live answers (a documented curl example's response; a client's fixture):
  query / mixed / type / web, results with profile, meta_url (``path`` as ``› a › b``), ``<strong>`` around query
  words in descriptions unless ``text_decorations=false``; a query with no results has no ``web`` key
  (spences10/mcp-omnisearch#137).
Tavily (tavily-ai/tavily-python at bf176448a0d7, 2026-06-10, tavily/tavily.py; docs.tavily.com API reference for
POST /search, its OpenAPI; https://help.tavily.com/articles/8645538886-understanding-http-errors):
* ``Authorization: Bearer tvly-...`` (the SDK), ``api_key`` in the body (older clients); errors are
  ``{"detail":{"error":...}}``: 401 "Unauthorized: missing or invalid API key.", 429 "Your request has been blocked
  due to excessive requests. Please reduce rate of requests.", 432 plan limit, 433 pay-as-you-go limit, 500
  "Internal Server Error"; compact JSON behind nginx (CherryHQ/cherry-studio#2201: content-length 77).
* ``max_results`` default 5, 0-20; 400 "Query is too long. Max query length is 400 characters." (cherry-studio#2201,
  assafelovic/gpt-researcher#1263) and "Query is too short. Min query length is 2 characters." — answered for any
  key, real or not (a client's live measurement), so the query is checked before the key; an IP-level 429 likewise
  came for valid and dead keys alike, so it comes first.
* Success key order from live answers: query, follow_up_questions, answer, images, results (url, title, content,
  score, raw_content; news: url, title, score, published_date as an HTTP date, content), response_time, request_id.
* Gateway pages for 502/503/504: nginx's (src/http/ngx_http_special_response.c).

Not verified (chosen, and marked where they are made)
-----------------------------------------------------
All: the texts (snippets, SearXNG's one suggestion, Tavily's answer/images/raw_content, Brave's extra_snippets and
profile names) are invented; so are the reason phrase "Unknown" on Tavily's 432/433 status line and Brave's
Server-Timing value. The sources above are the newest copies that could be read here, not the live services. SearXNG: the HTML pages are a simplified imitation of the simple theme; scores, engines and positions are invented
(score = 1/position, as searx/results.py calculate_score gives for one engine of weight 1). Brave: bodies for 5xx (plain text here),
whether ``missing`` entries carry ``input`` (omitted, as captured), the Pydantic range wording for count/offset/q
length, X-RateLimit values on a 429, validation of country, search_lang, safesearch and the other enums (not done),
the POST form of the endpoint (not served). Tavily: "Query is missing." for a missing query (seen only in a
third-party fixture), what an out-of-range ``max_results`` gets (clamped here), topic/country/time_range validation
(not done), keyless mode (not emulated), a Retry-After header on 429 (not sent), bodies for statuses other than the
documented ones (``{"detail":{"error":<reason phrase>}}`` here).

Run standalone: ``python tests/fake_search.py searxng|brave|tavily --port N [--key K] [--no-json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import calendar
import email.utils
import html
import json
import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any
from urllib.parse import urlparse

from aiohttp import web
from fake_openai import LoopbackServer

DOMAINS = ("docs.example.com", "blog.example.org", "news.example.net")
CORPUS_START = datetime(2026, 1, 1)  # result i is dated CORPUS_START + (i - 1) days
SITE_OPERATOR = re.compile(r"(?<!\S)(-?)site:(\S+)", re.IGNORECASE)

# Werkzeug 3.1.8's descriptions (werkzeug/exceptions.py), for the pages Flask answers an abort(code) with.
WERKZEUG_DESCRIPTIONS = {
    400: "The browser (or proxy) sent a request that this server could not understand.",
    401: "The server could not verify that you are authorized to access the URL requested. You either supplied the "
         "wrong credentials (e.g. a bad password), or your browser doesn't understand how to supply the credentials "
         "required.",
    403: "You don't have the permission to access the requested resource. It is either read-protected or not "
         "readable by the server.",
    404: "The requested URL was not found on the server. If you entered the URL manually please check your spelling "
         "and try again.",
    405: "The method is not allowed for the requested URL.",
    500: "The server encountered an internal error and was unable to complete your request. Either the server is "
         "overloaded or there is an error in the application.",
    502: "The proxy server received an invalid response from an upstream server.",
    503: "The server is temporarily unable to service your request due to maintenance downtime or capacity problems. "
         "Please try again later.",
    504: "The connection to an upstream server timed out.",
}
SEARX_FORMATS = ("html", "csv", "json", "rss")  # searx/settings_defaults.py OUTPUT_FORMATS
SEARX_CATEGORIES = ("general", "images", "videos", "news", "map", "music", "it", "science", "files", "social media")
SEARX_ENGINES = ("duckduckgo", "brave", "startpage")
SEARX_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[a-zA-Z]{2})?$")  # searx/webutils.py VALID_LANGUAGE_CODE
NGINX_TITLES = {500: "500 Internal Server Error", 502: "502 Bad Gateway", 503: "503 Service Temporarily Unavailable",
                504: "504 Gateway Time-out"}
TAVILY_ERRORS = {  # docs.tavily.com's OpenAPI examples and help.tavily.com's error page
    400: "Query is invalid.",  # a live 400 quoted in a user's notes; the docs give only a placeholder
    401: "Unauthorized: missing or invalid API key.",
    429: "Your request has been blocked due to excessive requests. Please reduce rate of requests.",
    432: "This request exceeds your plan's set usage limit. Please upgrade your plan or contact support@tavily.com",
    433: "This request exceeds the pay-as-you-go limit. You can increase your limit on the Tavily dashboard.",
    500: "Internal Server Error",
}
BRAVE_VALIDATION = "Unable to validate request parameter(s)"


@dataclass(frozen=True)
class Hit:
    """One corpus entry; ``rank`` is its 1-based place among all the query's results."""
    rank: int
    title: str
    url: str
    host: str
    path: str
    snippet: str
    published: datetime


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "query"


def corpus(query: str, size: int) -> list[Hit]:
    """The query's whole result list, before any filtering or paging."""
    base = slug(query)
    hits = []
    for i in range(1, size + 1):
        host = DOMAINS[(i - 1) % len(DOMAINS)]
        path = f"/{base}/{i}"
        hits.append(Hit(i, f"{query} - result {i}", f"https://{host}{path}", host, path,
                        f"Result {i} for {query}: deterministic text from the fake search index.",
                        CORPUS_START + timedelta(days=i - 1)))
    return hits


def bare_domain(domain: str) -> str:
    """'https://Docs.Example.com/x' → 'docs.example.com': callers write domains in several ways."""
    domain = domain.strip().lower()
    if "//" in domain:
        domain = urlparse(domain).netloc
    return domain.split("/")[0].removeprefix("www.")


def on_domain(host: str, domains: list[str]) -> bool:
    return any(host == d or host.endswith("." + d) for d in map(bare_domain, domains) if d)


def filter_domains(hits: list[Hit], include: list[str], exclude: list[str]) -> list[Hit]:
    return [h for h in hits if (not include or on_domain(h.host, include)) and not on_domain(h.host, exclude)]


def split_site_operators(query: str) -> tuple[str, list[str], list[str]]:
    """(query without site: operators, included domains, excluded domains)."""
    include: list[str] = []
    exclude: list[str] = []
    for negated, domain in SITE_OPERATOR.findall(query):
        (exclude if negated else include).append(domain.lower())
    cleaned = " ".join(SITE_OPERATOR.sub(" ", query).split())
    return cleaned or " ".join(query.split()), include, exclude


def phrase(status: int) -> str:
    """The reason phrase; Tavily's 432/433 have none in the registry."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def raw(status: int, body: str | bytes, content_type: str, headers: dict[str, str] | None = None) -> web.Response:
    """A response whose Content-Type is exactly ``content_type`` (aiohttp's text= would add '; charset=utf-8')."""
    data = body.encode() if isinstance(body, str) else body
    return web.Response(status=status, reason=phrase(status), body=data,
                        headers={"Content-Type": content_type, **(headers or {})})


def compact(obj: Any, sort_keys: bool = False) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, sort_keys=sort_keys)


def truncated(text: str) -> str:
    """The first half of a JSON document: what a connection cut mid-body or a broken proxy leaves."""
    return text[: max(1, len(text) // 2)]


class FakeSearch(LoopbackServer):
    """What the three fakes share: recording, the corpus, delay and forced failures."""

    def __init__(self, key: str | None = None):
        self.key = key  # None: any credential (or none) is accepted
        self.requests: list[dict[str, Any]] = []
        self.fail_status: int | None = None
        self.delay = 0.0
        self.bad_json = False
        self.corpus_size = 30
        self.aborts = 0
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def record(self, request: web.Request) -> dict[str, Any]:
        text = ""
        form = None
        if request.method == "POST" and request.content_type == "multipart/form-data":
            # a multipart body is a stream that post() must read itself; the raw text is not kept
            form = {k: f"<file {v.filename}>" if isinstance(v, web.FileField) else str(v)
                    for k, v in (await request.post()).items()}
        else:
            text = await request.text()
            if request.method == "POST" and request.content_type == "application/x-www-form-urlencoded":
                form = {k: str(v) for k, v in (await request.post()).items()}  # parses the body read above
        body: Any = None
        if text:
            try:
                body = json.loads(text)
            except ValueError:
                body = None
        entry = {"method": request.method, "path": request.path, "query": dict(request.query),
                 "headers": dict(request.headers), "json": body, "form": form, "body": text}
        self.requests.append(entry)
        return entry

    async def pause(self, request: web.Request) -> None:
        """Wait ``delay`` seconds, but stop early if the client hangs up (so stop() is not held up)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + self.delay
        while loop.time() < end:
            if request.transport is None or request.transport.is_closing():
                self.aborts += 1
                return
            await asyncio.sleep(min(0.02, end - loop.time()))

    def hits(self, query: str) -> list[Hit]:
        return corpus(query, self.corpus_size)


# ---- SearXNG ----------------------------------------------------------------------------------------------------

def werkzeug_page(status: int) -> web.Response:
    """Werkzeug's default error page, as Flask answers an unhandled abort(status)."""
    name = phrase(status)
    description = WERKZEUG_DESCRIPTIONS.get(status, name)  # unknown codes: not checked against Werkzeug
    body = (f"<!doctype html>\n<html lang=en>\n<title>{status} {html.escape(name)}</title>\n"
            f"<h1>{html.escape(name)}</h1>\n<p>{html.escape(description)}</p>\n")
    return raw(status, body, "text/html; charset=utf-8")


class FakeSearXNG(FakeSearch):
    """``GET|POST /search`` with q, format, pageno, language, safesearch, categories, time_range.

    ``json_enabled`` False: format=json gets the 403 of an instance whose ``search.formats`` lacks json (the default
    settings.yml); csv and rss always get it (this instance enables html and json only); a format SearXNG does not
    know counts as html, as it does there. ``per_page`` results a page; ``number_of_results`` False drops that key as releases since
    2026-05 do; ``unresponsive_engines`` is sent as given ([[engine, message], ...]).
    """

    def __init__(self, key: str | None = None):
        super().__init__(key)
        self.json_enabled = True
        self.number_of_results = True
        self.per_page = 10
        self.unresponsive_engines: list[list[str]] = []

    def params(self, request: web.Request, entry: dict[str, Any]) -> dict[str, str]:
        # pre_request: form fields first, URL arguments fill in the rest
        merged = dict(entry["form"] or {})
        for k, v in request.query.items():
            merged.setdefault(k, v)
        return merged

    async def search(self, request: web.Request) -> web.Response:
        entry = await self.record(request)
        await self.pause(request)
        form = self.params(request, entry)
        fmt = form.get("format", "html")
        if fmt not in SEARX_FORMATS:
            fmt = "html"
        if self.fail_status:
            return self.failure(self.fail_status, fmt, form)
        if fmt != "html" and not (fmt == "json" and self.json_enabled):
            return werkzeug_page(403)
        if not form.get("q"):
            if fmt == "html":
                return raw(200, self.index_page(form.get("q", ""), None), "text/html; charset=utf-8")
            return self.error(fmt, "No query", 400)
        problem = self.check(form)
        if problem:
            return self.error(fmt, problem, 400)
        data = self.answer(form)
        if fmt == "json":
            text = json.dumps(data)  # Python's defaults, as searx/webutils.py dumps it
            return raw(200, truncated(text) if self.bad_json else text, "application/json")
        return raw(200, self.results_page(form["q"], data), "text/html; charset=utf-8")

    @staticmethod
    def check(form: dict[str, str]) -> str | None:
        """searx/webadapter.py's checks, in its order; the SearxParameterException message or None."""
        def bad(name: str, value: Any) -> str:
            return f"Empty {name} parameter" if value in ("", None) else f"Invalid value {value} for parameter {name}"
        pageno = form.get("pageno", "1")
        if not pageno.isdigit() or int(pageno) < 1:
            return bad("pageno", pageno)
        if "safesearch" in form:
            safesearch = form["safesearch"]
            if not safesearch.isdigit() or not 0 <= int(safesearch) <= 2:
                return bad("safesearch", safesearch)
        time_range = form.get("time_range")
        if time_range not in (None, "", "None", "day", "week", "month", "year"):
            return bad("time_range", time_range)
        timeout = form.get("timeout_limit")
        if timeout not in (None, "", "None"):
            try:
                float(timeout)
            except ValueError:
                return bad("timeout_limit", timeout)
        language = form.get("language", "all")
        if not SEARX_LANGUAGE.match(language) and language != "auto":
            return bad("language", language)
        return None

    def error(self, fmt: str, message: str, status: int) -> web.Response:
        if fmt == "json":
            return raw(status, json.dumps({"error": message}), "application/json")
        return raw(status, self.index_page("", message), "text/html; charset=utf-8")

    def failure(self, status: int, fmt: str, form: dict[str, str]) -> web.Response:
        if status == 429:  # the limiter's answer (searx/botdetection/_helpers.py), whatever the format
            return raw(429, "Too Many Requests", "text/html; charset=utf-8")
        if status == 500 and fmt in ("json", "html"):  # an engine or plugin raised: index_error(fmt, 'search error')
            return self.error(fmt, "search error", 500)
        return werkzeug_page(status)

    def answer(self, form: dict[str, str]) -> dict[str, Any]:
        query = " ".join(form["q"].split())
        cleaned, include, exclude = split_site_operators(query)
        wanted = [c.strip() for c in form.get("categories", "").split(",")]
        wanted += [k[9:] for k, v in form.items() if k.startswith("category_") and v != "off"]
        category = next((c for c in wanted if c in SEARX_CATEGORIES), "general")
        hits = filter_domains(self.hits(cleaned), include, exclude)
        page = int(form.get("pageno", "1"))
        results = []
        for n, hit in enumerate(hits[(page - 1) * self.per_page: page * self.per_page]):
            engine = SEARX_ENGINES[n % len(SEARX_ENGINES)]
            position = n // len(SEARX_ENGINES) + 1  # each engine's own rank on this page
            parsed = urlparse(hit.url)
            results.append({
                "url": hit.url, "title": hit.title, "content": hit.snippet, "engine": engine,
                "template": "default.html", "parsed_url": list(parsed), "img_src": "", "thumbnail": "",
                "priority": "", "engines": [engine], "positions": [position], "score": 1.0 / position,
                "category": category,
                "publishedDate": hit.published.isoformat() if category == "news" else None,
            })
        data: dict[str, Any] = {"query": query}
        if self.number_of_results:
            data["number_of_results"] = 0
        data.update({"results": results, "answers": [], "corrections": [], "infoboxes": [],
                     "suggestions": [f"{cleaned} examples"] if results else [],
                     "unresponsive_engines": sorted(self.unresponsive_engines)})
        return data

    @staticmethod
    def page(title: str, main: str) -> str:
        # a simplified simple-theme page: the same landmarks (article.result, h3 a, p.content), not the real markup
        return ('<!DOCTYPE html>\n<html class="no-js theme-auto center-alignment-no" lang="en-EN">\n<head>\n'
                f'<meta charset="UTF-8">\n<title>{html.escape(title)}</title>\n</head>\n<body class="results_endpoint">'
                f"\n<main id=\"main_results\">\n{main}\n</main>\n</body>\n</html>\n")

    def index_page(self, q: str, error: str | None) -> str:
        alert = f'<div class="dialog-error" role="alert"><p>{html.escape(error)}</p></div>\n' if error else ""
        return self.page("SearXNG", alert + f'<form id="search" method="GET" action="/search"><input name="q" '
                                            f'value="{html.escape(q)}"></form>')

    def results_page(self, q: str, data: dict[str, Any]) -> str:
        articles = "\n".join(
            f'<article class="result result-default category-{html.escape(r["category"])}">\n'
            f'<a href="{html.escape(r["url"])}" class="url_header">{html.escape(r["url"])}</a>\n'
            f'<h3><a href="{html.escape(r["url"])}">{html.escape(r["title"])}</a></h3>\n'
            f'<p class="content">\n{html.escape(r["content"])}\n</p>\n</article>' for r in data["results"])
        return self.page(f"{q} - SearXNG", articles)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/search", self.search)
        app.router.add_post("/search", self.search)
        return app


# ---- Brave Search API ---------------------------------------------------------------------------------------------

class FakeBrave(FakeSearch):
    """``GET /res/v1/web/search`` with q, count, offset, country, search_lang, safesearch, text_decorations,
    spellcheck, extra_snippets; ``X-Subscription-Token`` must equal ``key``.

    ``rate_limited`` True: every request past the token check gets the 429. ``plan``, ``rate_limit`` (per second)
    and ``quota_limit`` (per month, 0 = none) feed the X-RateLimit-* headers and the 429's meta.
    """

    def __init__(self, key: str | None = None):
        super().__init__(key)
        self.rate_limited = False
        self.plan = "Search"
        self.rate_limit = 50
        self.quota_limit = 0
        self.quota_used = 0  # successful requests this "month" (Brave counts only those)

    @staticmethod
    def envelope(status: int, code: str, detail: str, meta: dict[str, Any]) -> dict[str, Any]:
        return {"type": "ErrorResponse", "error": {"id": str(uuid.uuid4()), "status": status, "code": code,
                                                   "detail": detail, "meta": meta}, "time": int(time.time())}

    @staticmethod
    def gateway_error(code: str, detail: str, meta: dict[str, Any]) -> web.Response:
        # the authentication layer's shape: sorted keys, no id, no time
        body = {"error": {"code": code, "detail": detail, "meta": meta, "status": 422}, "type": "ErrorResponse"}
        return raw(422, compact(body, sort_keys=True), "application/json")

    def rate_headers(self, remaining_now: int) -> dict[str, str]:
        now = datetime.now(UTC)
        days = calendar.monthrange(now.year, now.month)[1]
        month_end = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0) + timedelta(days=days)
        left = max(0, self.quota_limit - self.quota_used) if self.quota_limit else 0
        return {"X-RateLimit-Limit": f"{self.rate_limit}, {self.quota_limit}",
                "X-RateLimit-Policy": f"{self.rate_limit};w=1, {self.quota_limit};w=2592000",
                "X-RateLimit-Remaining": f"{remaining_now}, {left}",
                "X-RateLimit-Reset": f"1, {int((month_end - now).total_seconds())}"}

    def failure(self, status: int) -> web.Response:
        known = {
            404: ("SUBSCRIPTION_NOT_FOUND", "No subscription found.", {"component": "subscriptions"}),
            422: ("VALIDATION", BRAVE_VALIDATION, {}),
        }
        if status == 429:
            return self.too_many()
        if status in known:
            code, detail, meta = known[status]
            return raw(status, compact(self.envelope(status, code, detail, meta)), "application/json")
        return raw(status, phrase(status), "text/plain; charset=utf-8")  # unverified: Brave's 5xx body

    def too_many(self) -> web.Response:
        meta = {"plan": self.plan, "rate_limit": self.rate_limit, "rate_current": self.rate_limit,
                "quota_limit": self.quota_limit, "quota_current": self.quota_used, "component": "rate_limiter"}
        err = self.envelope(429, "RATE_LIMITED", "Request rate limit exceeded for plan", meta)
        # the live bodies order the error's keys id, status, detail, meta, code
        inner = err["error"]
        err["error"] = {k: inner[k] for k in ("id", "status", "detail", "meta", "code")}
        return raw(429, compact(err), "application/json", self.rate_headers(0))

    @staticmethod
    def check(query: dict[str, str]) -> list[dict[str, Any]]:
        """Pydantic v2 entries for the parameters this fake checks (q, count, offset), in declaration order."""
        errors: list[dict[str, Any]] = []
        if "q" not in query:
            errors.append({"type": "missing", "loc": ["query", "q"], "msg": "Field required"})
        elif not query["q"]:
            errors.append({"type": "string_too_short", "loc": ["query", "q"],
                           "msg": "String should have at least 1 character", "input": "", "ctx": {"min_length": 1}})
        elif len(query["q"]) > 400:
            errors.append({"type": "string_too_long", "loc": ["query", "q"],
                           "msg": "String should have at most 400 characters", "input": query["q"],
                           "ctx": {"max_length": 400}})
        for name, low, high in (("count", 1, 20), ("offset", 0, 9)):
            if name not in query:
                continue
            value = query[name]
            try:
                number = int(value)
            except ValueError:
                errors.append({"type": "int_parsing", "loc": ["query", name],
                               "msg": "Input should be a valid integer, unable to parse string as an integer",
                               "input": value})
                continue
            if number > high:
                errors.append({"type": "less_than_equal", "loc": ["query", name],
                               "msg": f"Input should be less than or equal to {high}", "input": value,
                               "ctx": {"le": high}})
            elif number < low:
                errors.append({"type": "greater_than_equal", "loc": ["query", name],
                               "msg": f"Input should be greater than or equal to {low}", "input": value,
                               "ctx": {"ge": low}})
        return errors

    async def web_search(self, request: web.Request) -> web.Response:
        await self.record(request)
        await self.pause(request)
        if self.fail_status:
            return self.failure(self.fail_status)
        if self.key is not None:
            token = request.headers.get("X-Subscription-Token")
            if token is None:
                return self.gateway_error("VALIDATION", BRAVE_VALIDATION, {"errors": [
                    {"loc": ["header", "x-subscription-token"], "msg": "Field required", "type": "missing"}]})
            if token != self.key:
                return self.gateway_error("SUBSCRIPTION_TOKEN_INVALID", "The provided subscription token is invalid.",
                                          {"component": "authentication"})
        if self.rate_limited:
            return self.too_many()
        query = dict(request.query)
        errors = self.check(query)
        if errors:
            body = self.envelope(422, "VALIDATION", BRAVE_VALIDATION, {"errors": errors})
            return raw(422, compact(body), "application/json")
        self.quota_used += 1
        text = compact(self.answer(query))
        headers = {**self.rate_headers(self.rate_limit - 1), "Server-Timing": "search-roundtrip;dur=12.345"}
        return raw(200, truncated(text) if self.bad_json else text, "application/json", headers)

    def answer(self, query: dict[str, str]) -> dict[str, Any]:
        q = query["q"]
        cleaned, include, exclude = split_site_operators(q)
        count = int(query.get("count", "20"))
        offset = int(query.get("offset", "0"))
        hits = filter_domains(self.hits(cleaned), include, exclude)
        page = hits[offset * count: (offset + 1) * count]
        language = query.get("search_lang", "en")
        decorate = query.get("text_decorations", "true").lower() not in ("false", "0")
        words = [re.escape(w) for w in re.findall(r"\w+", cleaned)]
        marker = re.compile(rf"\b({'|'.join(words)})\b", re.IGNORECASE) if words and decorate else None
        results = []
        for hit in page:
            description = marker.sub(r"<strong>\1</strong>", hit.snippet) if marker else hit.snippet
            name = hit.host.split(".")[-2].capitalize()
            favicon = f"https://imgs.search.brave.com/fake/rs:fit:32:32:1:0/g:ce/{hit.host}"
            result: dict[str, Any] = {
                "title": hit.title, "url": hit.url, "is_source_local": False, "is_source_both": False,
                "description": description, "page_age": hit.published.isoformat(),
                "profile": {"name": name, "url": hit.url, "long_name": hit.host, "img": favicon},
                "language": language, "family_friendly": True, "type": "search_result", "subtype": "generic",
                "is_live": False,
                "meta_url": {"scheme": "https", "netloc": hit.host, "hostname": hit.host, "favicon": favicon,
                             "path": "› " + " › ".join(p for p in hit.path.split("/") if p)},
                "age": f"{hit.published:%B} {hit.published.day}, {hit.published.year}",
            }
            if query.get("extra_snippets", "").lower() in ("true", "1"):
                result["extra_snippets"] = [f"More about {cleaned}, part {n}." for n in (1, 2)]
            results.append(result)
        info: dict[str, Any] = {
            "original": q, "show_strict_warning": False, "is_navigational": False, "is_news_breaking": False,
            "spellcheck_off": query.get("spellcheck", "true").lower() in ("false", "0"),
            "country": query.get("country", "us").lower(), "bad_results": False, "should_fallback": False,
            "postal_code": "", "city": "", "header_country": "",
            "more_results_available": len(hits) > (offset + 1) * count, "state": "",
        }
        if include or exclude:
            info["search_operators"] = {"applied": True, "cleaned_query": cleaned, "sites": include}
        data: dict[str, Any] = {
            "query": info,
            "mixed": {"type": "mixed", "main": [{"type": "web", "index": i, "all": False} for i in range(len(results))],
                      "top": [], "side": []},
            "type": "search",
        }
        if results:  # a query without web results has no "web" key at all
            data["web"] = {"type": "search", "results": results, "family_friendly": True}
        return data

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/res/v1/web/search", self.web_search)
        return app


# ---- Tavily -------------------------------------------------------------------------------------------------------

def nginx_page(status: int) -> web.Response:
    title = NGINX_TITLES[status]
    body = (f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n"
            "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")
    return raw(status, body, "text/html", {"Server": "nginx"})


class FakeTavily(FakeSearch):
    """``POST /search`` with a JSON body (query, max_results, include_domains, exclude_domains, topic, search_depth,
    include_answer, include_raw_content, include_images, include_image_descriptions, include_favicon,
    include_usage, country, ...); the key as ``Authorization: Bearer <key>`` or the body's ``api_key``.

    ``rate_limited`` True: every request gets the 429 (Tavily's IP-level throttle answers before looking at keys).
    """

    def __init__(self, key: str | None = None):
        super().__init__(key)
        self.rate_limited = False

    @staticmethod
    def error(status: int, message: str) -> web.Response:
        return raw(status, compact({"detail": {"error": message}}), "application/json", {"Server": "nginx"})

    def failure(self, status: int) -> web.Response:
        if status in NGINX_TITLES and status != 500:
            return nginx_page(status)
        return self.error(status, TAVILY_ERRORS.get(status, phrase(status)))

    def authorized(self, request: web.Request, body: dict[str, Any]) -> bool:
        if self.key is None:
            return True
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip() == self.key:
            return True
        return body.get("api_key") == self.key

    async def search(self, request: web.Request) -> web.Response:
        started = time.monotonic()
        entry = await self.record(request)
        await self.pause(request)
        if self.fail_status:
            return self.failure(self.fail_status)
        if self.rate_limited:
            return self.error(429, TAVILY_ERRORS[429])
        body = entry["json"] if isinstance(entry["json"], dict) else {}
        query = body.get("query")
        if not isinstance(query, str) or not query:
            return self.error(400, "Query is missing.")  # wording seen only in a third-party fixture
        if len(query) > 400:
            return self.error(400, "Query is too long. Max query length is 400 characters.")
        if len(query.strip()) < 2:
            return self.error(400, "Query is too short. Min query length is 2 characters.")
        if not self.authorized(request, body):
            return self.error(401, TAVILY_ERRORS[401])
        text = compact(self.answer(body, time.monotonic() - started))
        return raw(200, truncated(text) if self.bad_json else text, "application/json", {"Server": "nginx"})

    def answer(self, body: dict[str, Any], elapsed: float) -> dict[str, Any]:
        query = body["query"]
        try:
            wanted = int(body.get("max_results", 5))
        except (TypeError, ValueError):
            wanted = 5
        wanted = min(max(wanted, 0), 20)  # the documented range; what Tavily does outside it is not verified
        include = [d for d in body.get("include_domains") or [] if isinstance(d, str)]
        exclude = [d for d in body.get("exclude_domains") or [] if isinstance(d, str)]
        hits = filter_domains(self.hits(query.strip()), include, exclude)[:wanted]
        news = body.get("topic") == "news"
        with_raw = body.get("include_raw_content") not in (None, False)
        results = []
        for i, hit in enumerate(hits):
            score = round(0.98 * 0.95 ** i, 8)
            raw_content = f"# {hit.title}\n\n{hit.snippet}\n\nFull text of {hit.url}." if with_raw else None
            if news:
                result: dict[str, Any] = {"url": hit.url, "title": hit.title, "score": score,
                                          "published_date": email.utils.format_datetime(
                                              hit.published.replace(tzinfo=UTC), usegmt=True),
                                          "content": hit.snippet, "raw_content": raw_content}
            else:
                result = {"url": hit.url, "title": hit.title, "content": hit.snippet, "score": score,
                          "raw_content": raw_content}
            if body.get("include_favicon"):
                result["favicon"] = f"https://{hit.host}/favicon.ico"
            results.append(result)
        images: list[Any] = []
        if body.get("include_images"):
            urls = [f"https://images.example.com/{slug(query)}/{n}.jpg" for n in (1, 2)]
            images = ([{"url": u, "description": f"Picture {n} of {query}."} for n, u in enumerate(urls, 1)]
                      if body.get("include_image_descriptions") else urls)
        answer = None
        if body.get("include_answer") not in (None, False):
            answer = f"{query}: an answer drawn from {len(results)} results."
        data: dict[str, Any] = {"query": query, "follow_up_questions": None, "answer": answer, "images": images,
                                "results": results, "response_time": round(elapsed, 2)}
        if body.get("include_usage"):
            data["usage"] = {"credits": 2 if body.get("search_depth") == "advanced" else 1}
        data["request_id"] = str(uuid.uuid4())
        return data

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/search", self.search)
        return app


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve one fake search provider on 127.0.0.1.")
    parser.add_argument("provider", choices=("searxng", "brave", "tavily"))
    parser.add_argument("--port", type=int, default=8888)
    parser.add_argument("--key", default=None, help="Brave subscription token or Tavily key to require")
    parser.add_argument("--no-json", action="store_true", help="SearXNG: answer format=json with its 403")
    args = parser.parse_args()
    fake: FakeSearch
    if args.provider == "searxng":
        fake = FakeSearXNG(args.key)
        fake.json_enabled = not args.no_json
    elif args.provider == "brave":
        fake = FakeBrave(args.key)
    else:
        fake = FakeTavily(args.key)
    web.run_app(fake.app(), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
