"""Responses: Starlette's, except that a status left unset takes the route's default.

`JSONResponse` encodes with pydantic's serializer, so datetimes, UUIDs, Decimals,
enums and pydantic models in the content just work.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic_core import to_json
from starlette.background import BackgroundTask as StarletteBackgroundTask
from starlette.requests import Request
from starlette.responses import Response as StarletteResponse

__all__ = ["JSONResponse", "Request", "Response"]


class Response(StarletteResponse):
    """A Starlette `Response` whose `status_code` may be left to the route (`@post` → 201)."""

    def __init__(
        self,
        content: Any = None,
        status_code: int | None = None,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
        background: StarletteBackgroundTask | None = None,
    ) -> None:
        self.status_explicit = status_code is not None
        super().__init__(
            content, 200 if status_code is None else status_code, headers, media_type, background
        )


class JSONResponse(Response):
    media_type = "application/json"

    def __init__(
        self,
        content: Any,
        status_code: int | None = None,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
        background: StarletteBackgroundTask | None = None,
    ) -> None:
        super().__init__(content, status_code, headers, media_type, background)

    def render(self, content: Any) -> bytes:
        # Like JSON.stringify: NaN and infinities become null, so the body is always valid JSON.
        return to_json(content, inf_nan_mode="null")
