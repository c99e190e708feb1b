"""The Redis store when Redis itself fails: a real redis-server of the test's own,
killed with SIGKILL and started again on the same files (AOF, appendfsync always)."""

import time

import httpx
import pytest

from backbeat import Runner
from tests.redis_server import OwnRedis
from tests.serving import background_process, uvicorn
from tests.test_workers import env_for, post_tasks, wait_until

pytestmark = [pytest.mark.process, pytest.mark.redis]

WORKER = ["-m", "backbeat", "worker", "tests.apps.durable_app:app"]


def test_redis_killed_and_restarted_loses_no_accepted_task_and_refuses_meanwhile(tmp_path):
    import sys

    redis = OwnRedis(str(tmp_path), append_only=True).start()
    try:
        env = env_for(redis.url, BACKBEAT_TEST_EXECUTE="0")
        with uvicorn("tests.apps.durable_app:app", tmp_path, env=env) as server:
            accepted = post_tasks(server.url, 100, seconds=0, prefix="a")
            redis.kill()
            # Redis is down: a request that would store a task gets a quick 503, never a 2xx.
            with httpx.Client(base_url=server.url, timeout=30) as client:
                started = time.monotonic()
                response = client.post("/work", params={"seconds": 0, "label": "never"})
                took = time.monotonic() - started
            assert response.status_code == 503 and response.headers["retry-after"]
            assert took < 5, took
            redis.start()  # the same port and files: the app reconnects by itself
            accepted += post_tasks(server.url, 10, seconds=0, prefix="b")
            with background_process(
                [sys.executable, *WORKER], tmp_path, env=env, name="worker"
            ) as (_, log):
                wait_until(
                    lambda: set(server.marks()) >= set(accepted), 30, "every task", log.read_text
                )
            ran = server.marks()
        counts = Runner(store=redis.url).stats()
        print(f"accepted {len(accepted)}, ran {len(ran)}, twice {len(ran) - len(set(ran))}")
        assert "never" not in ran and len(ran) == len(set(ran)) == 110
        assert counts["succeeded"] == 110
    finally:
        redis.stop()
