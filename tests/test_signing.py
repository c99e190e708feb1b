"""Signed stored tasks: a worker with the key runs only what was written with it."""

import asyncio
import time

import pytest

from backbeat import BackgroundTask
from backbeat.ids import new_id
from backbeat.signing import sign, signing_key, verified
from backbeat.stores import NewTask, open_store
from tests.apps import durable_tasks
from tests.apps.durable_tasks import record_sync
from tests.redis_server import raw_client

KEY = "a-secret-of-at-least-16-bytes"


def test_a_signature_covers_id_name_and_arguments():
    key = signing_key(KEY)
    signed = sign(key, "01ID", "app:send", '{"args": [1], "kwargs": {}}')
    assert verified(key, "01ID", "app:send", signed) == '{"args": [1], "kwargs": {}}'
    for task_id, name, payload in [
        ("01OTHER", "app:send", signed),
        ("01ID", "os:system", signed),
        ("01ID", "app:send", signed.replace("[1]", "[2]")),
        ("01ID", "app:send", '{"args": [1], "kwargs": {}}'),
    ]:
        with pytest.raises(ValueError):
            verified(key, task_id, name, payload)
    with pytest.raises(ValueError, match="16 bytes"):
        signing_key("short")


def test_the_key_comes_from_the_environment_when_not_given(monkeypatch):
    monkeypatch.setenv("BACKBEAT_SIGNING_KEY", KEY)
    assert signing_key(None) == KEY.encode()
    monkeypatch.delenv("BACKBEAT_SIGNING_KEY")
    assert signing_key(None) is None


def test_forged_and_changed_tasks_are_dead_lettered_signed_ones_run(shared_db):
    """Someone with write access to the store adds a task of their own and changes the
    arguments of a real one: the worker runs neither, and says why."""

    durable_tasks.calls.clear()

    async def scenario() -> dict[str, object]:
        writer = durable_tasks.runner(shared_db, signing_key=KEY, execute=False)
        real = await writer.asubmit(BackgroundTask(record_sync, "real"))
        changed = await writer.asubmit(BackgroundTask(record_sync, "mine"))
        store = open_store(shared_db)
        await tamper(store, shared_db, changed)
        now = time.time()
        forged = NewTask(
            new_id(), "tests.apps.durable_tasks:record_sync",
            '{"args": ["forged"], "kwargs": {}}', now, now,
        )  # fmt: skip
        await store.enqueue([forged])
        await store.close()
        async with durable_tasks.runner(shared_db, signing_key=KEY, poll_interval=0.05) as worker:
            await worker.join(timeout=10)
            return {
                "real": (await worker.aget(real)).state,
                "changed": (await worker.aget(changed)).error,
                "forged": (await worker.aget(forged.id)).error,
            }

    seen = asyncio.run(scenario())
    assert seen["real"] == "succeeded"
    assert "signature does not match" in seen["changed"]
    assert "not signed" in seen["forged"]
    assert durable_tasks.calls == [("real", "sync")]


def test_a_task_this_process_wrote_runs_as_it_wrote_it(shared_db):
    """The process that accepted a task and claims it itself runs the call it checked and
    stored (it does not read it back), so a change made in the store meanwhile does not
    run there either; a task with large arguments is read back, and refused."""
    durable_tasks.calls.clear()
    big = "x" * 4000  # over what a writer keeps in memory: read back from the store

    async def scenario() -> dict[str, object]:
        async with durable_tasks.runner(shared_db, signing_key=KEY, poll_interval=0.05) as app:
            small = await app.asubmit(BackgroundTask(record_sync, "mine").using(delay=0.5))
            large = await app.asubmit(BackgroundTask(record_sync, "mine", big).using(delay=0.5))
            store = open_store(shared_db)
            await tamper(store, shared_db, small)
            await tamper(store, shared_db, large)
            await store.close()
            await asyncio.sleep(0.6)
            await app.join(timeout=10)
            return {"small": await app.aget(small), "large": await app.aget(large)}

    seen = asyncio.run(scenario())
    assert seen["small"].state == "succeeded"
    assert durable_tasks.calls == [("mine", "sync")]
    assert seen["large"].state == "failed"
    assert "signature does not match" in seen["large"].error


async def tamper(store, url: str, task_id: str) -> None:
    """Change a stored task's arguments the way an attacker would: in the store itself."""
    if url.startswith("redis"):
        client = raw_client(url, asyncio=True)
        key = "{" + store.prefix + "}:t:" + task_id
        payload = await client.hget(key, "payload")
        await client.hset(key, "payload", payload.replace('"mine"', '"evil"'))
        await client.aclose()
    elif url.startswith("postgresql"):
        import asyncpg

        conn = await asyncpg.connect(url.partition("?")[0])
        try:
            await conn.execute(
                f'UPDATE "{store.schema.name}".tasks '
                "SET payload = replace(payload, '\"mine\"', '\"evil\"') WHERE id = $1",
                task_id,
            )
        finally:
            await conn.close()
    else:
        import sqlite3

        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.execute(
                "UPDATE backbeat_tasks SET payload = replace(payload, '\"mine\"', '\"evil\"') "
                "WHERE id = ?",
                (task_id,),
            )
