"""What is the Redis store's own: its URLs, its keys, an unreachable server, no redis-py."""

import subprocess
import sys
import time

import pytest

from backbeat import BackgroundTask, Runner
from backbeat.stores import StoreError, StoreUnavailable, open_store
from backbeat.stores.redis import RedisStore
from tests.redis_server import raw_client
from tests.serving import free_port
from tests.stores.rows import failed, new_task, succeeded

pytestmark = pytest.mark.anyio


def test_url_forms_and_the_prefix():
    store = open_store("redis://app:s3cret@cache.internal:6380/2?prefix=shop")
    assert isinstance(store, RedisStore)
    assert store.prefix == "shop"
    assert "s3cret" not in repr(store) and "cache.internal" in repr(store)
    assert open_store("rediss://cache.internal:6380/0").prefix == "backbeat"
    assert isinstance(open_store("unix:///run/redis.sock?db=1"), RedisStore)
    for bad in ("redis://h/0?prefix=", "redis://h/0?prefix=a{b}"):
        with pytest.raises(StoreError, match="prefix"):
            open_store(bad)
    assert open_store("redis://h:7000/0?cluster=yes&prefix=shop").cluster
    assert not open_store("redis://h:7000/0").cluster
    with pytest.raises(StoreError, match="cluster='maybe'"):
        open_store("redis://h/0?cluster=maybe")


def test_a_bad_url_option_is_one_line_naming_the_accepted_ones():
    with pytest.raises(StoreError) as raised:
        open_store("redis://h:6379/0?prefx=shop")
    message = str(raised.value)
    assert "prefx" in message and "prefix" in message and "cluster" in message
    assert "\n" not in message
    assert open_store("rediss://h/0?ssl_cert_reqs=none&prefix=a").prefix == "a"


def test_the_repr_names_the_database():
    assert repr(open_store("redis://u:pw@cache:6380/2?prefix=shop")) == (
        "RedisStore(redis://cache:6380, db=2, prefix='shop')"
    )
    assert "db=0" in repr(open_store("redis://cache"))
    assert repr(open_store("unix:///run/redis.sock?db=3")) == (
        "RedisStore(unix:///run/redis.sock, db=3, prefix='backbeat')"
    )


@pytest.mark.redis
@pytest.mark.process
def test_read_only_commands_write_nothing(store_url_redis):
    from tests.test_workers import backbeat

    for command in (["status"], ["list"], ["show", "0" * 26], ["workers"]):
        done = backbeat(*command, "--store", store_url_redis)
        assert done.returncode == 2, done  # no store under that prefix: nothing was made
        assert "no backbeat store under prefix" in done.stderr, done.stderr
    client = raw_client(store_url_redis)
    try:
        prefix = store_url_redis.rpartition("prefix=")[2]
        assert list(client.scan_iter(match="{" + prefix + "}*")) == []
    finally:
        client.close()


@pytest.mark.redis
async def test_every_key_shares_the_prefixs_hash_tag(store_url_redis):
    store = open_store(store_url_redis)
    await store.enqueue([new_task(queue="mail", priority=3), new_task(due_in=60)])
    [claimed] = await store.claim("w", 1, 30)
    await store.finish([])
    client = raw_client(store_url_redis, asyncio=True)
    try:
        keys = [key async for key in client.scan_iter(match=f"*{store.prefix}*")]
    finally:
        await client.aclose()
    assert keys and all(key.startswith("{" + store.prefix + "}:") for key in keys)
    assert claimed.queue == "mail"
    await store.close()


async def test_an_unreachable_server_is_a_quick_store_unavailable():
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="cannot be reached"):
        await store.enqueue([new_task()])
    assert time.monotonic() - started < 3
    await store.close()


def test_a_runner_on_an_unreachable_server_refuses_writes_quickly():
    runner = Runner(store=f"redis://127.0.0.1:{free_port()}/0")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        runner.submit(BackgroundTask(print, "never"))
    assert time.monotonic() - started < 5


@pytest.mark.process
def test_without_redis_py_the_error_says_what_to_install():
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "from backbeat.stores import open_store\n"
        "import asyncio\n"
        "store = open_store('redis://127.0.0.1:1/0')\n"
        "try:\n"
        "    asyncio.run(store.open())\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "StoreError" in result.stdout
    assert "pip install 'backbeat[redis]'" in result.stdout


@pytest.fixture
def store_url_redis(redis_server):
    from tests.redis_server import forget, fresh_prefix_url

    url = fresh_prefix_url(redis_server)
    yield url
    forget(url)


_tried: set[str] = set()
_started: dict[str, float] = {}


async def _fails_once(label: str) -> None:
    if label not in _tried:
        _tried.add(label)
        raise RuntimeError("the first attempt fails")
    _started[label] = time.time()


@pytest.mark.redis
async def test_a_retry_wakes_an_idle_worker_at_its_due_time(store_url_redis):
    """The worker records a failure (the retry rings the bell) while it waits on the
    streams and, poked by the failed task's end, claims too: that claim must not make the
    wait miss the ring (it did: 10-50% of retries started up to a whole wait late)."""
    import anyio

    writer = Runner(store=store_url_redis, execute=False)
    worker = Runner(store=store_url_redis, poll_interval=30.0)  # waits end at 1.5 s at most
    for runner in (writer, worker):
        runner.register(_fails_once)
    late: list[float] = []
    async with writer, worker:
        await anyio.sleep(0.3)  # the worker is idle, blocked on the streams
        for n in range(30):
            label = f"retry{n}"
            task = BackgroundTask(_fails_once, label).using(retries=1, backoff=0.05)
            task_id = await writer.asubmit(task)
            with anyio.fail_after(5):
                while label not in _started:  # noqa: ASYNC110 - the task fills the dict
                    await anyio.sleep(0.002)
            stored = await worker.aget(task_id)
            assert stored is not None and stored.attempts == 2
            assert worker.store is not None
            status = await worker.store.get(task_id)
            assert status is not None
            late.append(_started[label] - status.due_at)  # due_at: when the retry was due
    assert max(late) < 0.5, sorted(late)[-5:]  # a missed ring cost up to 1.5 s here


@pytest.mark.redis
async def test_clocks_that_differ_cost_one_refused_write_at_most(store_url_redis):
    """The deadline of a write is on Redis's clock, measured from the replies: a store that
    has it wrong by 5 s (a host whose clock is off, before any quick reply told it) has one
    write refused, learns the offset from that reply, and the next write goes through."""
    store = RedisStore(store_url_redis)
    await store.open()
    store._marker.clock_offset -= 5.0  # as if this host's clock were 5 s ahead of Redis's
    with pytest.raises(StoreUnavailable, match="after its deadline"):
        await store.enqueue([new_task()])
    [task_id] = await store.enqueue([new_task()])
    assert (await store.get(task_id)).state == "pending"
    assert (await store.counts())["pending"] == 1  # the refused write stored nothing
    await store.close()


@pytest.mark.redis
async def test_heartbeats_expire_on_redis_clock_not_the_senders(store_url_redis, monkeypatch):
    """A host whose clock is 20 s behind still beats: expiry is kept on Redis's clock and
    given back on the reader's, so a lagging clock does not make a live worker look dead."""
    import backbeat.stores.redis as redis_module
    from backbeat.stores.base import WorkerInfo

    store = open_store(store_url_redis)
    await store.open()
    real_time = time.time
    monkeypatch.setattr(redis_module.time, "time", lambda: real_time() - 20)
    await store.heartbeat(WorkerInfo("lagging", "host", 42, None, 1, 0, real_time()), 10)
    monkeypatch.setattr(redis_module.time, "time", real_time)
    [worker] = await store.workers()
    assert worker.name == "lagging"
    assert 8 < worker.expires_at - time.time() <= 10.5
    await store.close()


@pytest.mark.redis
async def test_delete_removes_the_tasks_attempt_history_as_purge_does(store_url_redis):
    store = open_store(store_url_redis)
    await store.open()
    task = new_task(retries=1)
    await store.enqueue([task])
    [first] = await store.claim("w", 1, 30)
    await store.finish([failed(first, "OSError: one", "Traceback: one", time.time())])
    [second] = await store.claim("w", 1, 30)
    await store.finish([failed(second, "OSError: two", "Traceback: two")])
    history = f"{{{store.prefix}}}:a:{task.id}"
    client = raw_client(store_url_redis, asyncio=True)
    try:
        assert await client.llen(history) == 2  # the history is kept under this key
        assert await store.delete([task.id]) == 1
        assert await client.exists(history) == 0
    finally:
        await client.aclose()
    assert await store.attempts(task.id) == []
    await store.close()


@pytest.mark.redis
async def test_finished_then_purged_tasks_leave_no_keys_or_stream_entries(store_url_redis):
    store = open_store(store_url_redis)
    await store.open()
    first, keyed = new_task(), new_task(key="order-1", queue="mail", priority=2)
    follower = new_task(after=(first.id,))
    retried, cancelled = new_task(retries=1), new_task(due_in=60)
    await store.enqueue([first, keyed, follower, retried, cancelled])
    await store.cancel([cancelled.id], "not needed")
    while claims := await store.claim("w", 10, 30):
        for claim in claims:
            if claim.id == retried.id and claim.attempts == 1:
                await store.finish([failed(claim, "OSError: once", "Traceback", time.time())])
            elif claim.id == retried.id:
                await store.finish([failed(claim, "OSError: twice", "Traceback")])
            else:
                await store.finish([succeeded(claim)])
    assert await store.counts() == {
        **dict.fromkeys(await store.counts(), 0),
        "succeeded": 3,
        "failed": 1,
        "cancelled": 1,
    }
    ids = [first.id, keyed.id, follower.id, retried.id, cancelled.id]
    assert await store.purge(time.time() + 1, ("succeeded", "failed", "cancelled")) == 5
    client = raw_client(store_url_redis, asyncio=True)
    try:
        keys = sorted([key async for key in client.scan_iter(match=f"*{store.prefix}*")])
        left = [key for key in keys if any(task_id in key for task_id in ids)]
        assert left == []  # no task hash, attempt list, dependants set
        tag = "{" + store.prefix + "}"
        streams = [key for key in keys if key.startswith(f"{tag}:x:")]
        others = {key.removeprefix(tag) for key in keys if key not in streams}
        assert others <= {":queues", ":streams", ":bell", ":made"}  # the store's own
        assert f"{tag}:x:mail:2" in streams
        for stream in streams:
            assert await client.xlen(stream) == 0, stream
            assert (await client.xpending(stream, "backbeat"))["pending"] == 0, stream
    finally:
        await client.aclose()
    assert await store.list_tasks() == []
    await store.close()


@pytest.mark.redis
async def test_a_list_goes_on_page_by_page_past_the_first_calls_ids(store_url_redis):
    store = open_store(store_url_redis)
    oldest = new_task(name="reports.rare")
    await store.enqueue([oldest])
    await store.enqueue([new_task() for _ in range(2_500)])  # more than two calls' pages
    newest = new_task(name="reports.rare")
    await store.enqueue([newest])
    found = await store.list_tasks(name="reports.rare", limit=5)
    assert [task.id for task in found] == [newest.id, oldest.id]
    [again] = await store.list_tasks(name="reports.rare", before=newest.id)
    assert again.id == oldest.id
    assert len(await store.list_tasks(limit=1_200)) == 1_200
    await store.close()
