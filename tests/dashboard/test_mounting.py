"""Mounted under a sub-path in backbeat's App, FastAPI and Litestar: every link, form,
redirect and asset carries the prefix."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi import FastAPI
from litestar import Litestar, asgi
from litestar.types import Receive, Scope, Send
from starlette.routing import Mount

from backbeat import App, Runner
from backbeat.dashboard import Dashboard, dashboard
from tests.dashboard.conftest import LOOPBACK, make

pytestmark = pytest.mark.anyio

PREFIX = "/ops/dash"


def in_backbeat_app(app: Dashboard):
    return App(routes=[Mount(PREFIX, app=app)])


def in_fastapi(app: Dashboard):
    outer = FastAPI()
    outer.mount(PREFIX, app)
    return outer


def in_litestar(app: Dashboard):
    @asgi(PREFIX, is_mount=True, copy_scope=True)
    async def mounted(scope: Scope, receive: Receive, send: Send) -> None:
        await app(scope, receive, send)

    return Litestar(route_handlers=[mounted])


@pytest.mark.parametrize("mount", [in_backbeat_app, in_fastapi, in_litestar])
async def test_links_forms_redirects_and_assets_carry_the_prefix(store, mount):
    failed = await make(store, "failed")
    outer = mount(dashboard(store))
    transport = httpx.ASGITransport(app=outer, client=LOOPBACK)
    async with httpx.AsyncClient(transport=transport, base_url="http://dash.test") as http:
        for path in ("/", "/tasks", f"/tasks/{failed}", "/failures", "/workers", "/schedules"):
            page = await http.get(PREFIX + path)
            assert page.status_code == 200, path
            links = re.findall(r'(?:href|action|src|data-events)="([^"]+)"', page.text)
            assert links, path
            outside = [link for link in links if not link.startswith(PREFIX + "/")]
            assert outside == [], (path, outside)
        asset = await http.get(PREFIX + "/static/dashboard.js")
        assert asset.status_code == 200 and "EventSource" in asset.text
        done = await http.post(
            PREFIX + "/actions/retry",
            data={"id": failed, "confirm": "yes", "back": f"{PREFIX}/tasks/{failed}"},
        )
        assert done.status_code == 303 and done.headers["location"] == f"{PREFIX}/tasks/{failed}"
        assert "path=/ops/dash" in done.headers["set-cookie"].lower()
        api = await http.get(PREFIX + "/api/overview")
        assert api.json()["counts"]["pending"] == 1


async def test_a_stored_runners_dashboard_reads_its_store(tmp_path):
    runner = Runner(store=f"sqlite:///{tmp_path}/tasks.db", execute=False)
    await make(runner.store, "failed")
    outer = in_backbeat_app(dashboard(runner))
    transport = httpx.ASGITransport(app=outer, client=LOOPBACK)
    async with httpx.AsyncClient(transport=transport, base_url="http://dash.test") as http:
        page = await http.get(PREFIX + "/failures")
    assert "ValueError" in page.text and "Retry group" in page.text
    await runner.store.close()


async def test_two_dashboards_in_one_process_keep_to_their_own_store(tmp_path):
    first, second = f"sqlite:///{tmp_path}/a.db", f"sqlite:///{tmp_path}/b.db"
    runner = Runner(store=first, execute=False)
    await make(runner.store, "failed")
    apps = (dashboard(first), dashboard(second))
    from backbeat.stores import open_store

    other = open_store(second)
    await make(other, "pending")
    counts = []
    for app in apps:
        transport = httpx.ASGITransport(app=app, client=LOOPBACK)
        async with httpx.AsyncClient(transport=transport, base_url="http://d") as http:
            counts.append((await http.get("/api/overview")).json()["counts"])
        await app.close()
    assert (counts[0]["failed"], counts[0]["pending"]) == (1, 0)
    assert (counts[1]["failed"], counts[1]["pending"]) == (0, 1)
    await other.close()
    await runner.store.close()
