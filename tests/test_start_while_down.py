"""The app and its workers start whatever the store's state: a store that cannot be
reached at start-up is tried again with backoff, requests that would store a task get a
503 meanwhile (never a 2xx), other routes answer, and once the store is there the tasks
posted run. Real uvicorn, real `backbeat worker`, a redis-server started after both."""

import sys

import httpx
import pytest

from tests.redis_server import OwnRedis
from tests.serving import background_process, uvicorn
from tests.test_workers import env_for, post_tasks, wait_until

pytestmark = pytest.mark.process

APP = "tests.apps.durable_app:app"
WORKER = [sys.executable, "-m", "backbeat", "worker", APP]


def refused_while_down(url: str, label: str) -> None:
    with httpx.Client(base_url=url, timeout=10) as client:
        assert client.get("/health").json() == {"ok": True}
        response = client.post("/work", params={"seconds": 0, "label": label})
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"]


@pytest.mark.redis
def test_app_and_worker_start_before_redis_and_run_what_is_posted_once_it_is_up(tmp_path):
    redis = OwnRedis(str(tmp_path))  # its port is chosen; nothing listens there yet
    env = env_for(redis.url, BACKBEAT_TEST_EXECUTE="0")
    with (
        uvicorn(APP, tmp_path, env=env, name="app") as server,
        background_process(WORKER, tmp_path, env=env, name="worker") as (worker, worker_log),
    ):
        refused_while_down(server.url, "never1")
        wait_until(lambda: "retrying in" in worker_log.read_text(), 10, "a retry line")
        assert worker.poll() is None  # waiting, not exited
        refused_while_down(server.url, "never2")
        redis.start()
        try:
            wait_until(
                lambda: "connected after" in worker_log.read_text(),
                20,
                "the worker to connect",
                worker_log.read_text,
            )
            accepted = post_tasks(server.url, 10, seconds=0, prefix="up")
            wait_until(lambda: set(server.marks()) >= set(accepted), 20, "the tasks to run")
        finally:
            redis.stop()
    app_log = server.log()
    assert "Traceback" not in app_log and "Traceback" not in worker_log.read_text()
    assert app_log.count("unreachable, retrying") == 1
    assert not {"never1", "never2"} & set(server.marks())


@pytest.mark.redis
def test_a_worker_told_to_exits_at_once_or_after_its_connect_timeout(tmp_path):
    redis = OwnRedis(str(tmp_path))
    env = env_for(redis.url)
    for flags, code in ((["--exit-if-unreachable"], 1), (["--connect-timeout", "1"], 1)):
        with background_process([*WORKER, *flags], tmp_path, env=env, name="w") as (worker, log):
            assert worker.wait(timeout=20) == code
        assert "could not be reached" in log.read_text() or "cannot be reached" in log.read_text()
        assert "Traceback" not in log.read_text()


def test_an_app_whose_sqlite_volume_is_not_mounted_yet_starts_and_waits_for_it(tmp_path):
    volume = tmp_path / "volume"
    env = env_for(f"sqlite:///{volume}/tasks.db")  # the app runs the tasks itself
    with uvicorn(APP, tmp_path, env=env, name="app") as server:
        refused_while_down(server.url, "never")
        assert not volume.exists()  # not made on the disk beneath the mount point
        volume.mkdir()  # mounted
        accepted = post_tasks(server.url, 5, seconds=0, prefix="m")
        wait_until(lambda: set(server.marks()) >= set(accepted), 20, "the tasks to run")
        log = server.log()
    assert "Traceback" not in log and log.count("unreachable, retrying") == 1
    assert "never" not in server.marks()
