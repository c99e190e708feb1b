"""Rate limits and per-key concurrency: the options, their errors, and what is written.

The stores' side is tests/stores/test_contract_gates.py; real workers, tests/test_flow_limits.py.
"""

import json
import time

import pytest

from backbeat import App, BackgroundTask, BackgroundTasks, Runner, post, task
from backbeat.engine.local import GatesNeedAStore
from backbeat.gates import parse_rate
from backbeat.stores import open_store
from backbeat.tasks import current_runner
from backbeat.testing import TestClient


@task(name="limits.per_tenant", rate_limit="5/s", rate_limit_key=lambda tenant, **_: tenant)
async def per_tenant(tenant: str, n: int = 0) -> None: ...


@task(name="limits.sync_customer", concurrency_key="customer_id", max_concurrency=2)
async def sync_customer(customer_id: int, full: bool = False) -> None: ...


def _raises(*args, **kwargs) -> str:
    raise LookupError("no tenant")


@task(name="limits.bad_key", rate_limit="1/s", rate_limit_key=_raises)
async def bad_key(n: int) -> None: ...


@task(name="limits.not_a_str", concurrency_key=lambda n: n)
async def not_a_str(n: int) -> None: ...


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("20/s", (20, 1.0)),
        ("100/m", (100, 60.0)),
        ("1000/h", (1000, 3600.0)),
        ("20/2s", (20, 2.0)),
        (" 3 / 0.5s ", (3, 0.5)),
    ],
)
def test_rate_limits_parse(text, parsed):
    assert parse_rate(text) == parsed


@pytest.mark.parametrize("bad", ["20", "20/d", "0/s", "x/s", "20/0s", "-1/s", 20, None])
def test_an_unparseable_rate_limit_is_refused_at_decoration(bad):
    with pytest.raises(ValueError, match=r"task option rate_limit must be .* got"):
        task(rate_limit=bad)(lambda: None) if bad is not None else parse_rate(bad)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_max_concurrency_must_be_an_int_of_at_least_one(bad):
    with pytest.raises(ValueError, match=rf"max_concurrency must be an int >= 1, got {bad!r}"):
        task(max_concurrency=bad)


def test_a_concurrency_key_naming_no_parameter_is_refused_at_decoration():
    with pytest.raises(
        TypeError,
        match=r"concurrency_key='customer' names no parameter .*"
        r"\(its parameters: customer_id, full\)",
    ):

        @task(concurrency_key="customer")
        async def sync(customer_id: int, full: bool = False) -> None: ...

    with pytest.raises(TypeError, match="concurrency_key='nope' names no parameter"):
        BackgroundTask(sync_customer, 1).using(concurrency_key="nope")


def test_rate_limit_key_needs_a_callable_and_a_rate_limit():
    with pytest.raises(ValueError, match="rate_limit_key must be a callable"):
        task(rate_limit="1/s", rate_limit_key="tenant")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rate_limit_key needs a rate_limit"):
        task(rate_limit_key=lambda: "x")
    with pytest.raises(ValueError, match="task option rate_limit must be"):
        BackgroundTask(per_tenant, "a").using(rate_limit="fast")


async def read_rows(url: str) -> list[dict]:
    store = open_store(url)
    await store.open()
    try:
        if url.startswith("sqlite"):
            rows = store._read(  # type: ignore[attr-defined]
                "SELECT name, rate_gate, rate_limit, rate_window, concurrency_gate, "
                "max_concurrency FROM backbeat_tasks ORDER BY rowid",
                (),
            )
            fields = (
                "name",
                "rate_gate",
                "rate_limit",
                "rate_window",
                "concurrency_gate",
                "max_concurrency",
            )
            return [dict(zip(fields, row, strict=True)) for row in rows]
        return []
    finally:
        await store.close()


@pytest.mark.anyio
async def test_the_key_values_are_computed_and_stored_when_the_task_is_written(tmp_path):
    url = f"sqlite:///{tmp_path}/tasks.db"
    runner = Runner(store=url, execute=False)
    await runner.asubmit(BackgroundTask(per_tenant, "acme", n=3))
    await runner.asubmit(BackgroundTask(sync_customer, 42, full=True))
    await runner.asubmit(BackgroundTask(sync_customer, customer_id=7))
    await runner.asubmit(BackgroundTask(per_tenant, "x").using(rate_limit=None))
    rows = await read_rows(url)
    assert rows[0] == {
        "name": "limits.per_tenant",
        "rate_gate": json.dumps(["rate", "limits.per_tenant", "5/1s", "acme"]),
        "rate_limit": 5,
        "rate_window": 1.0,
        "concurrency_gate": None,
        "max_concurrency": 0,
    }
    assert [(row["concurrency_gate"], row["max_concurrency"]) for row in rows[1:3]] == [
        (json.dumps(["concurrency", "limits.sync_customer", 2, "42"]), 2),
        (json.dumps(["concurrency", "limits.sync_customer", 2, "7"]), 2),
    ]
    assert rows[3]["rate_gate"] is None  # using(rate_limit=None) took the gate away


@pytest.mark.anyio
async def test_a_call_with_another_limit_is_counted_under_its_own():
    async with Runner(store="memory://", execute=False) as runner:
        await runner.asubmit(BackgroundTask(per_tenant, "acme"))
        await runner.asubmit(BackgroundTask(per_tenant, "acme").using(rate_limit="1/s"))
        await runner.asubmit(BackgroundTask(per_tenant, "acme").using(rate_limit="1/s"))
        store = runner.store
        claimed = await store.claim("w", limit=10, lease=30)
    # One under 5/s, one under 1/s: the second 1/s call waits, whatever the 5/s log says.
    assert len(claimed) == 2


@pytest.mark.parametrize(
    ("func", "error"),
    [
        (bad_key, "its rate_limit_key raised LookupError: no tenant"),
        (not_a_str, "its concurrency_key must return a str, got int 1"),
    ],
)
def test_a_key_that_cannot_be_computed_turns_the_request_into_a_500(db, func, error, backbeat_log):
    @post("/x")
    async def handler(tasks: BackgroundTasks) -> None:
        tasks.add_task(func, 1)

    app = App(routes=[handler], runner=Runner(store=db))
    with TestClient(app) as client:
        assert client.post("/x").status_code == 500
        assert sum(app.runner.stats().values()) == 0  # nothing was stored
    assert any(error in str(r.exc_info[1]) for r in backbeat_log.records if r.exc_info)


@pytest.mark.anyio
async def test_a_runner_without_a_store_refuses_gated_tasks_clearly(backbeat_log):
    async with Runner() as runner:
        with pytest.raises(GatesNeedAStore, match="has a rate_limit, concurrency_key or max_"):
            runner.submit(BackgroundTask(per_tenant, "a"))
        token = current_runner.set(runner)  # as in a request served under this runner
        try:
            await BackgroundTask(sync_customer, 1)()  # refused: logged, nothing raised
        finally:
            current_runner.reset(token)
        await runner.join(5)
        assert runner.stats()["running"] == 0
    [message] = backbeat_log.messages()
    assert "'limits.sync_customer'" in message and "this runner has none" in message


@pytest.mark.anyio
@pytest.mark.parametrize("options", [{"eager": True}, {"round_trip": True}])
async def test_a_runner_for_tests_runs_tasks_with_limits(options):
    # Limits are a store's: a test's runner (eager, or TestClient's round trip) runs the
    # task, so that adding a rate limit to a task does not break the tests that call it.
    async with Runner(**options) as runner:
        task_id = runner.submit(BackgroundTask(per_tenant, "a"))
        await runner.join(5)
        assert runner.get(task_id).state == "succeeded"


def test_a_rate_window_is_at_most_a_day():
    from backbeat.gates import parse_rate

    assert parse_rate("10/24h") == (10, 86400.0)
    with pytest.raises(ValueError, match="up to 24h"):
        parse_rate("10/25h")


@pytest.mark.anyio
async def test_purge_forgets_start_times_no_window_reaches(tmp_path):
    import collections
    import sqlite3

    from backbeat.stores import MemoryStore, SQLiteStore

    two_days_ago = time.time() - 2 * 86400
    memory = MemoryStore()
    memory._gates.starts['["rate", "t", "1/1s", "old-tenant"]'] = collections.deque([two_days_ago])
    memory._gates.starts['["rate", "t", "1/1s", "new-tenant"]'] = collections.deque([time.time()])
    await memory.purge(time.time(), ("succeeded",))
    assert list(memory._gates.starts) == ['["rate", "t", "1/1s", "new-tenant"]']

    sqlite = SQLiteStore(tmp_path / "tasks.db")
    await sqlite.open()
    with sqlite3.connect(tmp_path / "tasks.db") as conn:
        conn.executemany(
            "INSERT INTO backbeat_gate_starts (gate, at) VALUES (?, ?)",
            [("old", two_days_ago), ("new", time.time())],
        )
    await sqlite.purge(time.time(), ("succeeded",))
    with sqlite3.connect(tmp_path / "tasks.db") as conn:
        assert conn.execute("SELECT gate FROM backbeat_gate_starts").fetchall() == [("new",)]
    await sqlite.close()


@task(name="limits.plain")
async def plain(n: int) -> None: ...


@pytest.mark.anyio
async def test_a_queue_rate_limit_is_shared_by_its_tasks_without_their_own():
    limits = {"emails": "2/s"}
    async with Runner(store="memory://", execute=False, queue_rate_limits=limits) as runner:
        mails = [BackgroundTask(plain, n).using(queue="emails") for n in range(3)]
        elsewhere = BackgroundTask(plain, 9)
        own = BackgroundTask(per_tenant, "acme").using(queue="emails")  # 5/s of its own
        ids = [await runner.asubmit(task) for task in [*mails, elsewhere, own]]
        claimed = [c.id for c in await runner.store.claim("w", limit=10, lease=30)]
        assert sorted(claimed) == sorted([*ids[:2], ids[3], ids[4]])
        assert await runner.store.claim("w", limit=10, lease=30) == []  # the third waits
    with pytest.raises(ValueError, match=r"queue_rate_limits\['emails'\]: task option rate_l"):
        Runner(queue_rate_limits={"emails": "lots"})
