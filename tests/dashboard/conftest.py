"""Dashboards over real stores (memory, SQLite, Redis: the `store` fixture of
tests/conftest.py), clients, and tasks in any state."""

from __future__ import annotations

import httpx

from backbeat.dashboard import Dashboard
from tests.stores.rows import make

LOOPBACK = ("127.0.0.1", 50123)


def client(app: Dashboard, peer: tuple[str, int] = LOOPBACK, **options) -> httpx.AsyncClient:
    """A client of the app as if from `peer` (loopback unless said)."""
    transport = httpx.ASGITransport(app=app, client=peer)
    return httpx.AsyncClient(transport=transport, base_url="http://dash.test", **options)


async def one_of_each(store) -> dict[str, str]:
    return {
        state: await make(store, state)
        for state in ("pending", "scheduled", "running", "succeeded", "failed", "cancelled")
    }
