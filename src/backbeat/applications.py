"""`App`: a Starlette application for Esmerald-style handlers.

Everything Starlette's application does (middleware, exception handlers,
lifespan, mounting) works unchanged; routes made with `backbeat.post` & co.
add parameter binding and backbeat's background-task rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute
from starlette.types import Lifespan


class App(Starlette):
    def __init__(
        self,
        routes: Sequence[BaseRoute] | None = None,
        *,
        debug: bool = False,
        middleware: Sequence[Middleware] | None = None,
        exception_handlers: Mapping[Any, Any] | None = None,
        lifespan: Lifespan[Any] | None = None,
    ) -> None:
        for index, item in enumerate(routes or ()):
            if not isinstance(item, BaseRoute):
                raise TypeError(
                    f"App(routes=...) expects routes (handlers decorated with @get/@post/...), "
                    f"got {item!r} at index {index}"
                )
        super().__init__(
            debug=debug,
            routes=routes,
            middleware=middleware,
            exception_handlers=exception_handlers,
            lifespan=lifespan,
        )
