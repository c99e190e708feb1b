"""The JSON API shows what the pages show, acts as the forms do (JSON only), and /metrics."""

from __future__ import annotations

import sys

import pytest

from backbeat.dashboard import dashboard
from tests.dashboard.conftest import client, make, one_of_each

pytestmark = pytest.mark.anyio


async def test_the_reads(store):
    ids = await one_of_each(store)
    report = await make(store, "failed", name="reports.build", error="KeyError: 'x'")
    await store.declare_schedules([("nightly", "every 60s")])
    async with client(dashboard(store)) as http:
        overview = (await http.get("/api/overview")).json()
        assert overview["counts"]["failed"] == 2 and overview["counts"]["total"] == 7
        assert overview["running"][0]["id"] == ids["running"]
        assert set(overview["charts"]) == {"throughput", "failures"}

        listing = (await http.get("/api/tasks?state=failed&limit=1")).json()
        assert len(listing["tasks"]) == 1 and listing["cursor"] is not None
        rest = (await http.get(f"/api/tasks?state=failed&before={listing['cursor']}")).json()
        both = [listing["tasks"][0]["id"], *(task["id"] for task in rest["tasks"])]
        assert sorted(both) == sorted([ids["failed"], report])

        task = (await http.get(f"/api/tasks/{ids['failed']}")).json()
        assert task["state"] == "failed" and task["error"] == "ValueError: boom"
        assert task["traceback"].startswith("Traceback") and task["arguments"]["args"] == ["hi"]
        assert (await http.get("/api/tasks/01NOPE")).status_code == 404

        groups = (await http.get("/api/failures")).json()["groups"]
        assert {(g["name"], g["exception"], g["count"]) for g in groups} == {
            ("emails.send", "ValueError", 1),
            ("reports.build", "KeyError", 1),
        }
        workers = (await http.get("/api/workers")).json()
        assert workers["queues"]["default"]["running"] == 1 and workers["paused_queues"] == []
        schedules = (await http.get("/api/schedules")).json()
        assert [s["name"] for s in schedules["schedules"]] == ["nightly"]
        assert schedules["limits"] == []


async def test_actions_take_json_and_say_how_many(store):
    failed = [await make(store, "failed", name="a") for _ in range(3)]
    events = []
    async with client(dashboard(store, audit=events.append)) as http:
        one = await http.post("/api/actions/retry", json={"ids": failed[:1]})
        assert one.json() == {"action": "retry", "count": 1, "message": "1 task(s) retried"}
        by_filter = await http.post(
            "/api/actions/delete", json={"filter": {"name": "a", "state": "failed"}}
        )
        assert by_filter.json()["count"] == 2
        purge = await http.post("/api/actions/purge", json={"older_than": 0})
        assert purge.status_code == 200
        form = await http.post("/api/actions/retry", data={"id": failed[0]})
        assert form.status_code == 415
        bad = await http.post("/api/actions/retry", json={"ids": "all"})
        assert bad.status_code == 400 and "list of task id" in bad.json()["error"]
        unknown = await http.post("/api/actions/boom", json={})
        assert unknown.status_code == 400
    assert [event["action"] for event in events] == ["retry", "delete", "purge"]
    assert events[1]["filter"] == {"name": "a", "state": "failed"}


async def test_metrics_with_prometheus_client_and_without(store, monkeypatch):
    await one_of_each(store)
    async with client(dashboard(store)) as http:
        text = (await http.get("/metrics")).text
        assert 'backbeat_store_tasks{state="failed"} 1.0' in text
        assert 'backbeat_store_queue_tasks{queue="default",state="running"} 1.0' in text
        monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
        missing = await http.get("/metrics")
    assert missing.status_code == 404 and "pip install 'backbeat[prometheus]'" in missing.text
