"""Every page renders on every source (a memory runner, memory://, SQLite, Redis), within its
query budget, and escapes whatever a task wrote."""

from __future__ import annotations

import re
import time

import pytest

from backbeat import BackgroundTask, Runner
from backbeat.dashboard import dashboard
from backbeat.dashboard.snapshot import RUNNING_SHOWN
from backbeat.status import TaskState
from backbeat.stores.base import Settlement
from tests.dashboard.conftest import client, make, one_of_each

pytestmark = pytest.mark.anyio

PAGES = ["/", "/tasks", "/failures", "/workers", "/schedules"]

# Store calls of one snapshot of a store with one queue, no schedules: counts, queues,
# workers, oldest_due, paused_queues, schedules, gate_usage, list_tasks (running).
SNAPSHOT_READS = 8
BUDGETS = {
    "/": SNAPSHOT_READS,
    "/tasks": SNAPSHOT_READS + 1,  # + one search
    "/failures": 1,  # failure_groups
    "/workers": SNAPSHOT_READS,
    "/schedules": SNAPSHOT_READS,
}


async def test_every_page_renders_every_state_on_every_store(store):
    ids = await one_of_each(store)
    app = dashboard(store)
    async with client(app) as http:
        for path in PAGES:
            response = await http.get(path)
            assert response.status_code == 200, (path, response.text)
            assert response.headers["content-type"].startswith("text/html")
        listing = (await http.get("/tasks")).text
        for task_id in ids.values():
            assert task_id in listing
        overview = (await http.get("/")).text
        assert re.search(r'data-count="failed">1<', overview)
        assert re.search(r'data-count="running">1<', overview)
        for state, task_id in ids.items():
            page = await http.get(f"/tasks/{task_id}")
            assert page.status_code == 200
            assert f'class="state-{state}">{state}<' in page.text
        failures = (await http.get("/failures")).text
        assert "ValueError" in failures and "Retry group" in failures


async def test_each_page_reads_the_store_a_bounded_number_of_times(store):
    for _ in range(3):
        await one_of_each(store)
    app = dashboard(store)
    async with client(app) as http:
        for path, budget in BUDGETS.items():
            app.hub.latest = None  # no fresh snapshot to share: the page reads its own
            before = app.source.reads
            assert (await http.get(path)).status_code == 200
            assert app.source.reads - before == budget, (path, app.source.calls)
        task_id = await make(store, "failed")
        before = app.source.reads
        assert (await http.get(f"/tasks/{task_id}")).status_code == 200
        assert app.source.reads - before <= 2  # get, and attempts where the store keeps them


async def test_pages_asked_at_once_share_one_fresh_snapshot(store):
    await one_of_each(store)
    app = dashboard(store, refresh=30)
    async with client(app) as http:
        await http.get("/")
        before = app.source.reads
        for path in ("/", "/workers", "/schedules", "/"):
            assert (await http.get(path)).status_code == 200
        assert app.source.reads == before  # the snapshot is still fresh: no read at all


async def test_what_a_task_wrote_is_escaped_everywhere(store):
    evil = "<script>alert(1)</script>"
    payload = '{"args": ["<script>alert(2)</script>"], "kwargs": {"note": "<img src=x>"}}'
    task_id = await make(store, "failed", name=evil, payload=payload, error=f"E: {evil}")
    await make(store, "running", name=evil, queue="<b>q</b>")
    app = dashboard(store)
    async with client(app) as http:
        for path in [*PAGES, f"/tasks/{task_id}", "/tasks?state=failed"]:
            text = (await http.get(path)).text
            assert "<script>alert" not in text, path
            assert "<img src=x>" not in text and "<b>q</b>" not in text, path
        page = (await http.get(f"/tasks/{task_id}")).text
        assert "&lt;script&gt;alert(2)&lt;/script&gt;" in page
        assert "&lt;img src=x&gt;" in page


async def test_no_inline_script_or_style_and_a_strict_csp(store):
    await one_of_each(store)
    app = dashboard(store)
    async with client(app) as http:
        for path in PAGES:
            response = await http.get(path)
            csp = response.headers["content-security-policy"]
            assert "default-src 'none'" in csp and "script-src 'self'" in csp
            assert "frame-ancestors 'none'" in csp
            assert re.search(r"<script(?![^>]*\bsrc=)", response.text) is None
            assert "style=" not in response.text and "<style" not in response.text
            assert " on" + "click=" not in response.text
        for name in ("dashboard.js", "dashboard.css"):
            asset = await http.get(f"/static/{name}")
            assert asset.status_code == 200 and len(asset.content) > 100
        assert (await http.get("/static/../app.py")).status_code == 404


async def test_secret_arguments_are_redacted_and_the_hook_is_used(store):
    payload = '{"args": [], "kwargs": {"email": "a@b.c", "password": "hunter2", "api_key": "k1"}}'
    task_id = await make(store, "pending", payload=payload)
    async with client(dashboard(store)) as http:
        page = (await http.get(f"/tasks/{task_id}")).text
        document = (await http.get(f"/api/tasks/{task_id}")).json()
    assert "hunter2" not in page and "k1" not in page and "a@b.c" in page
    assert document["arguments"]["kwargs"] == {
        "email": "a@b.c",
        "password": "[redacted]",
        "api_key": "[redacted]",
    }
    async with client(dashboard(store, redact=lambda arguments: "hidden by the app")) as http:
        page = (await http.get(f"/tasks/{task_id}")).text
    assert "hidden by the app" in page and "a@b.c" not in page


async def test_a_memory_runner_shows_its_table_and_offers_cancel_only():
    runner = Runner()
    async with runner:
        done = await runner.asubmit(BackgroundTask(lambda: 42))
        await runner.aresult(done, timeout=5)
        app = dashboard(runner)
        async with client(app) as http:
            for path in PAGES:
                assert (await http.get(path)).status_code == 200, path
            assert done in (await http.get("/tasks")).text
            page = (await http.get(f"/tasks/{done}")).text
            assert "succeeded" in page and "42" in page
            assert "need a store" in page  # says what it cannot do
            assert ">Delete<" not in page and ">Retry<" not in page
            refused = await http.post("/actions/delete", data={"id": done, "confirm": "yes"})
            assert refused.status_code == 400 and "needs a store" in refused.text


async def test_an_unknown_task_is_a_404_page(store):
    async with client(dashboard(store)) as http:
        response = await http.get("/tasks/01NOPE")
    assert response.status_code == 404 and "No task with id 01NOPE" in response.text


async def test_a_task_page_shows_each_attempt_with_its_error_and_traceback(store):
    from tests.stores.rows import failed

    task_id = await make(store, "pending", retries=2)
    [first] = await store.claim("w1", 1, 30)
    await store.finish([failed(first, "OSError: disk full", "Traceback: one", time.time())])
    [second] = await store.claim("w2", 1, 30)
    await store.finish([failed(second, "TimeoutError: slow", "Traceback: two")])
    async with client(dashboard(store)) as http:
        page = (await http.get(f"/tasks/{task_id}")).text
        document = (await http.get(f"/api/tasks/{task_id}")).json()
    assert page.index("OSError: disk full") < page.index("TimeoutError: slow")
    assert "Traceback: one" in page and "Traceback: two" in page
    assert ">retried<" in page and ">failed<" in page and "on w1" in page
    assert [a["outcome"] for a in document["attempts_history"]] == ["retried", "failed"]


async def test_the_workers_page_says_when_it_shows_the_leases_of_some_running_tasks_only(store):
    # The leases come from the snapshot's newest running tasks: with more running, a
    # worker would seem to hold fewer than it does.
    for _ in range(RUNNING_SHOWN):
        await make(store, "running")
    app = dashboard(store)
    async with client(app) as http:
        assert "leases-note" not in (await http.get("/workers")).text
        await make(store, "running")
        app.hub.outdated()  # read the store again, not the snapshot of a moment ago
        page = (await http.get("/workers")).text
    expected = f"the leases of the {RUNNING_SHOWN} newest running tasks only"
    assert f"{expected} ({RUNNING_SHOWN + 1} tasks are running)" in page


async def test_a_running_tasks_page_follows_it_and_a_finished_ones_shows_where_it_ended(store):
    report = '{"fraction": 0.4, "message": "row 40 of 100"}'
    ids = {outcome: await make(store, "running") for outcome in ("running", "done", "broke")}
    for task_id in ids.values():
        assert await store.progress(f"{task_id}:1", report)
    await store.finish(
        [
            Settlement(f"{ids['done']}:1", TaskState.SUCCEEDED, result='"imported"'),
            Settlement(f"{ids['broke']}:1", TaskState.FAILED, error="OSError: disk full"),
        ]
    )
    async with client(dashboard(store)) as http:
        running = (await http.get(f"/tasks/{ids['running']}")).text
        done = (await http.get(f"/tasks/{ids['done']}")).text
        broke = (await http.get(f"/tasks/{ids['broke']}")).text
    follow = f'data-follow="{ids["running"]}"'
    assert follow in running and f'<progress data-progress="{ids["running"]}"' in running
    assert 'value="0.400"' in running
    # Finished: not live (no stream to open), the bar where the task left it; full when the
    # task succeeded, whatever its last report said.
    for page in (done, broke):
        assert "data-follow" not in page and "data-progress" not in page
        assert "row 40 of 100" in page
    assert '<progress max="1" value="1.000">100%</progress>' in done
    assert '<progress max="1" value="0.400">40%</progress>' in broke
