"""Actions from the pages: each where valid, bulk on a selection or a filter after a
confirmation with the count, in bounded batches, redirected back with a flash, audited."""

from __future__ import annotations

import html
import re
import time
from urllib.parse import unquote

import pytest

from backbeat.dashboard import actions, dashboard
from tests.conftest import recording
from tests.dashboard.conftest import client, make

pytestmark = pytest.mark.anyio


async def state_of(store, task_id: str) -> str | None:
    task = await store.get(task_id)
    return None if task is None else task.info(time.time()).state.value


def text(response) -> str:
    return html.unescape(response.text)


def flash_of(response) -> str:
    return unquote(response.cookies.get("backbeat_flash", ""))


@pytest.mark.parametrize(
    ("state", "action", "after"),
    [
        ("failed", "retry", "pending"),
        ("scheduled", "run_now", "pending"),
        ("pending", "cancel", "cancelled"),
        ("running", "cancel", "running"),  # marked: the worker's next renewal stops it
        ("succeeded", "delete", None),
    ],
)
async def test_a_task_pages_action_acts_at_once_and_redirects_back(store, state, action, after):
    task_id = await make(store, state)
    app = dashboard(store)
    async with client(app) as http:
        page = (await http.get(f"/tasks/{task_id}")).text
        assert f'action="/actions/{action}"' in page
        response = await http.post(
            f"/actions/{action}",
            data={"id": task_id, "confirm": "yes", "back": f"/tasks/{task_id}"},
        )
        assert response.status_code == 303
        assert response.headers["location"] == f"/tasks/{task_id}"
        assert flash_of(response).startswith("1 task(s)")
        assert await state_of(store, task_id) == after
        if action == "cancel" and state == "running":
            assert await store.renew([f"{task_id}:1"], 30) == [task_id]
        # The flash is shown once, on the next page.
        shown = await http.get("/tasks")
        assert "1 task(s)" in shown.text
        http.cookies.clear()


async def test_only_the_actions_valid_for_a_state_are_offered(store):
    offered = {
        "pending": {"run_now", "cancel"},
        "scheduled": {"run_now", "cancel"},
        "running": {"cancel"},
        "succeeded": {"delete"},
        "failed": {"retry", "delete"},
        "cancelled": {"delete"},
    }
    app = dashboard(store)
    async with client(app) as http:
        for state, expected in offered.items():
            page = (await http.get(f"/tasks/{await make(store, state)}")).text
            shown = {name for name in actions.TASK_ACTIONS if f'"/actions/{name}"' in page}
            assert shown == expected, state


async def test_an_action_on_a_task_in_another_state_does_nothing(store):
    pending = await make(store, "pending")
    async with client(dashboard(store)) as http:
        response = await http.post("/actions/retry", data={"id": pending, "confirm": "yes"})
    assert flash_of(response) == "0 task(s) retried"
    assert await state_of(store, pending) == "pending"


async def test_bulk_on_a_selection_asks_first_with_the_count(store):
    ids = [await make(store, "failed") for _ in range(3)]
    async with client(dashboard(store)) as http:
        asked = await http.post(
            "/actions", data={"action": "retry", "id": ids[:2], "scope": "ids", "back": "/tasks"}
        )
        assert asked.status_code == 200
        assert "Retry 2 selected task(s)?" in text(asked)
        assert [await state_of(store, i) for i in ids] == ["failed"] * 3  # nothing yet
        # The confirmation is a plain form repeating the selection: no script needed.
        assert asked.text.count('name="id"') == 2 and 'name="confirm" value="yes"' in text(asked)
        done = await http.post(
            "/actions/retry",
            data={"id": ids[:2], "scope": "ids", "back": "/tasks", "confirm": "yes"},
        )
    assert done.status_code == 303 and flash_of(done) == "2 task(s) retried"
    assert [await state_of(store, i) for i in ids] == ["pending", "pending", "failed"]


async def test_bulk_on_a_filter_acts_on_every_match_in_bounded_batches(store, monkeypatch):
    monkeypatch.setattr(actions, "BATCH", 3)
    mine = [await make(store, "failed", name="reports.build") for _ in range(7)]
    others = [await make(store, "failed", name="emails.send") for _ in range(2)]
    pending = await make(store, "pending", name="reports.build")
    app = dashboard(store)
    fields = {"scope": "filter", "name": "reports.build", "back": "/tasks?name=reports.build"}
    async with client(app) as http:
        asked = await http.post("/actions/retry", data=fields)
        assert "Retry 7 task(s) matching name = reports.build?" in text(asked)
        calls = app.source.calls["retry"]
        done = await http.post("/actions/retry", data={**fields, "confirm": "yes"})
    assert done.status_code == 303 and done.headers["location"] == "/tasks?name=reports.build"
    assert flash_of(done) == "7 task(s) retried"
    assert app.source.calls["retry"] - calls == 3  # 7 ids, 3 per store call
    assert {await state_of(store, i) for i in mine} == {"pending"}
    assert {await state_of(store, i) for i in others} == {"failed"}
    assert await state_of(store, pending) == "pending"


def retry_group_form(failures_page: str, exception: str) -> dict[str, str]:
    """The fields the failures page's "Retry group" form of this exception type posts."""
    [row] = [row for row in failures_page.split("<tr>") if f"<code>{exception}</code>" in row]
    found = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', row)
    return {name: html.unescape(value) for name, value in found}


async def test_retry_group_retries_the_groups_exact_exception_type_only(store):
    # The store's error filter matches a piece of the message: "ValueError" is in
    # "MyValueError: ..." too. The group's retry must not take the other group's tasks.
    plain = [await make(store, "failed", name="imports.run", error="ValueError: bad") for _ in "ab"]
    mine = await make(store, "failed", name="imports.run", error="MyValueError: ValueError: bad")
    audited = []
    app = dashboard(store, audit=audited.append)
    async with client(app) as http:
        page = (await http.get("/failures")).text
        fields = retry_group_form(page, "ValueError")
        assert fields["exception"] == "ValueError"
        asked = await http.post("/actions/retry", data=fields)
        assert "Retry 2 task(s) matching" in text(asked)
        done = await http.post("/actions/retry", data={**fields, "confirm": "yes"})
        assert flash_of(done) == "2 task(s) retried"
        assert [await state_of(store, i) for i in plain] == ["pending", "pending"]
        assert await state_of(store, mine) == "failed"
        assert audited[-1]["filter"]["exception"] == "ValueError"
        # And the other way round: MyValueError's group leaves ValueError's retried tasks be.
        await store.cancel(plain, "out of the way")
        page = (await http.get("/failures")).text
        others = retry_group_form(page, "MyValueError")
        done = await http.post("/actions/retry", data={**others, "confirm": "yes"})
        assert flash_of(done) == "1 task(s) retried"
        assert await state_of(store, mine) == "pending"
        # The JSON API takes the exact type too.
        again = await make(store, "failed", name="imports.run", error="MyValueError: again")
        wanted = {"state": "failed", "error": "ValueError", "exception": "ValueError"}
        answer = await http.post("/api/actions/retry", json={"filter": wanted})
        assert answer.json()["count"] == 0 and await state_of(store, again) == "failed"


async def test_purge_older_than_asks_with_the_count_then_purges(store):
    finished = [await make(store, state) for state in ("succeeded", "failed", "cancelled")]
    alive = await make(store, "pending")
    async with client(dashboard(store)) as http:
        page = (await http.get("/tasks")).text
        assert 'action="/actions/purge"' in page
        asked = await http.post("/actions/purge", data={"older_than_hours": "0"})
        assert "Purge 3 finished task(s)" in text(asked)
        assert await state_of(store, finished[0]) == "succeeded"
        done = await http.post(
            "/actions/purge",
            data={"older_than_hours": "0", "states": "failed", "confirm": "yes"},
        )
        assert flash_of(done) == "1 finished task(s) purged"
        bad = await http.post("/actions/purge", data={"older_than_hours": "soon"})
        assert bad.status_code == 400 and "a number" in text(bad)
    assert await state_of(store, finished[1]) is None
    assert await state_of(store, finished[0]) == "succeeded"
    assert await state_of(store, alive) == "pending"


async def test_queues_and_schedules_pause_and_resume(store):
    await make(store, "pending", queue="emails")
    await store.declare_schedules([("nightly", "every 60s")])
    app = dashboard(store)
    async with client(app) as http:
        page = (await http.get("/workers")).text
        assert 'action="/actions/pause_queue"' in page
        done = await http.post("/actions/pause_queue", data={"queue": "emails", "back": "/workers"})
        assert done.status_code == 303 and flash_of(done) == "queue emails paused"
        assert await store.paused_queues() == ["emails"]
        app.hub.latest = None
        assert 'action="/actions/resume_queue"' in (await http.get("/workers")).text
        await http.post("/actions/resume_queue", data={"queue": "emails"})
        assert await store.paused_queues() == []

        assert 'action="/actions/pause_schedule"' in (await http.get("/schedules")).text
        await http.post("/actions/pause_schedule", data={"name": "nightly"})
        assert [record.paused for record in await store.schedules()] == [True]
        unknown = await http.post("/actions/resume_schedule", data={"name": "weekly"})
        assert unknown.status_code == 400 and "no schedule named 'weekly'" in text(unknown)
        missing = await http.post("/actions/pause_queue", data={})
        assert missing.status_code == 400 and "queue" in missing.text


async def test_every_action_is_audited_and_logged_by_default(store):
    failed = await make(store, "failed")
    events = []
    async with client(dashboard(store, audit=events.append)) as http:
        await http.post("/actions/retry", data={"id": failed, "confirm": "yes"})
        await http.post("/actions/pause_queue", data={"queue": "default"})
    assert events == [
        {
            "action": "retry",
            "count": 1,
            "client": "127.0.0.1",
            "grant": "loopback",
            "ids": [failed],
        },
        {
            "action": "pause_queue",
            "count": 1,
            "client": "127.0.0.1",
            "grant": "loopback",
            "queue": "default",
        },
    ]
    with recording("backbeat") as records:
        async with client(dashboard(store)) as http:
            await http.post(
                "/actions/cancel", data={"scope": "filter", "state": "pending", "confirm": "yes"}
            )
    lines = records.messages(0)
    assert any("dashboard: cancel" in line and "state" in line for line in lines), lines


async def test_bad_action_requests_are_refused_clearly(store):
    async with client(dashboard(store)) as http:
        unknown = await http.post("/actions/explode", data={"id": "x"})
        assert unknown.status_code == 400 and "unknown action 'explode'" in text(unknown)
        empty = await http.post("/actions/retry", data={"scope": "ids"})
        assert empty.status_code == 400 and "no task selected" in text(empty)
        as_json = await http.post("/actions/retry", json={"ids": ["x"]})
        assert as_json.status_code == 400 and "x-www-form-urlencoded" in text(as_json)
        bad_filter = await http.post("/actions/retry", data={"scope": "filter", "state": "odd"})
        assert bad_filter.status_code == 400 and "state must be one of" in text(bad_filter)


async def test_the_redirect_goes_back_into_the_dashboard_only(store):
    task_id = await make(store, "failed")
    async with client(dashboard(store)) as http:
        for back in ("https://evil.example/", "//evil.example/x", "/\\evil", "tasks"):
            response = await http.post(
                "/actions/retry", data={"id": task_id, "confirm": "yes", "back": back}
            )
            assert response.headers["location"] == "/tasks", back
