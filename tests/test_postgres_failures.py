"""The PostgreSQL store when PostgreSQL fails under a real app (uvicorn) and worker process:
a cluster of the test's own stopped (`pg_ctl stop -m immediate`) and started again, and a
worker's connections terminated (`pg_terminate_backend`) while its tasks run."""

import shutil
import sys
import tempfile
import time
import uuid

import httpx
import pytest

from backbeat import Runner
from tests.postgres_server import OwnPostgres, fresh_schema_url, run_async
from tests.serving import background_process, uvicorn
from tests.stores.test_postgres import ask
from tests.test_workers import env_for, post_tasks, wait_until

pytestmark = [pytest.mark.process, pytest.mark.postgres]

WORKER = ["-m", "backbeat", "worker", "tests.apps.durable_app:app"]


@pytest.fixture
def own_postgres():
    # Not under pytest's tmp_path: the postgres user must reach its cluster's directory.
    directory = tempfile.mkdtemp(prefix="backbeat-postgres-")
    server = OwnPostgres(directory).start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_postgresql_stopped_answers_503_within_the_timeout_and_the_app_reconnects(
    tmp_path, own_postgres
):
    # The store's timeout: 2 s to connect or to get a connection.
    url = fresh_schema_url(own_postgres.url) + "&timeout=2"
    env = env_for(url, BACKBEAT_TEST_EXECUTE="0")
    with uvicorn("tests.apps.durable_app:app", tmp_path, env=env) as server:
        accepted = post_tasks(server.url, 50, seconds=0, prefix="a")
        own_postgres.stop()
        with httpx.Client(base_url=server.url, timeout=30) as client:
            answers = []
            for label in ("never0", "never1"):
                started = time.monotonic()
                response = client.post("/work", params={"seconds": 0, "label": label})
                answers.append((response.status_code, time.monotonic() - started))
        assert [status for status, _ in answers] == [503, 503], answers
        assert max(took for _, took in answers) < 2.5, answers
        own_postgres.start()  # the same port and files: the app's pool connects again

        def accepts() -> bool:
            with httpx.Client(base_url=server.url, timeout=10) as client:
                return client.post("/work", params={"seconds": 0, "label": "b"}).status_code == 201

        wait_until(accepts, 15, "the app to accept again", server.log)
        accepted += ["b", *post_tasks(server.url, 10, seconds=0, prefix="c")]
        with background_process([sys.executable, *WORKER], tmp_path, env=env, name="worker") as (
            _,
            log,
        ):
            wait_until(
                lambda: set(server.marks()) >= set(accepted), 30, "every task", log.read_text
            )
        ran = server.marks()
    counts = Runner(store=url).stats()
    assert not [label for label in ran if label.startswith("never")], ran
    assert sorted(ran) == sorted(accepted)  # each once
    assert counts["succeeded"] == len(accepted)


def test_a_workers_terminated_connections_recover_by_themselves(tmp_path, own_postgres):
    name = f"worker-{uuid.uuid4().hex[:8]}"
    url = fresh_schema_url(own_postgres.url)
    app_env = env_for(url, BACKBEAT_TEST_EXECUTE="0")
    worker_env = env_for(f"{url}&application_name={name}")

    def terminate() -> int:
        rows = run_async(
            ask(
                url,
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = $1",
                name,
            )
        )
        return int(rows[0][0])

    with uvicorn("tests.apps.durable_app:app", tmp_path, env=app_env) as server:
        with background_process(
            [sys.executable, *WORKER], tmp_path, env=worker_env, name="worker"
        ) as (_, log):
            first = post_tasks(server.url, 5, seconds=0, prefix="first")
            wait_until(lambda: set(server.marks()) >= set(first), 15, "the first", log.read_text)
            # Its pools and its listener, killed while it waits and while its tasks run.
            assert terminate() >= 2
            running = post_tasks(server.url, 10, seconds=0.5, prefix="slow")
            time.sleep(0.2)
            assert terminate() >= 1
            later = post_tasks(server.url, 10, seconds=0, prefix="later")
            accepted = first + running + later
            wait_until(
                lambda: set(server.marks()) >= set(accepted), 30, "every task", log.read_text
            )
        ran = server.marks()
    assert sorted(ran) == sorted(accepted)  # each once
