"""Access: loopback only by default, `authorize` for the rest (full, read, per action, none),
and a same-origin check on every POST."""

from __future__ import annotations

import html

import pytest

from backbeat.dashboard import dashboard
from backbeat.dashboard.access import ACTIONS
from tests.dashboard.conftest import client, make

pytestmark = pytest.mark.anyio

REMOTE = ("203.0.113.7", 40000)


async def test_without_an_authorizer_only_loopback_clients_are_served(store):
    app = dashboard(store)
    for peer in (("127.0.0.1", 1), ("::1", 1)):
        async with client(app, peer) as http:
            assert (await http.get("/")).status_code == 200
    app = dashboard(store)
    async with client(app, REMOTE) as http:
        for path in ("/", "/tasks", "/api/overview", "/events", "/static/dashboard.js"):
            refused = await http.get(path)
            assert refused.status_code == 403, path
        page = await http.get("/")
        assert "authorize=" in page.text and "docs/dashboard.md" in page.text
        api = await http.get("/api/tasks")
        assert "authorize=" in api.json()["error"]
        assert (await http.post("/actions/retry", data={"id": "x"})).status_code == 403
    assert app.source.reads == 0  # refused before anything is read


async def test_an_authorizer_opens_it_sync_or_async(store):
    async def by_header(request):
        return "full" if request.headers.get("x-user") == "ops" else None

    for authorize in (by_header, lambda request: "full" if request.headers.get("x-user") else None):
        app = dashboard(store, authorize=authorize)
        async with client(app, REMOTE) as http:
            assert (await http.get("/", headers={"x-user": "ops"})).status_code == 200
            refused = await http.get("/")
            assert refused.status_code == 403 and "not allowed" in refused.text


async def test_a_read_only_viewer_sees_no_buttons_and_cannot_act(store):
    failed = await make(store, "failed")
    events = []
    app = dashboard(store, authorize=lambda request: "read", audit=events.append)
    async with client(app, REMOTE) as http:
        for path in ("/", "/tasks", f"/tasks/{failed}", "/failures", "/workers", "/schedules"):
            page = (await http.get(path)).text
            assert "<form" not in page.replace('<form class="filters" method="get"', ""), path
            assert 'method="post"' not in page, path
        assert "Read-only" in (await http.get("/")).text
        for action in ("retry", "delete"):
            refused = await http.post(f"/actions/{action}", data={"id": failed, "confirm": "yes"})
            assert refused.status_code == 403
        api = await http.post("/api/actions/retry", json={"ids": [failed]})
        assert api.status_code == 403
    task = await store.get(failed)
    assert task is not None and task.state == "failed" and events == []


async def test_a_set_of_actions_allows_those_only(store):
    failed = await make(store, "failed")
    app = dashboard(store, authorize=lambda request: {"retry"})
    async with client(app, REMOTE) as http:
        page = (await http.get(f"/tasks/{failed}")).text
        assert '"/actions/retry"' in page and '"/actions/delete"' not in page
        refused = await http.post("/actions/delete", data={"id": failed, "confirm": "yes"})
        assert refused.status_code == 403 and "may not delete" in html.unescape(refused.text)
        done = await http.post("/actions/retry", data={"id": failed, "confirm": "yes"})
        assert done.status_code == 303
    task = await store.get(failed)
    assert task is not None and task.state == "pending"


async def test_an_authorizer_answering_nonsense_is_a_clear_error(store):
    app = dashboard(store, authorize=lambda request: {"launch_missiles"})
    async with client(app, REMOTE) as http:
        with pytest.raises(ValueError, match="unknown action"):
            await http.get("/")
    with pytest.raises(TypeError, match="authorize"):
        dashboard(store, authorize="full")
    with pytest.raises(ValueError, match="refresh"):
        dashboard(store, refresh=0)
    with pytest.raises(TypeError, match="Runner, a Store or a store URL"):
        dashboard(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="store URL"):
        dashboard("tasks.db")


@pytest.mark.parametrize(
    ("headers", "allowed"),
    [
        ({"origin": "https://evil.example"}, False),
        ({"sec-fetch-site": "cross-site"}, False),
        ({"sec-fetch-site": "same-site"}, False),
        ({"origin": "null"}, False),
        ({"origin": "http://dash.test"}, True),
        ({"sec-fetch-site": "same-origin", "origin": "http://dash.test"}, True),
        ({"sec-fetch-site": "none"}, True),
        ({}, True),  # no browser (curl, a script): authorize alone decides
    ],
)
async def test_a_post_must_come_from_the_same_origin(store, headers, allowed):
    failed = await make(store, "failed")
    app = dashboard(store)
    async with client(app) as http:
        form = await http.post(
            "/actions/retry", data={"id": failed, "confirm": "yes"}, headers=headers
        )
        api = await http.post("/api/actions/retry", json={"ids": [failed]}, headers=headers)
    if allowed:
        assert form.status_code == 303
        assert api.status_code == 200
    else:
        assert form.status_code == 403 and "cross-site" in form.text
        assert api.status_code == 403
        task = await store.get(failed)
        assert task is not None and task.state == "failed"


def test_every_action_is_named_in_the_access_list():
    from backbeat.dashboard.actions import LABELS

    assert set(LABELS) == ACTIONS
