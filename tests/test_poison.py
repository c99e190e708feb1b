"""Tasks that kill or block their worker, with real `backbeat worker` processes: a live
worker keeps its leases while a task blocks its loop; a task that kills every worker it
runs on is dead-lettered after a bounded number of lost leases; its neighbours finish."""

import asyncio
import collections
import os
import subprocess
import sys
import time

import httpx
import pytest

from backbeat import Runner
from backbeat.stores import open_store
from tests.serving import ROOT, uvicorn
from tests.test_workers import env_for, post_tasks, wait_until

pytestmark = pytest.mark.process

WORKER = [sys.executable, "-m", "backbeat", "worker", "tests.apps.durable_app:app"]


class Workers:
    """Keeps `count` workers running, restarting any that dies (as systemd would)."""

    def __init__(self, tmp_path, env, count: int, concurrency: int, name: str = "worker") -> None:
        self.tmp_path, self.count, self.name = tmp_path, count, name
        self.env = {
            **os.environ,
            "BACKBEAT_TEST_OUT": str(tmp_path / "marks.txt"),
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.command = [*WORKER, "--concurrency", str(concurrency)]
        self.processes: list[subprocess.Popen[bytes]] = []
        self.started = 0

    def _start(self) -> subprocess.Popen[bytes]:
        self.started += 1
        log = open(self.tmp_path / f"{self.name}{self.started}.log", "wb")  # noqa: SIM115
        return subprocess.Popen(
            self.command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )

    def keep_alive(self) -> None:
        self.processes = [p for p in self.processes if p.poll() is None]
        while len(self.processes) < self.count:
            self.processes.append(self._start())

    def logs(self) -> str:
        return "\n".join(
            (self.tmp_path / f"{self.name}{i}.log").read_text(errors="replace")
            for i in range(1, self.started + 1)
        )

    def stop(self) -> list[int]:
        for process in self.processes:
            process.terminate()
        return [process.wait(timeout=20) for process in self.processes]


def marks(tmp_path) -> list[str]:
    path = tmp_path / "marks.txt"
    return [line.split()[0] for line in path.read_text().splitlines()] if path.exists() else []


def test_a_task_that_blocks_its_loop_keeps_its_lease_and_runs_once(tmp_path, shared_db):
    env = env_for(shared_db, BACKBEAT_TEST_EXECUTE="0", BACKBEAT_TEST_LEASE="1")
    with uvicorn("tests.apps.durable_app:app", tmp_path, env=env) as server:
        with httpx.Client(base_url=server.url) as client:
            blocker = client.post("/block", params={"seconds": 3.5, "label": "blocker"})
        labels = post_tasks(server.url, 12, seconds=0.2, prefix="n")
        workers = Workers(tmp_path, env, count=2, concurrency=4)
        try:
            workers.keep_alive()
            wait_until(
                lambda: {"blocker", *labels} <= set(marks(tmp_path)),
                30,
                "every task to finish",
                workers.logs,
            )
            time.sleep(1.5)  # a second run of the blocker would show by now
            assert workers.stop() == [0, 0]
        finally:
            for process in workers.processes:
                process.kill()
        with httpx.Client(base_url=server.url) as client:
            status = client.get(f"/tasks/{blocker.json()['id']}").json()
    counts = collections.Counter(marks(tmp_path))
    assert counts["blocker"] == 1, "a live worker's blocked task was taken over and run again"
    assert (status["state"], status["attempts"]) == ("succeeded", 1)
    assert workers.started == 2
    logs = workers.logs()
    assert "event loop has been blocked" in logs and "block_loop" in logs
    assert "lost the lease" not in logs


def test_a_finished_task_keeps_its_lease_until_its_outcome_is_written(tmp_path, shared_db):
    """Two tasks on one worker each block its loop for 3 s (lease 1 s): the first one's
    outcome waits for the loop while the second blocks it. Its lease is kept meanwhile: a
    second worker does not run it again, and its success is the one recorded."""
    env = env_for(shared_db, BACKBEAT_TEST_EXECUTE="0", BACKBEAT_TEST_LEASE="1")
    with (
        uvicorn("tests.apps.durable_app:app", tmp_path, env=env) as server,
        httpx.Client(base_url=server.url) as client,
    ):
        ids = [
            client.post("/block", params={"seconds": 3, "label": label}).json()["id"]
            for label in ("first", "second")
        ]
    runner = Runner(store=env["BACKBEAT_TEST_STORE"])
    holder = Workers(tmp_path, env, count=1, concurrency=2, name="holder")
    other = Workers(tmp_path, env, count=1, concurrency=2, name="other")
    try:
        holder.keep_alive()
        wait_until(lambda: runner.stats()["running"] == 2, 15, "both claimed", holder.logs)
        other.keep_alive()  # idle, claiming every 0.2 s: it takes any lease that runs out
        wait_until(
            lambda: all(runner.get(task_id).state == "succeeded" for task_id in ids),
            30,
            "both outcomes",
            lambda: holder.logs() + other.logs(),
        )
        infos = [runner.get(task_id) for task_id in ids]
        assert holder.stop() == [0] and other.stop() == [0]
    finally:
        for process in holder.processes + other.processes:
            process.kill()
    assert [info.attempts for info in infos] == [1, 1], other.logs()
    assert collections.Counter(marks(tmp_path)) == {"first": 1, "second": 1}
    assert "is ignored" not in holder.logs()


def test_a_task_that_kills_every_worker_is_dead_lettered_and_its_neighbours_finish(
    tmp_path, shared_db
):
    env = env_for(shared_db, BACKBEAT_TEST_EXECUTE="0", BACKBEAT_TEST_LEASE="1")
    with uvicorn("tests.apps.durable_app:app", tmp_path, env=env) as server:
        with httpx.Client(base_url=server.url) as client:
            poison = client.post("/poison", params={"label": "poison"}).json()["id"]
        labels = post_tasks(server.url, 30, seconds=0.5, prefix="n")
        workers = Workers(tmp_path, env, count=2, concurrency=8)
        runner = Runner(store=env["BACKBEAT_TEST_STORE"])
        try:
            deadline = time.monotonic() + 60
            while not (
                set(labels) <= set(marks(tmp_path)) and runner.get(poison).state == "failed"
            ):
                assert time.monotonic() < deadline, workers.logs()
                workers.keep_alive()
                time.sleep(0.1)
            assert workers.stop() == [0, 0]
        finally:
            for process in workers.processes:
                process.kill()
        info = runner.get(poison)
    assert "the lease was lost 3 times" in info.error
    assert collections.Counter(marks(tmp_path))["poison"] == 3  # not an endless loop
    assert runner.stats()["failed"] == 1  # no neighbour was dead-lettered with it
    assert "runs it alone" in workers.logs()


def test_a_frozen_worker_cannot_settle_a_task_another_worker_took_over(tmp_path, shared_db):
    """Fencing: SIGSTOP a worker mid-task past its lease, let another finish the task,
    SIGCONT the first: its outcome is refused, the state stays the one the second wrote."""
    import signal

    env = env_for(shared_db, BACKBEAT_TEST_EXECUTE="0", BACKBEAT_TEST_LEASE="1")
    with uvicorn("tests.apps.durable_app:app", tmp_path, env=env) as server:
        [label] = post_tasks(server.url, 1, seconds=2.0, prefix="fenced")
    runner = Runner(store=env["BACKBEAT_TEST_STORE"])
    first = Workers(tmp_path, env, count=1, concurrency=1, name="first")
    second = Workers(tmp_path, env, count=1, concurrency=1, name="second")
    try:
        first.keep_alive()
        wait_until(lambda: runner.stats()["running"] == 1, 15, "the first worker's claim")
        [frozen] = first.processes
        frozen.send_signal(signal.SIGSTOP)
        second.keep_alive()
        wait_until(lambda: label in marks(tmp_path), 20, "the second worker's run", second.logs)
        wait_until(lambda: runner.stats()["succeeded"] == 1, 10, "its success", second.logs)
        frozen.send_signal(signal.SIGCONT)
        time.sleep(1.5)  # the first worker wakes: its renewal and its outcome are refused
        [task_id] = task_ids(shared_db)
        info = runner.get(task_id)
        assert (info.state, info.attempts) == ("succeeded", 2)
        assert first.stop() == [0] and second.stop() == [0]
    finally:
        for process in first.processes + second.processes:
            process.send_signal(signal.SIGCONT)
            process.kill()
    first_log = first.logs()
    # Either its renewal came first (the keeper stops the task) or its outcome did (refused).
    assert "stops task" in first_log or "finished after it was lost" in first_log, first_log
    assert runner.stats()["succeeded"] == 1


def task_ids(store_url: str) -> list[str]:
    async def listed() -> list[str]:
        store = open_store(store_url)
        try:
            return [task.id for task in await store.list_tasks()]
        finally:
            await store.close()

    return asyncio.run(listed())
