"""The review page: a small Starlette app over the store and the spec's lock file.

``GET /`` renders the page (samples filterable by class, attribute value, filter outcome, review state
and model; the attribute values; the report's funnel, diversity and bias charts). ``POST /decide`` records
a keep/reject/relabel decision with the reviewer's name; ``POST /attribute`` drops or renames an elicited
value in the lock file. Bound beyond loopback, every request needs the token (``?token=``, the
``X-Review-Token`` header, or the cookie the first page sets); on loopback only local Host names are
served (no DNS rebinding), and writes must be JSON (no cross-site form posts).
"""

from __future__ import annotations

import ipaddress
import secrets
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Receive, Scope, Send

from factory.review.attributes import EditError, edit_lock, spec_lock, value_rows
from factory.spec import Spec, load_spec
from factory.store import REVIEW_DECISIONS, Store

TEMPLATES = Path(__file__).with_name("templates")
TOKEN_COOKIE = "review_token"
LOCAL_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the page on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ReviewConfig:
    spec_path: Path
    db: Path
    reviewer: str
    token: str | None = None  # required on every request when set


class TokenGate:
    """ASGI middleware: 403 for a request without the token (query, header or cookie)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        given = (request.query_params.get("token") or request.headers.get("x-review-token")
                 or request.cookies.get(TOKEN_COOKIE) or "")
        if not secrets.compare_digest(given.encode(), self.token.encode()):
            await PlainTextResponse("a valid review token is required", status_code=403)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _outcome(sample: dict[str, Any]) -> str:
    if sample["kept"] is None:
        return "unfiltered"
    return "kept" if sample["kept"] else str(sample["filter_reason"] or "dropped")


def _matches(s: dict[str, Any], q: dict[str, str]) -> bool:
    if q.get("class") and s["class"] != q["class"]:
        return False
    if q.get("model") and s["model"] != q["model"]:
        return False
    if q.get("outcome") and _outcome(s) != q["outcome"]:
        return False
    if q.get("review") and (s["review"]["decision"] if s["review"] else "todo") != q["review"]:
        return False
    if q.get("attr"):
        dim, _, value = q["attr"].partition("=")
        if str(s["attributes"].get(dim)) != value:
            return False
    return True


def _charts(spec: Spec, store: Store) -> list[dict[str, str]]:
    from factory.quality.report import bias_chart, diversity_chart, funnel_chart, report_data

    data = report_data(spec, store)
    charts = [funnel_chart(data), diversity_chart(data), *(bias_chart(d) for d in data["bias"][:3])]
    return [{"title": c.title, "caption": c.caption, "src": c.data_uri} for c in charts if c is not None]


def review_counts(samples: list[dict[str, Any]]) -> dict[str, int]:
    """Reviewable samples (kept by the filters, or every sample before they ran), reviewed, and left."""
    todo = [s for s in samples if s["kept"] is not False]
    done = sum(1 for s in todo if s["review"])
    return {"reviewable": len(todo), "reviewed": done, "left": len(todo) - done}


def create_app(config: ReviewConfig, charts: bool = True) -> Starlette:
    """The review app for one spec and store (a store connection per request: nothing stays locked)."""
    templates = Jinja2Templates(directory=str(TEMPLATES))

    def samples_of(spec: Spec, store: Store) -> list[dict[str, Any]]:
        decisions = store.review_decisions(spec.hash)
        rows = store.review_samples(spec.hash)
        for s in rows:
            s["review"] = decisions.get(s["sample_id"])
            s["outcome"] = _outcome(s)
        return rows

    async def page(request: Request) -> Response:
        spec = load_spec(config.spec_path)
        query = {k: v for k, v in request.query_params.items() if k != "token" and v}
        lock_file, lock = spec_lock(spec)
        with Store(config.db) as store:
            rows = samples_of(spec, store)
            figures = _charts(spec, store) if charts else []
            edits = store.attribute_edits(spec.hash)
        used = Counter((dim, str(v)) for s in rows for dim, v in s["attributes"].items())
        shown = [s for s in rows if _matches(s, query)]
        context = {
            "spec": spec, "samples": shown, "total": len(rows), "counts": review_counts(rows), "query": query,
            "classes": spec.class_names, "models": sorted({s["model"] for s in rows}),
            "outcomes": sorted({s["outcome"] for s in rows}),
            "attrs": sorted({f"{d}={v}" for d, v in used}), "values": value_rows(spec, lock), "used": used,
            "lock_file": lock_file.name if lock is not None and lock_file is not None else None,
            "edits": edits, "charts": figures, "reviewer": config.reviewer, "decisions": REVIEW_DECISIONS,
        }
        response = templates.TemplateResponse(request, "review.html.j2", context)
        if config.token and request.query_params.get("token") == config.token:
            response.set_cookie(TOKEN_COOKIE, config.token, httponly=True, samesite="strict")
        return response

    async def _json(request: Request) -> dict[str, Any]:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise EditError("send JSON (Content-Type: application/json)")
        body = await request.json()
        if not isinstance(body, dict):
            raise EditError("send a JSON object")
        return body

    async def decide(request: Request) -> Response:
        spec = load_spec(config.spec_path)
        try:
            body = await _json(request)
            decision, label = str(body.get("decision", "")), body.get("label") or None
            if decision == "relabel" and label not in spec.class_names:
                raise EditError(f"relabel to {label!r}: not a class of {spec.name}")
            with Store(config.db) as store:
                store.save_review(spec.hash, str(body.get("sample_id", "")), decision, config.reviewer, label,
                                  str(body.get("note") or "").strip() or None)
                counts = review_counts(samples_of(spec, store))
        except (EditError, ValueError, KeyError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"ok": True, "reviewer": config.reviewer, **counts})

    async def attribute(request: Request) -> Response:
        spec = load_spec(config.spec_path)
        try:
            body = await _json(request)
            dim, cls, value = str(body["dimension"]), str(body.get("class") or ""), str(body["value"])
            new_value = body.get("new_value") or None
            path = edit_lock(spec, dim, cls, value, new_value)
            with Store(config.db) as store:
                store.save_attribute_edit(spec.hash, dim, cls, value, "rename" if new_value else "drop",
                                          config.reviewer, new_value, str(body.get("note") or "") or None)
        except (EditError, ValueError, KeyError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"ok": True, "lock_file": str(path)})

    middleware = [Middleware(TokenGate, token=config.token)] if config.token else [
        Middleware(TrustedHostMiddleware, allowed_hosts=LOCAL_HOSTS)]
    return Starlette(routes=[Route("/", page), Route("/decide", decide, methods=["POST"]),
                             Route("/attribute", attribute, methods=["POST"])], middleware=middleware)


def serve(config: ReviewConfig, host: str = "127.0.0.1", port: int = 8105) -> None:
    """Run the page with uvicorn until interrupted; beyond loopback a token is required."""
    import uvicorn

    if not is_loopback(host) and not config.token:
        raise ValueError(f"binding {host} (beyond loopback) needs a token")
    uvicorn.run(create_app(config), host=host, port=port, log_level="warning")
