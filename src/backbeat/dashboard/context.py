"""What the dashboard's handlers share: the source, its snapshot loop, the hooks; and the
`View` of a request (where it is mounted, what it may do, the flash to show)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from starlette.requests import Request
from starlette.responses import Response

from backbeat.dashboard.access import Authorize, Grant
from backbeat.dashboard.pages import View
from backbeat.dashboard.redact import Redact
from backbeat.dashboard.snapshot import Hub
from backbeat.dashboard.source import Source

logger = logging.getLogger("backbeat")

Audit = Callable[[dict[str, Any]], Any | Awaitable[Any]]
FLASH_COOKIE = "backbeat_flash"
GRANT_KEY = "backbeat.dashboard.grant"


def log_action(event: dict[str, Any]) -> None:
    """The default audit: one line on the ``backbeat`` logger per action."""
    logger.info(
        "dashboard: %s %s on %s task(s) by %s (%s) %s",
        event["action"],
        "done",
        event["count"],
        event["client"],
        event["grant"],
        event.get("filter") or event.get("ids") or event.get("target") or "",
    )


@dataclass(slots=True)
class Context:
    source: Source
    hub: Hub
    authorize: Authorize | None
    audit: Audit
    redact: Redact
    title: str


def grant_of(request: Request) -> Grant:
    grant: Grant = request.scope[GRANT_KEY]
    return grant


def root_of(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def view_of(request: Request, context: Context) -> View:
    flash = request.cookies.get(FLASH_COOKIE)
    return View(
        root=root_of(request),
        title=context.title,
        grant=grant_of(request),
        local=context.source.local,
        flash=unquote(flash) if flash else None,
        source=context.source.label,
    )


def with_flash_cleared(request: Request, response: Response) -> Response:
    """A page that showed the flash clears it (the next page does not show it again)."""
    if FLASH_COOKIE in request.cookies:
        response.delete_cookie(FLASH_COOKIE, path=root_of(request) or "/")
    return response


def set_flash(request: Request, response: Response, text: str) -> None:
    response.set_cookie(
        FLASH_COOKIE,
        quote(text),
        max_age=60,
        path=root_of(request) or "/",
        httponly=True,
        samesite="strict",
    )
