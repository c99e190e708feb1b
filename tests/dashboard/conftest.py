"""Dashboards over real stores (memory, SQLite, Redis), clients, and tasks in any state."""

from __future__ import annotations

import time

import httpx
import pytest

from backbeat.dashboard import Dashboard, dashboard
from backbeat.ids import new_id
from backbeat.stores import NewTask, open_store
from tests.conftest import STORES, store_url
from tests.redis_server import forget
from tests.stores.rows import failed, succeeded

LOOPBACK = ("127.0.0.1", 50123)


@pytest.fixture(params=STORES)
async def store(request, tmp_path):
    """An opened store of each kind (the contract tests' fixture, for the dashboard)."""
    url = store_url(request.param, request, tmp_path)
    opened = open_store(url)
    await opened.open()
    yield opened
    await opened.close()
    if request.param == "redis":
        forget(url)


def client(app: Dashboard, peer: tuple[str, int] = LOOPBACK, **options) -> httpx.AsyncClient:
    """A client of the app as if from `peer` (loopback unless said)."""
    transport = httpx.ASGITransport(app=app, client=peer)
    return httpx.AsyncClient(transport=transport, base_url="http://dash.test", **options)


def new_task(
    name: str = "emails.send", due_in: float = 0.0, payload: str | None = None, **fields
) -> NewTask:
    now = time.time()
    document = payload or '{"args": ["hi"], "kwargs": {}}'
    return NewTask(
        id=new_id(), name=name, payload=document, created_at=now, due_at=now + due_in, **fields
    )


async def make(store, state: str, *, error: str = "ValueError: boom", **fields) -> str:
    """One task brought to `state` (as `TaskInfo` shows it); returns its id. Running and
    finished ones are written ahead and started by id: no other task is claimed instead."""
    if state == "pending":
        task = new_task(**fields)
    elif state == "scheduled":
        task = new_task(due_in=600, **fields)
    else:
        task = new_task(held_until=time.time() + 60, **fields)
    await store.enqueue([task])
    if state in ("running", "succeeded", "failed"):
        [claim] = await store.start("w", [task.id], 30, 1)
        if state == "succeeded":
            assert await store.finish([succeeded(claim, '"ok"')]) == [True]
        elif state == "failed":
            assert await store.finish([failed(claim, error, "Traceback (most recent)...")])
    elif state == "cancelled":
        assert await store.cancel([task.id], "cancelled by a test") == 1
    return task.id


async def one_of_each(store) -> dict[str, str]:
    return {
        state: await make(store, state)
        for state in ("pending", "scheduled", "running", "succeeded", "failed", "cancelled")
    }


def app_of(source, **options) -> Dashboard:
    return dashboard(source, **options)
