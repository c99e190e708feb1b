"""Who may see the dashboard and what they may do, and whether a POST comes from it.

``authorize(request)`` (sync or async) answers ``"full"``, ``"read"`` (no actions), a set
of action names (those only), or None/False (403). Without one, only loopback clients
(127.0.0.1, ::1) are served: a dashboard that can retry and delete tasks is not opened to
a network by mounting it; the 403 says how to open it.

Every POST must come from the dashboard's own pages: a browser says where a request comes
from (``Origin``, ``Sec-Fetch-Site``), and a cross-site one is refused, so another site
cannot make a signed-in operator's browser act. A request with neither header is not a
browser's (curl, a script) and is judged by `authorize` alone.
"""

from __future__ import annotations

import inspect
import ipaddress
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

ACTIONS = frozenset(
    {
        "retry",
        "run_now",
        "cancel",
        "delete",
        "purge",
        "pause_queue",
        "resume_queue",
        "pause_schedule",
        "resume_schedule",
    }
)

Authorize = Callable[[Request], Any | Awaitable[Any]]

LOOPBACK_ONLY = (
    "This dashboard serves only this machine (loopback clients) unless it is given an "
    "authorizer: dashboard(source, authorize=lambda request: 'full' or 'read' or a set of "
    "action names, after checking who asks). See docs/dashboard.md."
)


@dataclass(frozen=True, slots=True)
class Grant:
    """What one request may do: read, and these actions."""

    actions: frozenset[str]
    said: str  # what `authorize` answered, for the audit

    def can(self, action: str) -> bool:
        return action in self.actions

    @property
    def acts(self) -> bool:
        return bool(self.actions)


class Forbidden(Exception):
    """403, with what to say."""


async def grant_for(authorize: Authorize | None, request: Request) -> Grant:
    """The request's grant; `Forbidden` when it may not even look."""
    if authorize is None:
        host = request.client.host if request.client else ""
        if not _loopback(host):
            raise Forbidden(LOOPBACK_ONLY)
        return Grant(ACTIONS, "loopback")
    answer = authorize(request)
    if inspect.isawaitable(answer):
        answer = await answer
    return grant_of(answer)


def grant_of(answer: object) -> Grant:
    if answer is None or answer is False:
        raise Forbidden("not allowed to see this dashboard")
    if answer == "full" or answer is True:
        return Grant(ACTIONS, "full")
    if answer == "read":
        return Grant(frozenset(), "read")
    if isinstance(answer, Iterable) and not isinstance(answer, str | bytes):
        names = frozenset(str(name) for name in answer)
        unknown = names - ACTIONS
        if unknown:
            raise ValueError(
                f"authorize returned unknown action(s) {sorted(unknown)}; known: {sorted(ACTIONS)}"
            )
        return Grant(names, ",".join(sorted(names)) or "read")
    raise ValueError(
        f"authorize must return 'full', 'read', a set of action names, or None/False; "
        f"got {answer!r}"
    )


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def same_origin(request: Request) -> bool:
    """Whether a POST comes from this site (or from no browser at all)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None:
        return True
    own = f"{request.url.scheme}://{request.url.netloc}"
    return origin == own
