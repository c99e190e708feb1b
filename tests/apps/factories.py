"""Handlers made inside functions, with types imported there (string annotations)."""

from __future__ import annotations

from typing import Any


def make_handler() -> Any:
    from backbeat import JSONResponse, get

    @get("/made")
    async def made() -> JSONResponse:
        return JSONResponse({"made": True})

    return made


def make_broken_handler() -> Any:
    from pydantic import BaseModel

    from backbeat import post

    class LocalModel(BaseModel):
        x: int

    @post("/broken")
    async def broken(data: LocalModel) -> None: ...

    return broken
