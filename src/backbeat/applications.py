"""`App`: a Starlette application for Esmerald-style handlers, with a supervised runner.

Everything Starlette's application does (middleware, exception handlers,
lifespan, mounting) works unchanged; routes made with `backbeat.post` & co.
add parameter binding and backbeat's background-task rules. By default the
app owns a `Runner` (``app.runner``): tasks leave the request after the last
body byte and run under it; the lifespan starts it and drains it.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute
from starlette.types import Lifespan, Message, Receive, Scope, Send

from backbeat.checks import UnrunnableTasks, check_app, declare_route_tasks
from backbeat.params import DEFAULT_MAX_BODY_SIZE
from backbeat.routing import declare_task_modules
from backbeat.runner import Runner
from backbeat.tasks import current_runner


class App(Starlette):
    def __init__(
        self,
        routes: Sequence[BaseRoute] | None = None,
        *,
        runner: Runner | Literal[False] | None = None,
        debug: bool = False,
        middleware: Sequence[Middleware] | None = None,
        exception_handlers: Mapping[Any, Any] | None = None,
        lifespan: Lifespan[Any] | None = None,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    ) -> None:
        """``runner=None`` makes a default `Runner()`; ``runner=False`` runs tasks inline.

        ``max_body_size``: the largest JSON body a handler accepts, in bytes (413 beyond).
        """
        if (
            not isinstance(max_body_size, int)
            or isinstance(max_body_size, bool)
            or max_body_size < 1
        ):
            raise ValueError(f"App(max_body_size=...) must be an int >= 1, got {max_body_size!r}")
        # Not Starlette's own `max_body_size` (absent before Starlette 1.x): handlers read it.
        self.json_body_limit = max_body_size
        for index, item in enumerate(routes or ()):
            if not isinstance(item, BaseRoute):
                raise TypeError(
                    f"App(routes=...) expects routes (handlers decorated with @get/@post/...), "
                    f"got {item!r} at index {index}"
                )
        if runner is not None and runner is not False and not isinstance(runner, Runner):
            raise TypeError(f"App(runner=...) expects a Runner, None or False, got {runner!r}")
        self.runner: Runner | None = Runner() if runner is None else (runner or None)
        if self.runner is not None:
            lifespan = with_runner(self.runner, lifespan)
            if self.runner.durable:
                # Known from import on (a worker, a runner never started, may need them);
                # what cannot be registered stops the start-up (`check_app`).
                declare_task_modules(self.runner, routes or [])
                declare_route_tasks(self.runner, routes or [])
        super().__init__(
            debug=debug,
            routes=routes,
            middleware=middleware,
            exception_handlers=exception_handlers,
            lifespan=lifespan,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await super().__call__(scope, receive, plain_startup_failure(send))
            return
        if self.runner is None or scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        token = current_runner.set(self.runner)
        try:
            await super().__call__(scope, receive, send)
        finally:
            current_runner.reset(token)


def with_runner(runner: Runner, lifespan: Lifespan[Any] | None) -> Lifespan[Any]:
    """The app's lifespan with the runner inside it.

    The runner starts after the app's own start-up (so tasks can use what it
    opens) and drains before the app's own shutdown (so tasks still have it).
    """

    @asynccontextmanager
    async def lifespan_with_runner(app: Any) -> AsyncIterator[Any]:
        # Routes may have been added since the app was made; a route's task that a store
        # could not run fails here, before anything starts, rather than every request.
        check_app(runner, app)
        if lifespan is None:
            async with runner:
                yield None
            return
        async with lifespan(app) as state, runner:
            yield state

    return lifespan_with_runner


def plain_startup_failure(send: Send) -> Send:
    """`send` for the lifespan, with `UnrunnableTasks` reported as its lines, not as the
    traceback Starlette sends (the server prints the message: the list is what helps)."""

    async def send_plainly(message: Message) -> None:
        refused = sys.exception()  # Starlette sends the failure while handling it
        if message["type"] == "lifespan.startup.failed" and isinstance(refused, UnrunnableTasks):
            message = {**message, "message": str(refused)}
        await send(message)

    return send_plainly


def find_runner(app: Any) -> Runner | None:
    """The runner of an `App` or of a `BackbeatMiddleware` (also nested in middleware), or
    the one an integration noted in ``app.state.backbeat_runner`` (`backbeat.fastapi.install`)."""
    seen = 0
    while app is not None and seen < 64:
        runner = getattr(app, "runner", None)
        if isinstance(runner, Runner):
            return runner
        runner = getattr(getattr(app, "state", None), "backbeat_runner", None)
        if isinstance(runner, Runner):
            return runner
        app = getattr(app, "app", None)
        seen += 1
    return None
