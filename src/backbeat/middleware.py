"""`BackbeatMiddleware`: the supervised runner for any ASGI app.

    app = BackbeatMiddleware(FastAPI(...), runner=Runner(concurrency=50))

The runner starts when the wrapped app's lifespan starts up and drains before
the wrapped app's own shutdown runs. During a request, backbeat tasks that a
response awaits (its ``background=``) are handed to the runner instead of
running inside the request's ASGI call. Other frameworks' own task classes
(`starlette.background.BackgroundTasks`, FastAPI's injected tasks) still run
inline: only backbeat tasks know how to hand themselves over.
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backbeat.routing import declare_task_modules
from backbeat.runner import Runner
from backbeat.tasks import current_runner

logger = logging.getLogger("backbeat")


class BackbeatMiddleware:
    def __init__(self, app: ASGIApp, runner: Runner | None = None) -> None:
        self.app = app
        self.runner = runner if runner is not None else Runner()
        declare_task_modules(self.runner, app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            token = current_runner.set(self.runner)
            try:
                await self.app(scope, receive, send)
            finally:
                current_runner.reset(token)
        elif scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        runner = self.runner
        app_answered = False

        async def receive_with_runner() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown" and runner.running:
                await runner.drain()
            return message

        async def send_with_runner(message: Message) -> None:
            nonlocal app_answered
            app_answered = True
            if message["type"] == "lifespan.startup.complete":
                declare_task_modules(runner, self.app)  # routes may have been added since
                await runner.start()
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
            if runner.running:
                await runner.drain()

    async def _own_lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                declare_task_modules(self.runner, self.app)
                await self.runner.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.runner.drain()
                await send({"type": "lifespan.shutdown.complete"})
                return
