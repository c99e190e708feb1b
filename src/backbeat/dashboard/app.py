"""``dashboard(source, ...)``: the ASGI app, with access checked and the CSP on every response.

A `Dashboard` is a plain ASGI app to mount anywhere (links come from ``root_path``): each
one has its own source and snapshot loop, nothing is kept in module globals, so several
dashboards (of several stores) live in one process.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from importlib import resources

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from backbeat.dashboard.access import Authorize, Forbidden, grant_for, same_origin
from backbeat.dashboard.action_routes import action_route
from backbeat.dashboard.api import Api
from backbeat.dashboard.context import GRANT_KEY, Audit, Context, log_action
from backbeat.dashboard.events import events
from backbeat.dashboard.filters import BadInput
from backbeat.dashboard.handlers import Pages
from backbeat.dashboard.pages import esc
from backbeat.dashboard.redact import Redact, redact_secrets
from backbeat.dashboard.snapshot import Hub
from backbeat.dashboard.source import Source
from backbeat.runner import Runner
from backbeat.stores import Store, StoreError

logger = logging.getLogger("backbeat")

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]
STATIC = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
MIN_REFRESH = 0.1

Endpoint = Callable[[Request], Awaitable[Response]]


class Dashboard:
    """The ASGI app `dashboard(...)` returns; `source` counts its store calls, `hub` is its
    snapshot loop."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self.source = context.source
        self.hub = context.hub
        pages, api = Pages(context), Api(context)

        def with_context(
            handler: Callable[[Context, Request], Awaitable[Response]],
        ) -> Endpoint:
            async def endpoint(request: Request) -> Response:
                return await handler(context, request)

            return endpoint

        routes = [
            Route("/", _guard(pages.overview)),
            Route("/tasks", _guard(pages.tasks)),
            Route("/tasks/{task_id}", _guard(pages.task)),
            Route("/failures", _guard(pages.failures)),
            Route("/workers", _guard(pages.workers)),
            Route("/schedules", _guard(pages.schedules)),
            Route("/actions", _guard(with_context(action_route)), methods=["POST"]),
            Route("/actions/{action}", _guard(with_context(action_route)), methods=["POST"]),
            Route("/events", with_context(events)),
            Route("/static/{name}", _static),
            Route("/api/overview", _guard(api.overview, json=True)),
            Route("/api/tasks", _guard(api.tasks, json=True)),
            Route("/api/tasks/{task_id}", _guard(api.task, json=True)),
            Route("/api/failures", _guard(api.failures, json=True)),
            Route("/api/workers", _guard(api.workers, json=True)),
            Route("/api/schedules", _guard(api.schedules, json=True)),
            Route("/api/actions/{action}", _guard(api.action, json=True), methods=["POST"]),
            Route("/metrics", _guard(api.metrics)),
        ]
        self._app = Starlette(routes=routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        scope = mounted(scope)

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), *HEADERS]
                if not any(name.lower() == b"cache-control" for name, _ in headers):
                    headers.append((b"cache-control", b"no-store"))  # task data: not kept
                message = {**message, "headers": headers}
            await send(message)

        request = Request(scope)
        api = _is_api(request)
        try:
            scope[GRANT_KEY] = await grant_for(self.context.authorize, request)
        except Forbidden as refusal:
            await _refuse(str(refusal), api)(scope, receive, secured)
            return
        if request.method == "POST" and not same_origin(request):
            text = "a cross-site request cannot act on this dashboard (origin check)"
            await _refuse(text, api)(scope, receive, secured)
            return
        await self._app(scope, receive, secured)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """Served on its own (``backbeat dashboard``): stop the loop, close a store it opened."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def close(self) -> None:
        """Stop the snapshot loop, and close the store if the dashboard opened it (a URL)."""
        await self.hub.close()
        await self.source.close()


def mounted(scope: Scope) -> Scope:
    """The scope with ``root_path`` set where the framework that mounted the dashboard
    left it out: Litestar strips its mount's path from ``path`` (adding a slash) and says
    nothing of it but in ``raw_path``. The links need the prefix."""
    path = str(scope["path"])
    raw = scope.get("raw_path")
    if scope.get("root_path") or not isinstance(raw, bytes):
        return scope
    full = raw.decode("latin-1").rstrip("/")
    local = path.rstrip("/")
    if full == local or not full.endswith(local):
        return scope
    prefix = full[: len(full) - len(local)]
    return {**scope, "root_path": prefix, "path": prefix + (local or "/")}


def _is_api(request: Request) -> bool:
    path = str(request.scope["path"])
    root = str(request.scope.get("root_path", ""))
    local = path[len(root) :] if root and path.startswith(root) else path
    return local.startswith("/api/")


def _refuse(text: str, api: bool) -> Response:
    if api:
        return JSONResponse({"error": text}, status_code=403)
    return PlainTextResponse(text, status_code=403)


def _guard(endpoint: Endpoint, *, json: bool = False) -> Endpoint:
    """Bad input is 400, a refused action 403, a store that cannot be read 503: each said."""

    async def guarded(request: Request) -> Response:
        try:
            return await endpoint(request)
        except BadInput as error:
            return _said(str(error), 400, json)
        except Forbidden as error:
            return _said(str(error), 403, json)
        except StoreError as error:
            logger.warning("dashboard: the store cannot be read: %s", error)
            return _said(f"the store cannot be read now: {error}", 503, json)

    return guarded


def _said(text: str, status: int, json: bool) -> Response:
    if json:
        return JSONResponse({"error": text}, status_code=status)
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>backbeat</title>'
        f"</head><body><h1>{status}</h1><p>{esc(text)}</p></body></html>"
    )
    return HTMLResponse(page, status_code=status)


async def _static(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in STATIC:
        return PlainTextResponse("not found", status_code=404)
    body = resources.files("backbeat.dashboard").joinpath("static", name).read_bytes()
    return Response(body, media_type=STATIC[name], headers={"Cache-Control": "max-age=300"})


def dashboard(
    source: Runner | Store | str,
    *,
    authorize: Authorize | None = None,
    audit: Audit | None = None,
    redact: Redact | None = None,
    title: str = "backbeat",
    refresh: float = 1.0,
) -> Dashboard:
    """An ASGI app showing and acting on `source`'s tasks: mount it at any path.

    `source`: a `Runner` (a stored runner's store; a runner without a store: its
    in-process table, read and cancel only), a `Store`, or a store URL (opened on the
    first request). `authorize(request)` (sync or async) returns ``"full"``, ``"read"``, a
    set of action names, or None/False (403); without it only loopback clients are
    served. `audit(event)` is called for every action done (default: a log line on the
    ``backbeat`` logger). `redact(arguments)` is what a task page shows of the arguments
    (default: values of secret-looking keys hidden). `refresh`: seconds between two
    snapshots of the live view. See docs/dashboard.md.
    """
    for name, hook in (("authorize", authorize), ("audit", audit), ("redact", redact)):
        if hook is not None and not callable(hook):
            raise TypeError(f"dashboard({name}=...) must be a callable, got {hook!r}")
    if not isinstance(refresh, int | float) or refresh < MIN_REFRESH:
        raise ValueError(f"dashboard(refresh=...) must be at least {MIN_REFRESH}s, got {refresh!r}")
    if not isinstance(title, str):
        raise TypeError(f"dashboard(title=...) must be a string, got {title!r}")
    reading = Source(source)
    context = Context(
        source=reading,
        hub=Hub(reading, float(refresh)),
        authorize=authorize,
        audit=audit or log_action,
        redact=redact or redact_secrets,
        title=title,
    )
    return Dashboard(context)


__all__ = ["Dashboard", "dashboard"]
