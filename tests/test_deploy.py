"""What docs/deploy.md promises that a test can hold: a `backbeat worker` that gets SIGTERM
exits within its `shutdown_timeout` plus the stated margin, and gives back to the store what it
did not finish (so a `TimeoutStopSec` / `terminationGracePeriodSeconds` of `shutdown_timeout`
+ 10 s never ends in a SIGKILL). Its health endpoint is tested in tests/test_worker_endpoint.py.
"""

import json
import signal
import sys
import time

from tests.serving import background_process, free_port, uvicorn
from tests.test_worker_endpoint import health
from tests.test_workers import backbeat, env_for, post_tasks, wait_until

SHUTDOWN_TIMEOUT = 2.0
MARGIN = 2.0  # docs/deploy.md: "within shutdown_timeout + 2 s"


def test_a_worker_stops_on_sigterm_within_the_grace_and_releases_what_it_did_not_finish(
    tmp_path,
):
    store = f"sqlite:///{tmp_path}/tasks.db"
    base = f"http://127.0.0.1:{free_port()}"
    app_env = env_for(store, BACKBEAT_TEST_EXECUTE="0")
    worker_env = env_for(store, BACKBEAT_TEST_SHUTDOWN=str(SHUTDOWN_TIMEOUT))
    command = [sys.executable, "-m", "backbeat", "worker", "tests.apps.durable_app:app"]
    with (
        uvicorn("tests.apps.durable_app:app", tmp_path, env=app_env, name="app") as server,
        background_process(
            [*command, "--metrics", base.removeprefix("http://")],
            tmp_path,
            env=worker_env,
            name="w",
        ) as (worker, log),
    ):
        post_tasks(server.url, 2, seconds=0.5, prefix="short")
        post_tasks(server.url, 3, seconds=60, prefix="long")
        wait_until(lambda: len(server.marks()) == 2, 20, "the short tasks", log.read_text)
        wait_until(lambda: health(base)[1].get("running") == 3, 20, "3 running", log.read_text)
        stopping = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        # While it drains, it is not healthy (a readiness probe takes it out at once).
        wait_until(lambda: health(base)[0] == 503, SHUTDOWN_TIMEOUT, "a 503 while draining")
        assert health(base)[1]["problems"] == ["the worker is not running (starting, or stopping)"]
        assert worker.wait(timeout=SHUTDOWN_TIMEOUT + 30) == 0
        took = time.monotonic() - stopping
    assert took < SHUTDOWN_TIMEOUT + MARGIN, f"{took:.2f}s\n{log.read_text()}"
    assert took >= SHUTDOWN_TIMEOUT  # the running tasks had their grace
    assert "3 task(s) not finished within shutdown_timeout=2.0s were released" in log.read_text()
    listed = backbeat("list", "--json", "--store", store)
    states = sorted(
        (task["state"], task["attempts"]) for task in map(json.loads, listed.stdout.splitlines())
    )
    # Released: pending again, the interrupted attempt not counted; nothing is left running.
    assert states == [("pending", 0)] * 3 + [("succeeded", 1)] * 2
