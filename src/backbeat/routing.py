"""Esmerald-style route decorators: ``@post("/register", background=...)``.

A decorated handler becomes a Starlette `Route`, so it goes straight into
``App(routes=[...])`` (or any Starlette router). What backbeat adds:

* parameters bound from the signature (see `backbeat.params`);
* return values turned into responses (dict/list/model → JSON, None → empty);
* nothing dropped: the decorator's ``background=``, the injected
  `BackgroundTasks` and the response's own ``background`` all run, in that
  order, after the last body byte is sent — and none of them when the handler
  raises or for HEAD/OPTIONS requests;
* errors: 400 for malformed JSON, 413 for a body over the app's
  ``max_body_size``, 415 for a body not sent as JSON, 422 listing the fields, 500 without
  internals (unless the app has ``debug=True``), each as JSON.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from pydantic import BaseModel
from pydantic_core import to_json
from starlette.background import BackgroundTask as StarletteBackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response as StarletteResponse
from starlette.routing import Route, compile_path
from starlette.types import Receive, Scope, Send

from backbeat.params import DEFAULT_MAX_BODY_SIZE, BadRequest, InvalidParameters, analyse
from backbeat.responses import JSONResponse, Response
from backbeat.stores.base import DuplicateTask, StoreError
from backbeat.tasks import BackgroundTask, BackgroundTasks, PreparedTasks, TaskSink, current_runner

logger = logging.getLogger("backbeat")

Handler = Callable[..., Any]

_NO_TASKS_METHODS = frozenset({"HEAD", "OPTIONS"})
_BODYLESS_STATUSES = frozenset({204, 304})


def default_status(methods: Sequence[str]) -> int:
    upper = {method.upper() for method in methods}
    if upper == {"POST"}:
        return 201
    if upper == {"DELETE"}:
        return 204
    return 200


class ActivateWhenSent(StarletteBackgroundTask):
    """What a response awaits after its body instead of tasks already stored: activation."""

    def __init__(self, prepared: PreparedTasks) -> None:
        # Only ever awaited, by the response: Starlette's constructor has nothing to do.
        self.prepared = prepared

    async def __call__(self) -> None:
        await self.prepared.activate()


class HandlerRoute(Route):
    """A Starlette route that runs an Esmerald-style handler."""

    def __init__(
        self,
        path: str,
        handler: Handler,
        *,
        methods: Sequence[str],
        background: BackgroundTask | None = None,
        status_code: int | None = None,
        name: str | None = None,
        include_in_schema: bool = True,
    ) -> None:
        if not callable(handler):
            raise TypeError(f"a route handler must be callable, got {handler!r}")
        super().__init__(
            path, handler, methods=list(methods), name=name, include_in_schema=include_in_schema
        )
        self.handler = handler
        self.background = _route_background(background)
        self.status_code = status_code if status_code is not None else default_status(methods)
        self.signature = analyse(handler, compile_path(path)[2].keys())
        self.is_async = inspect.iscoroutinefunction(handler)
        self.app = self.handle_request

    async def handle_request(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        try:
            response = await self._respond(request)
        except ClientDisconnect:
            return
        runner = current_runner.get()
        if runner is None or not runner.durable or response.background is None:
            await response(scope, receive, send)
            return
        response = await self._store_tasks(request, response, runner)
        try:
            await response(scope, receive, send)
        except BaseException:
            if isinstance(response.background, ActivateWhenSent):
                with contextlib.suppress(Exception):
                    await response.background.prepared.abandon("the response was not delivered")
            raise

    async def _store_tasks(
        self, request: Request, response: StarletteResponse, runner: TaskSink
    ) -> StarletteResponse:
        """Store the tasks before the response starts: a 2xx is a promise kept."""
        tasks = response.background
        assert isinstance(tasks, BackgroundTask)  # _tasks_for made it one
        try:
            response.background = ActivateWhenSent(await runner.prepare(tasks))
        except DuplicateTask as exc:
            # Not the store's state but a task's: trying again would not help.
            return self._server_error(request, exc)
        except StoreError as exc:
            # Nothing was stored (the store is down, gone or full): no 2xx, try later.
            return store_unavailable(request, exc)
        except Exception as exc:
            # Nothing was stored (an argument that is not JSON, a function with no name).
            return self._server_error(request, exc)
        return response

    async def _respond(self, request: Request) -> StarletteResponse:
        """The handler's response, carrying every task to run; an error response, none."""
        try:
            limit = getattr(request.scope.get("app"), "json_body_limit", DEFAULT_MAX_BODY_SIZE)
            kwargs, injected = await self.signature.bind(request, limit)
            if self.is_async:
                result = await self.handler(**kwargs)
            else:
                result = await run_in_threadpool(self.handler, **kwargs)
            response = self._to_response(result)
        except BadRequest as exc:
            return JSONResponse({"detail": str(exc)}, exc.status_code)
        except InvalidParameters as exc:
            return JSONResponse({"detail": exc.errors}, 422)
        except HTTPException as exc:
            return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)
        except ClientDisconnect:
            raise
        except Exception as exc:
            return self._server_error(request, exc)
        if request.method in _NO_TASKS_METHODS:
            response.background = None
        else:
            response.background = self._tasks_for(injected, response)
        return response

    def _tasks_for(
        self, injected: BackgroundTasks | None, response: StarletteResponse
    ) -> BackgroundTask | None:
        parts: list[BackgroundTask] = []
        if self.background is not None:
            parts.append(self.background)
        if injected is not None and injected.tasks:
            parts.append(injected)
        own = response.background
        if own is not None:
            parts.append(own if isinstance(own, BackgroundTask) else BackgroundTask(own))
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else BackgroundTasks(parts)

    def _to_response(self, result: Any) -> StarletteResponse:
        if isinstance(result, StarletteResponse):
            if isinstance(result, Response) and not result.status_explicit:
                _apply_default_status(result, self.status_code)
            return result
        if result is None:
            return Response(b"", self.status_code)
        body = result.model_dump_json().encode() if isinstance(result, BaseModel) else None
        if body is None:
            body = to_json(result, inf_nan_mode="null")
        status = 200 if self.status_code in _BODYLESS_STATUSES else self.status_code
        return Response(body, status, media_type="application/json")

    def _server_error(self, request: Request, exc: Exception) -> StarletteResponse:
        logger.error(
            "Unhandled exception in handler %s for %s %s",
            getattr(self.handler, "__qualname__", self.handler),
            request.method,
            request.url.path,
            exc_info=exc,
        )
        content: dict[str, Any] = {"detail": "Internal Server Error"}
        if getattr(request.scope.get("app"), "debug", False):
            content["error"] = f"{type(exc).__name__}: {exc}"
            content["traceback"] = traceback.format_exception(exc)
        return JSONResponse(content, 500)


def reachable(app: object) -> Iterator[object]:
    """Everything an ASGI app leads to: middleware (``.app``), routers (``.router``),
    mounts and routes (``.routes``), route handler objects (``.handler``), each once."""
    seen: set[int] = set()
    pending: list[object] = [app]
    while pending:
        item = pending.pop()
        if item is None or id(item) in seen or len(seen) > 10_000:
            continue
        seen.add(id(item))
        if isinstance(item, list | tuple):
            pending.extend(item)
            continue
        yield item
        routes = getattr(item, "routes", None)
        if isinstance(routes, list):
            pending.extend(routes)
        for name in ("app", "router", "handler"):
            found = getattr(item, name, None)
            if found is not None and not inspect.isfunction(found):
                pending.append(found)


def handler_modules(app: object) -> set[str]:
    """The modules that define an ASGI app's route handlers (backbeat, Starlette, FastAPI)."""
    modules: set[str] = set()
    for item in reachable(app):
        for name in ("handler", "endpoint", "fn"):  # backbeat/Lilya, Starlette, Esmerald
            endpoint = getattr(item, name, None)
            if inspect.isfunction(endpoint):
                modules.add(endpoint.__module__)
    return modules


def declare_task_modules(runner: object, app: object) -> None:
    """Let a durable runner run the plain functions defined next to the app's handlers."""
    register_module = getattr(runner, "register_module", None)
    if register_module is not None:
        for module in handler_modules(app):
            register_module(module)


def store_unavailable(request: Request, exc: Exception) -> StarletteResponse:
    logger.error(
        "backbeat: the tasks of %s %s were not stored, answering 503: %s",
        request.method,
        request.url.path,
        exc,
    )
    return JSONResponse(
        {"detail": "Service Unavailable: the task store cannot take tasks now; try again later"},
        503,
        headers={"Retry-After": "1"},
    )


def _apply_default_status(response: Response, status: int) -> None:
    if status in _BODYLESS_STATUSES:
        if response.body:
            status = 200  # a DELETE that returns content is a 200, not a 204 with a body
        else:
            response.raw_headers = [
                header for header in response.raw_headers if header[0] != b"content-length"
            ]
    response.status_code = status


def _route_background(background: object) -> BackgroundTask | None:
    if background is None:
        return None
    if not isinstance(background, BackgroundTask):
        raise TypeError(
            f"background= expects a BackgroundTask or BackgroundTasks, got {background!r}"
        )
    # Declared once, run for every request: each run takes the request's context.
    _run_in_caller_context(background)
    return background


def _run_in_caller_context(background: BackgroundTask) -> None:
    background.context = None
    if isinstance(background, BackgroundTasks):
        for member in background.tasks:
            _run_in_caller_context(member)


def route(
    path: str,
    methods: Sequence[str] | None = None,
    *,
    background: BackgroundTask | None = None,
    status_code: int | None = None,
    name: str | None = None,
    include_in_schema: bool = True,
) -> Callable[[Handler], HandlerRoute]:
    """Turn a handler into a route for ``methods`` (default ``["GET"]``)."""

    def decorate(handler: Handler) -> HandlerRoute:
        return HandlerRoute(
            path,
            handler,
            methods=methods or ["GET"],
            background=background,
            status_code=status_code,
            name=name,
            include_in_schema=include_in_schema,
        )

    return decorate


class MethodDecorator(Protocol):
    def __call__(
        self,
        path: str,
        *,
        background: BackgroundTask | None = None,
        status_code: int | None = None,
        name: str | None = None,
        include_in_schema: bool = True,
    ) -> Callable[[Handler], HandlerRoute]: ...


def _method_decorator(method: str) -> MethodDecorator:
    def decorator(
        path: str,
        *,
        background: BackgroundTask | None = None,
        status_code: int | None = None,
        name: str | None = None,
        include_in_schema: bool = True,
    ) -> Callable[[Handler], HandlerRoute]:
        return route(
            path,
            [method],
            background=background,
            status_code=status_code,
            name=name,
            include_in_schema=include_in_schema,
        )

    decorator.__name__ = decorator.__qualname__ = method.lower()
    decorator.__doc__ = f"Turn a handler into a {method} route."
    return decorator


get = _method_decorator("GET")
post = _method_decorator("POST")
put = _method_decorator("PUT")
patch = _method_decorator("PATCH")
delete = _method_decorator("DELETE")
