"""A paused queue across processes: a real `backbeat worker` on a SQLite store runs the other
queue's tasks, none of the paused one's, and those too once `backbeat queues resume` (another
process) says so (tests/apps/limits_app.py's worker)."""

import pytest

from backbeat import BackgroundTask
from tests.apps import limits_tasks
from tests.test_cli import backbeat
from tests.test_flow_limits import marks, stored, submit, workers
from tests.test_workers import wait_until

pytestmark = pytest.mark.process


def ran(tmp_path) -> list[str]:
    return [label for label, _, _ in marks(tmp_path)]


def test_a_worker_runs_no_task_of_a_paused_queue_until_it_is_resumed(tmp_path):
    store_url = f"sqlite:///{tmp_path}/tasks.db"
    with workers(tmp_path, store_url, count=1):
        paused = backbeat("queues", "pause", "mail", "--store", store_url)
        assert paused.returncode == 0, paused.stderr
        held = BackgroundTask(limits_tasks.free, "mail").using(queue="mail")
        first = BackgroundTask(limits_tasks.free, "first")
        submit(store_url, [held, first])  # one write: the claim that takes one sees both
        wait_until(lambda: "free:first" in ran(tmp_path), 10, "the other queue's task")
        # Another claim later, the paused queue's task still waits.
        submit(store_url, [BackgroundTask(limits_tasks.free, "second")])
        wait_until(lambda: "free:second" in ran(tmp_path), 10, "a later task")
        assert "free:mail" not in ran(tmp_path)
        [status] = stored(store_url, [held.id])
        assert status.state == "pending"

        resumed = backbeat("queues", "resume", "mail", "--store", store_url)
        assert resumed.returncode == 0, resumed.stderr
        wait_until(lambda: "free:mail" in ran(tmp_path), 10, "the resumed queue's task")
        [status] = stored(store_url, [held.id])
        assert status.state == "succeeded"
