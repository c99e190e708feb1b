"""The task list's filters (a GET form: the URL is the bookmark) and its keyset pages."""

from __future__ import annotations

import html
import re
import time

import pytest

from backbeat.dashboard import dashboard, page_tasks
from backbeat.dashboard.filters import BadInput, filter_query, parse_filter
from tests.dashboard.conftest import client, make

pytestmark = pytest.mark.anyio


def listed(text: str) -> list[str]:
    return re.findall(r'<a href="/tasks/([0-9A-Z]+)"><code>', text)


async def test_each_filter_narrows_the_list(store):
    report = await make(store, "failed", name="reports.build", error="KeyError: 'month'")
    mail = await make(
        store, "pending", name="emails.send", queue="mail", payload='{"args": ["ann@example.com"]}'
    )
    other = await make(store, "succeeded", name="emails.send")
    app = dashboard(store)
    async with client(app) as http:
        cases = {
            "?name=reports.build": [report],
            "?state=failed": [report],
            "?state=succeeded": [other],
            "?queue=mail": [mail],
            "?argument=ann@example": [mail],
            "?error=month": [report],
            f"?id={mail[:20]}": [mail],
            "?name=emails.send": [other, mail],
            "?name=emails.send&state=pending": [mail],
        }
        for query, expected in cases.items():
            response = await http.get("/tasks" + query)
            assert response.status_code == 200
            # Ids of one millisecond are in no particular order: compare as sets.
            assert sorted(listed(response.text)) == sorted(expected), query
        future = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 3600))
        assert listed((await http.get(f"/tasks?created_from={future}")).text) == []
        assert len(listed((await http.get(f"/tasks?created_to={future}")).text)) == 3
        # The form shows the filter it was given: bookmark, reload, share.
        page = (await http.get("/tasks?name=emails.send&state=pending")).text
        assert 'name="name" value="emails.send"' in page
        assert '<option value="pending" selected>' in page


async def test_bad_filters_are_400_naming_the_field(store):
    async with client(dashboard(store)) as http:
        state = await http.get("/tasks?state=lost")
        assert state.status_code == 400 and "state must be one of" in state.text
        when = await http.get("/tasks?created_from=yesterday")
        assert when.status_code == 400 and "created_from" in when.text
        api = await http.get("/api/tasks?limit=100000")
        assert api.status_code == 400 and "limit must be between" in api.json()["error"]


def test_a_filter_round_trips_through_its_query():
    params = {"name": "a.b", "state": "failed", "created_from": "2026-12-03T01:30:00"}
    where = parse_filter(params)
    assert where.created_after == 1796261400.0
    assert parse_filter(filter_query(where)) == where
    assert parse_filter({"created_to": "2026-12-03T01:30:00+01:00"}).created_before == 1796257800
    with pytest.raises(BadInput):
        parse_filter({"created_to": "12/03/2026"})


async def test_pages_go_on_with_the_cursor_newest_first(store, monkeypatch):
    monkeypatch.setattr(page_tasks, "PAGE_SIZE", 4)
    import backbeat.dashboard.handlers as handlers

    monkeypatch.setattr(handlers, "PAGE_SIZE", 4)
    ids = [await make(store, "pending", name="n") for _ in range(10)]
    seen: list[str] = []
    async with client(dashboard(store)) as http:
        url = "/tasks?name=n"
        for _ in range(5):
            page = (await http.get(url)).text
            seen += listed(page)
            older = re.search(r'<a href="([^"]+)" rel="next">Older', page)
            if older is None:
                break
            url = html.unescape(older.group(1))
            assert "name=n" in url and "before=" in url  # the filter stays on
    assert seen == sorted(ids, reverse=True)


async def test_a_search_that_ran_out_of_its_scan_offers_to_search_further(store, monkeypatch):
    import backbeat.dashboard.handlers as handlers

    monkeypatch.setattr(handlers, "SEARCH_SCAN", 5)
    rare = await make(store, "pending", name="rare")
    for _ in range(12):
        await make(store, "pending", name="common")
    found: list[str] = []
    async with client(dashboard(store)) as http:
        url = "/tasks?name=rare"
        for _ in range(10):
            page = html.unescape((await http.get(url)).text)
            found += listed(page)
            further = re.search(r"Searched (\d+) tasks. <a href=\"([^\"]+)\">Search further", page)
            if further is None:
                break
            assert int(further.group(1)) <= 5
            url = further.group(2)
    assert found == [rare]
