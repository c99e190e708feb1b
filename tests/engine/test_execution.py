"""One attempt, written once: the hooks see the same `TaskInfo` whichever feeder runs the
task (in-process, or stored in SQLite / memory://), and the texts are the same."""

import asyncio

import pytest

from backbeat import BackgroundTask, Runner
from tests.apps import durable_tasks

pytestmark = pytest.mark.anyio


def recorder(seen: list[tuple]):
    def hook(name):
        def record(info, exc=None):
            seen.append(
                (
                    name,
                    info.state.value,
                    info.attempts,
                    info.error,
                    info.started_at is not None,
                    info.finished_at is not None,
                    None if exc is None else type(exc).__name__,
                )
            )

        return record

    return {f"on_{n}": hook(n) for n in ("start", "success", "error", "retry")}


@pytest.mark.parametrize("store", [None, "sqlite", "memory://"])
async def test_hooks_see_the_same_task_info_whatever_feeds_the_task(store, tmp_path):
    seen: list[tuple] = []
    url = f"sqlite:///{tmp_path}/tasks.db" if store == "sqlite" else store
    label = f"hooks-{store}"
    runner = Runner(store=url, poll_interval=0.05, **recorder(seen))
    async with runner:
        task_id = await runner.asubmit(BackgroundTask(durable_tasks.fails_once, label))
        await runner.join(timeout=5)
        info = runner.get(task_id)
    error = f"ConnectionError: {label}: first attempt fails"
    assert seen == [
        ("start", "running", 1, None, True, False, None),
        ("error", "running", 1, error, True, False, "ConnectionError"),
        ("retry", "scheduled", 1, error, True, False, "ConnectionError"),
        ("start", "running", 2, error, True, False, None),
        ("success", "succeeded", 2, error, True, True, None),
    ]
    assert (info.state, info.attempts) == ("succeeded", 2)


@pytest.mark.parametrize("store", [None, "memory://"])
async def test_a_task_that_cancels_itself_failed_with_the_same_text_in_both_feeders(store):
    async def cancels_itself() -> None:
        raise asyncio.CancelledError

    runner = durable_tasks.runner(store) if store else Runner()
    if store:
        durable_tasks.cancels_itself = cancels_itself  # a plain function of a task module
        cancels_itself.__module__ = durable_tasks.__name__
        cancels_itself.__qualname__ = "cancels_itself"
    async with runner:
        task_id = await runner.asubmit(BackgroundTask(cancels_itself))
        await runner.join(timeout=5)
        info = runner.get(task_id)
    assert (info.state, info.error) == ("failed", "CancelledError: cancelled by the task")
