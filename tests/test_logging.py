"""Every log record about a task carries task_id, task_name, attempt and queue (as `extra`),
in memory and in a store: what JSON log formatters and Sentry's logging integration group by."""

from __future__ import annotations

import json
import logging

import pytest

from backbeat import BackgroundTask, Runner, task
from backbeat.stores import open_store
from tests.stores.rows import new_task

pytestmark = pytest.mark.anyio


@task(name="logging.flaky", retries=1, backoff=0.01, queue="mail")
async def always_fails(label: str) -> None:
    raise RuntimeError(f"no luck for {label}")


def about(record: logging.LogRecord) -> dict[str, object]:
    return {
        key: getattr(record, key, "missing") for key in ("task_id", "task_name", "attempt", "queue")
    }


@pytest.mark.parametrize("store", [None, "sqlite"])
async def test_retry_and_final_failure_records_name_the_task(store, tmp_path, backbeat_log):
    runner = Runner(store=store and f"sqlite:///{tmp_path}/t.db")
    async with runner:
        task_id = await runner.asubmit(BackgroundTask(always_fails, "ann"))
        await runner.join()
    records = [r for r in backbeat_log.records if r.levelno >= logging.WARNING]
    retry, final = records[-2], records[-1]
    assert "retrying" in retry.getMessage() and "failed after 2 attempts" in final.getMessage()
    assert about(retry) == {
        "task_id": task_id, "task_name": "logging.flaky", "attempt": 1, "queue": "mail"
    }  # fmt: skip
    assert about(final) == {
        "task_id": task_id, "task_name": "logging.flaky", "attempt": 2, "queue": "mail"
    }  # fmt: skip


async def test_a_task_a_worker_cannot_run_is_logged_with_its_fields(tmp_path, backbeat_log):
    url = f"sqlite:///{tmp_path}/t.db"
    store = open_store(url)
    row = new_task("nobody.knows", queue="pdf")
    await store.enqueue([row])
    async with Runner(store=url, queues=("pdf",)) as runner:
        await runner.join()
    [record] = [r for r in backbeat_log.records if "cannot run" in r.getMessage()]
    assert about(record) == {
        "task_id": row.id, "task_name": "nobody.knows", "attempt": 1, "queue": "pdf"
    }  # fmt: skip
    await store.close()


async def test_the_fields_reach_a_json_formatter(backbeat_log):
    """What a JSON formatter sees: the record's attributes (here, a minimal one)."""
    async with Runner() as runner:
        runner.submit(BackgroundTask(always_fails, "bob"))
        await runner.join()
    final = [r for r in backbeat_log.records if r.levelno >= logging.ERROR][-1]
    shown = json.loads(json.dumps({"message": final.getMessage(), **about(final)}))
    assert shown["task_name"] == "logging.flaky" and shown["queue"] == "mail"
