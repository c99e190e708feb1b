"""The Redis store when Redis itself fails: a real redis-server of the test's own,
killed with SIGKILL and started again on the same files (AOF, appendfsync always)."""

import json
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


def test_a_frozen_redis_answers_503_within_the_timeout_and_a_503d_task_never_runs(tmp_path):
    """SIGSTOP the server: requests that would store a task get 503 within the store's 2 s
    timeout; their writes, still in the server's socket buffers, land when it is SIGCONTed
    and must store nothing (they did, and ran: a client retrying on Retry-After got the task
    twice). Every task that got a 2xx runs once."""
    import asyncio
    import signal
    from concurrent.futures import ThreadPoolExecutor

    from backbeat.stores import open_store

    redis = OwnRedis(str(tmp_path)).start()
    assert redis.process is not None

    def post(label: str) -> tuple[str, int, float]:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            started = time.monotonic()
            response = client.post("/work", params={"seconds": 0, "label": label})
            return label, response.status_code, time.monotonic() - started

    try:
        env = env_for(redis.url)  # the app runs its tasks itself (and claims while frozen)
        with uvicorn("tests.apps.durable_app:app", tmp_path, env=env) as server:
            accepted = post_tasks(server.url, 5, seconds=0, prefix="before")
            redis.process.send_signal(signal.SIGSTOP)
            try:
                with ThreadPoolExecutor(8) as pool:
                    frozen = list(pool.map(post, [f"frozen{n}" for n in range(8)]))
                frozen += [post(f"frozen-late{n}") for n in range(2)]
            finally:
                redis.process.send_signal(signal.SIGCONT)
            answers = [post(f"after{n}") for n in range(10)]
            accepted += [label for label, status, _ in answers if status == 201]
            wait_until(lambda: set(accepted) <= set(server.marks()), 20, "the 2xx'd", server.log)
            ran = server.marks()
            log = server.log()

        async def stored_labels() -> list[str]:
            store = open_store(redis.url)
            try:
                tasks = await store.list_tasks(limit=1000)
            finally:
                await store.close()
            return [json.loads(task.payload or "{}")["args"][1] for task in tasks]

        stored = asyncio.run(stored_labels())
    finally:
        redis.stop()
    print(f"while frozen: {[(s, round(t, 2)) for _, s, t in frozen]}; after: {answers}")
    assert {status for _, status, _ in frozen} == {503}, frozen
    assert max(took for _, _, took in frozen) < 2.5, frozen  # the store's timeout is 2 s
    assert not [label for label in stored if label.startswith("frozen")], stored
    assert not [label for label in ran if label.startswith("frozen")], ran
    assert sorted(ran) == sorted(accepted), (ran, accepted)
    assert len(accepted) >= 10  # the store answers again at once
    assert "were not stored" in log


def test_a_write_that_reaches_redis_after_its_deadline_stores_nothing(tmp_path):
    """A write held up inside Redis (CLIENT PAUSE WRITE: it is read, and runs when the pause
    ends) past half the store's timeout stores nothing, and its caller is told so: the
    caller of a write that lands after it gave up (a 503) must never have it run."""
    import asyncio

    from backbeat.stores import StoreUnavailable
    from backbeat.stores.redis import RedisStore
    from tests.redis_server import raw_client
    from tests.stores.rows import new_task

    redis = OwnRedis(str(tmp_path)).start()
    admin = raw_client(redis.url)

    async def write_during_a_pause() -> tuple[BaseException | None, float, dict[str, int]]:
        store = RedisStore(redis.url, timeout=2.0)
        try:
            await store.open()
            admin.execute_command("CLIENT", "PAUSE", 1500, "WRITE")
            started = time.monotonic()
            try:
                await store.enqueue([new_task()])
                refused = None
            except StoreUnavailable as exc:
                refused = exc
            took = time.monotonic() - started
            return refused, took, await store.counts()
        finally:
            await store.close()

    try:
        refused, took, counts = asyncio.run(write_during_a_pause())
    finally:
        admin.close()
        redis.stop()
    assert refused is not None and "after its deadline" in str(refused), refused
    assert 1.4 < took < 2.0, took  # it landed (late) and was answered, within the timeout
    assert counts["pending"] == 0, counts


@pytest.mark.parametrize("command", ["FLUSHDB", "FLUSHALL"])
def test_a_flushed_redis_is_noticed_said_and_refused_once_never_a_silent_2xx(tmp_path, command):
    """A flush drops every task under the prefix: the app says so (an ERROR with how many
    unfinished tasks were lost), refuses the write that finds out (503), sets the store up
    again and goes on; a worker runs what was accepted afterwards."""
    import sys

    from tests.redis_server import raw_client

    redis = OwnRedis(str(tmp_path)).start()
    try:
        env = env_for(redis.url, BACKBEAT_TEST_EXECUTE="0")
        with uvicorn("tests.apps.durable_app:app", tmp_path, env=env) as server:
            post_tasks(server.url, 60, seconds=0, prefix="lost")
            looking = Runner(store=redis.url)
            # Their activations (writes of the app's, after each response) first: else one of
            # those would be the write that finds the data gone.
            wait_until(lambda: looking.stats()["pending"] == 60, 10, "the activations")
            admin = raw_client(redis.url)
            try:
                admin.execute_command(command)
            finally:
                admin.close()
            with httpx.Client(base_url=server.url, timeout=10) as client:
                statuses = [
                    client.post("/work", params={"seconds": 0, "label": f"after{n}"}).status_code
                    for n in range(10)
                ]
            log = server.log()
        accepted = [f"after{n}" for n, status in enumerate(statuses) if status == 201]
        assert statuses == [503] + [201] * 9, statuses
        assert "is gone (FLUSHDB, FLUSHALL" in log and "the 60 unfinished task(s)" in log, log
        with background_process([sys.executable, *WORKER], tmp_path, env=env, name="worker") as (
            _,
            worker_log,
        ):
            wait_until(
                lambda: set(accepted) <= set(server.marks()),
                20,
                "the later tasks",
                worker_log.read_text,
            )
        assert Runner(store=redis.url).stats()["succeeded"] == 9
    finally:
        redis.stop()
