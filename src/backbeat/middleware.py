"""`BackbeatMiddleware`: the supervised runner for any ASGI app.

    app = BackbeatMiddleware(FastAPI(...), runner=Runner(concurrency=50))

The runner starts when the wrapped app's lifespan starts up and drains before
the wrapped app's own shutdown runs. During a request, backbeat tasks that a
response awaits (its ``background=``) are handed to the runner instead of
running inside the request's ASGI call. Other frameworks' own task classes
(`starlette.background.BackgroundTasks`, …) still run inline: only backbeat
tasks know how to hand themselves over (`backbeat.fastapi.install` makes
FastAPI's injected ones backbeat's).

With a store, a 2xx is a promise here too: every backbeat task made while the
request is served is stored before ``http.response.start`` goes out. If that
fails, the client gets a 500 (a task that cannot be stored: a closure, an
argument that is not JSON) or a 503 (the store is unavailable) instead of the
app's response, and none of the request's tasks run. Those the response then
awaits become runnable; those it never awaits are cancelled when the request
ends. (A task object made outside any request, e.g. at import time, is
stored when the response hands it over, after the body.)

Tasks that a framework's dependency injection gives a handler
(`backbeat.fastapi.Tasks`, …) are `InjectedTasks`: the middleware hands them over
once the app has answered, unless the response already ran them or the handler
failed. Backbeat apps mounted inside the wrapped app get no lifespan of their
own from most frameworks: their runners start and drain with this one.
"""

from __future__ import annotations

import json
import logging
import sys

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backbeat.checks import UnrunnableTasks, check_app, declare_route_tasks
from backbeat.routing import declare_task_modules, reachable
from backbeat.runner import Runner
from backbeat.stores.base import DuplicateTask, StoreError
from backbeat.tasks import BackgroundTasks, RequestTasks, current_runner, request_tasks

logger = logging.getLogger("backbeat")

INJECTED = "backbeat.injected"  # the scope key of a request's InjectedTasks


class InjectedTasks(BackgroundTasks):
    """The tasks a framework's dependency injection gave a handler (one per request).

    `BackbeatMiddleware` hands them over after the app has answered, unless the
    response already ran them (``handed``) or the handler failed (``dropped``:
    like the framework's own, they do not run when the handler raises).
    """

    handed = False
    dropped = False

    async def __call__(self) -> None:
        if self.handed:
            return
        self.handed = True
        await super().__call__()


def inject_tasks(scope: Scope, kind: type[InjectedTasks] = InjectedTasks) -> InjectedTasks:
    """A request's `InjectedTasks` (of class `kind`: a framework may check the type it
    injects), made the first time a handler or dependency asks."""
    if current_runner.get() is None:
        raise RuntimeError(
            "backbeat's injected tasks need the app wrapped by BackbeatMiddleware "
            "(backbeat.fastapi.install(app, runner), backbeat.litestar.BackbeatPlugin, …): "
            "nothing would run them"
        )
    made: list[InjectedTasks] = scope.setdefault(INJECTED, [])
    if not made:
        made.append(kind())
    return made[0]


async def _hand_over_injected(scope: Scope) -> None:
    for tasks in scope.get(INJECTED, ()):
        if not tasks.dropped:
            await tasks()


class BackbeatMiddleware:
    def __init__(self, app: ASGIApp, runner: Runner | None = None) -> None:
        self.app = app
        self.runner = runner if runner is not None else Runner()
        declare_task_modules(self.runner, app)
        declare_route_tasks(self.runner, app)  # what cannot be stops the start-up

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            token = current_runner.set(self.runner)
            try:
                if self.runner.durable and not self.runner.eager:
                    await self._store_ahead(scope, receive, send)
                else:
                    await self.app(scope, receive, send)
                    await _hand_over_injected(scope)
            finally:
                current_runner.reset(token)
        elif scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _store_ahead(self, scope: Scope, receive: Receive, send: Send) -> None:
        collector = RequestTasks()
        token = request_tasks.set(collector)

        async def send_when_stored(message: Message) -> None:
            if collector.refused:
                return  # the client already has the error instead of this response
            if message["type"] == "http.response.start" and collector.created:
                try:
                    await self.runner.prepare_collected(collector)
                except Exception as exc:
                    collector.refused = True
                    await _refuse(scope, send, exc)
                    return
            await send(message)

        delivered = False
        try:
            await self.app(scope, receive, send_when_stored)
            delivered = not collector.refused
            if delivered:
                await _hand_over_injected(scope)
        finally:
            request_tasks.reset(token)
            if collector.prepared:
                if delivered:
                    reason = "the response did not hand it over"
                    # Most likely a task the app meant to run (`response.background = …` on
                    # a response the framework then dropped): say so.
                    logger.warning(
                        "backbeat: %d task(s) made while serving %s %s were never handed "
                        "over by the response; cancelled: %s",
                        len(collector.prepared),
                        scope.get("method"),
                        scope.get("path"),
                        ", ".join(
                            repr(t) for t in collector.created if id(t) in collector.prepared
                        ),
                    )
                else:
                    reason = "the response was not delivered"
                await self.runner.abandon_collected(collector, reason)

    def _runners(self) -> list[Runner]:
        """This middleware's runner, then those of backbeat apps mounted inside."""
        runners = [self.runner]
        for item in reachable(self.app):
            mounted = getattr(item, "runner", None)
            if isinstance(mounted, Runner) and all(mounted is not r for r in runners):
                runners.append(mounted)
        return runners

    async def _start(self) -> None:
        # Routes may have been added since; a route's task that a store could not run
        # fails the start-up here, rather than every request (`backbeat.checks`).
        check_app(self.runner, self.app)
        for runner in self._runners():
            if not runner.running:  # a lifespan helper may have started it already
                await runner.start()

    async def _drain(self) -> None:
        for runner in reversed(self._runners()):
            if runner.running:
                await runner.drain()

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        app_answered = False

        async def receive_with_runner() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await self._drain()
            return message

        async def send_with_runner(message: Message) -> None:
            nonlocal app_answered
            app_answered = True
            if message["type"] == "lifespan.startup.complete":
                await self._start()
            refused = sys.exception()  # the wrapped app reports our failure while handling it
            if message["type"] == "lifespan.startup.failed" and isinstance(
                refused, UnrunnableTasks
            ):
                message = {**message, "message": str(refused)}  # its lines, not a traceback
            await send(message)

        try:
            await self.app(scope, receive_with_runner, send_with_runner)
        except Exception:
            if app_answered:
                raise
            # The wrapped app does not speak the lifespan protocol: speak it for it.
            logger.debug("backbeat: the wrapped app has no lifespan; the middleware runs one")
            await self._own_lifespan(receive, send)
        finally:
            await self._drain()

    async def _own_lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self._start()
                except UnrunnableTasks as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    raise
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._drain()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _refuse(scope: Scope, send: Send, exc: Exception) -> None:
    """Answer 503 (store unavailable) or 500 (a task that cannot be stored) instead."""
    where = f"{scope.get('method')} {scope.get('path')}"
    headers = [(b"content-type", b"application/json")]
    # A duplicate id is the task's fault, not the store's state: trying again would not help.
    if isinstance(exc, StoreError) and not isinstance(exc, DuplicateTask):
        logger.error("backbeat: the tasks of %s were not stored, answering 503: %s", where, exc)
        status = 503
        detail = "Service Unavailable: the task store cannot take tasks now; try again later"
        headers.append((b"retry-after", b"1"))
    else:
        logger.error(
            "backbeat: the tasks of %s cannot be stored, answering 500", where, exc_info=exc
        )
        status = 500
        detail = "Internal Server Error"
    body = json.dumps({"detail": detail}).encode()
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
