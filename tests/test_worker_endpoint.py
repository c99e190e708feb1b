"""`backbeat worker --metrics HOST:PORT`: a real worker's /healthz and /metrics, scraped; and
what /healthz judges (a blocked loop, a stopped lease keeper, a claim loop that stopped turning).
"""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from backbeat import BackgroundTask
from tests.apps import durable_tasks
from tests.serving import background_process, free_port, uvicorn
from tests.test_workers import env_for, post_tasks, wait_until

WORKER = [sys.executable, "-m", "backbeat", "worker", "tests.apps.durable_app:app"]


def get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=5)
    except httpx.TransportError:
        return None  # not listening yet


def health(base: str) -> tuple[int, dict]:
    response = get(f"{base}/healthz")
    return (0, {}) if response is None else (response.status_code, response.json())


def sample(scrape: str, name: str, **labels: str) -> float | None:
    """The value of one series in a Prometheus text scrape."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in scrape.splitlines():
        if line.startswith(f"{name}{{{wanted}}} "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_a_worker_serves_its_metrics_and_a_health_that_sees_a_blocked_loop(tmp_path):
    store = f"sqlite:///{tmp_path}/tasks.db"
    base = f"http://127.0.0.1:{free_port()}"
    app_env = env_for(store, BACKBEAT_TEST_EXECUTE="0")
    worker_env = env_for(store, BACKBEAT_TEST_LEASE="2")
    with (
        uvicorn("tests.apps.durable_app:app", tmp_path, env=app_env, name="app") as server,
        background_process(
            [*WORKER, "--metrics", base.removeprefix("http://")], tmp_path, env=worker_env, name="w"
        ) as (worker, log),
    ):
        wait_until(lambda: health(base)[0] == 200, 20, "a healthy worker", log.read_text)
        assert health(base)[1]["problems"] == []
        labels = post_tasks(server.url, 3, seconds=0, prefix="m")
        wait_until(lambda: set(server.marks()) >= set(labels), 20, "the tasks", log.read_text)

        # The counters live in the worker: its scrape has them (the app ran nothing).
        def succeeded() -> float | None:
            scrape = httpx.get(f"{base}/metrics", timeout=5)
            assert scrape.headers["content-type"].startswith("text/plain; version=")
            task = "tests.apps.durable_tasks:sleep_and_mark"
            return sample(
                scrape.text,
                "backbeat_task_attempts_total",
                outcome="succeeded",
                queue="default",
                task=task,
            )

        wait_until(lambda: succeeded() == 3.0, 10, "three attempts counted", log.read_text)
        scrape = httpx.get(f"{base}/metrics", timeout=5).text
        assert sample(scrape, "backbeat_tasks", queue="default", state="pending") == 0.0
        assert "process_resident_memory_bytes" in scrape  # the worker process's own too

        # A task that blocks the worker's event loop for 3 s: /healthz says so, then recovers.
        response = httpx.post(f"{server.url}/block", params={"seconds": 3, "label": "blocked"})
        assert response.status_code == 201
        seen: dict = {}

        def unhealthy() -> bool:
            status, seen["document"] = health(base)
            return status == 503

        wait_until(unhealthy, 10, "a 503 while blocked", log.read_text)
        problems = seen["document"]["problems"]
        assert any("event loop has been blocked" in p and "block_loop" in p for p in problems)
        wait_until(lambda: "blocked" in server.marks(), 10, "the blocking task", log.read_text)
        wait_until(lambda: health(base)[0] == 200, 10, "healthy again", log.read_text)

        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=15) == 0
    assert get(f"{base}/healthz") is None  # the endpoint went with the worker


@pytest.mark.parametrize(
    ("address", "message"),
    [("127.0.0.1:{taken}", "cannot listen on 127.0.0.1:"), ("localhost", "is not HOST:PORT")],
)
def test_a_bad_metrics_address_is_one_line(tmp_path, address, message):
    env = {**os.environ, **env_for(f"sqlite:///{tmp_path}/tasks.db")}
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        result = subprocess.run(
            [*WORKER, "--metrics", address.format(taken=taken)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


@pytest.mark.anyio
async def test_health_names_a_stopped_lease_keeper_and_a_claim_loop_that_stopped_turning(
    tmp_path,
):
    runner = durable_tasks.runner(f"sqlite:///{tmp_path}/tasks.db", lease=3, poll_interval=0.5)
    assert runner.health() is not None and not runner.health().healthy  # not started yet
    async with runner:
        await runner.asubmit(BackgroundTask(durable_tasks.sleep_and_mark, 0, "x"))
        await runner.join(timeout=5)
        assert runner.health().healthy, runner.health().problems
        worker = runner._engine.worker
        # Seen from 10 s later (an injected clock): nothing beat meanwhile.
        later = worker.health(now=time.monotonic() + 10)
        assert not later.healthy
        assert any("claim loop has not turned for" in p for p in later.problems)
        assert any("lease keeper has not ticked" in p for p in later.problems)
        # The keeper asked the loop nothing in those 10 s (it is the one that did not tick):
        # the loop is not blamed for the keeper's silence.
        assert not any("event loop has been blocked" in p for p in later.problems)
        # Within poll_interval + lease + the longest back-off the claim loop is on time.
        soon = worker.health(now=worker.turned_at + 8.4)
        assert not any("claim loop" in p for p in soon.problems)

        await asyncio.to_thread(worker._keeper.stop)  # the keeper thread dies
        stopped = runner.health()
        assert "the lease keeper's thread has stopped" in stopped.problems
    assert not runner.health().healthy  # stopped
    assert runner.health().problems == ("the worker is not running (starting, or stopping)",)
