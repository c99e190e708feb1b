import asyncio
import contextvars
import time
from datetime import UTC

import anyio
import anyio.to_thread
import pytest

from backbeat import BackgroundTask, BackgroundTasks, Runner, RunnerFull, TaskState, task
from backbeat.concurrency import DEFAULT_THREAD_LIMIT, set_thread_limit
from backbeat.tasks import current_runner
from tests.helpers import ThreadProbe, WaiterAndStarter

pytestmark = pytest.mark.anyio

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


async def noop() -> None:
    pass


async def sleep_then(log: list[str], seconds: float, item: str) -> None:
    await asyncio.sleep(seconds)
    log.append(item)


class Flaky:
    """Fails `failures` times, then succeeds."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(f"failure {self.calls}")
        return "ok"


async def hand_off(runner: Runner, task: BackgroundTask) -> None:
    """What a response does with its background under a runner: `await task()`."""
    token = current_runner.set(runner)
    try:
        await task()
    finally:
        current_runner.reset(token)


# --- basics ------------------------------------------------------------------------------


async def test_submit_runs_the_task_and_records_its_status():
    async with Runner() as runner:
        t = BackgroundTask(noop)
        assert runner.submit(t) == t.id
        await runner.join(timeout=5)
        info = runner.get(t.id)
    assert info is not None
    assert (info.id, info.state, info.attempts, info.error) == (t.id, "succeeded", 1, None)
    assert info.name.endswith(":noop")
    assert info.created_at.tzinfo is UTC
    assert info.created_at <= info.started_at <= info.finished_at
    assert runner.stats()["succeeded"] == 1
    assert runner.get("no-such-id") is None


async def test_status_moves_from_pending_to_running_to_done():
    gate = anyio.Event()

    async def wait_for_gate() -> None:
        await gate.wait()

    async with Runner(concurrency=1) as runner:
        first, second = BackgroundTask(wait_for_gate), BackgroundTask(noop)
        runner.submit(first)
        runner.submit(second)
        assert runner.get(second.id).state == TaskState.PENDING
        await asyncio.sleep(0.01)
        assert runner.get(first.id).state == TaskState.RUNNING
        assert runner.stats() == {
            "pending": 1,
            "scheduled": 0,
            "running": 1,
            "succeeded": 0,
            "failed": 0,
            "cancelled": 0,
        }
        gate.set()
        await runner.join(timeout=5)
        assert runner.get(second.id).state == TaskState.SUCCEEDED


async def test_get_is_safe_from_another_thread():
    async with Runner() as runner:
        t = BackgroundTask(noop)
        runner.submit(t)
        await runner.join(timeout=5)
        info = await anyio.to_thread.run_sync(runner.get, t.id)
    assert info.state == "succeeded"
    assert (await runner.aget(t.id)) == info


async def test_join_times_out():
    async with Runner(shutdown_timeout=0) as runner:
        runner.submit(BackgroundTask(asyncio.sleep, 5))
        with pytest.raises(TimeoutError):
            await runner.join(timeout=0.05)


async def test_submit_needs_a_running_runner_and_a_task():
    runner = Runner()
    with pytest.raises(RuntimeError, match="not running"):
        runner.submit(BackgroundTask(noop))
    async with runner:
        with pytest.raises(TypeError, match="expects a BackgroundTask"):
            runner.submit(noop)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("concurrency", 0),
        ("max_pending", -1),
        ("keep_finished", 1.5),
        ("max_lost_leases", True),
        ("max_task_size", 0),
        ("shutdown_timeout", -1),
        ("overflow_timeout", "10"),
        ("finished_ttl", -0.5),
        ("lease", None),
        ("poll_interval", -1),
    ],
)
def test_bad_runner_options_are_value_errors(option, value):
    # The stored feeder's numbers too, without a store: the mistake shows before one is used.
    with pytest.raises(ValueError, match=rf"Runner\({option}=\.\.\.\) must be"):
        Runner(**{option: value})


async def test_observers_are_checked_and_a_removed_failure_listener_hears_nothing():
    runner = Runner()
    with pytest.raises(TypeError, match=r"add_observer expects a backbeat\.observers\.Observer"):
        runner.add_observer(object())  # type: ignore[arg-type]
    removed: list[str] = []
    kept: list[str] = []

    def listen(info, exc):
        removed.append(info.id)

    runner.remove_failure_listener(listen)  # never added: nothing to remove
    runner.add_failure_listener(listen)
    runner.add_failure_listener(lambda info, exc: kept.append(info.id))
    runner.remove_failure_listener(listen)
    async with runner:
        task_id = runner.submit(BackgroundTask(Flaky(failures=1)))
        await runner.join(timeout=5)
    assert (removed, kept) == ([], [task_id])


# --- limits ---------------------------------------------------------------------------------


async def test_at_most_concurrency_tasks_run_at_once():
    running = peak = 0

    async def tracked() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1

    async with Runner(concurrency=3) as runner:
        for _ in range(12):
            runner.submit(BackgroundTask(tracked))
        await runner.join(timeout=5)
    assert peak == 3
    assert runner.stats()["succeeded"] == 12


async def test_sync_tasks_also_respect_the_thread_limiter():
    set_thread_limit(2)
    probe = ThreadProbe(seconds=0.05)
    try:
        async with Runner(concurrency=10) as runner:
            for _ in range(6):
                runner.submit(BackgroundTask(probe))
            await runner.join(timeout=5)
    finally:
        set_thread_limit(DEFAULT_THREAD_LIMIT)
    assert probe.peak == 2


async def test_submit_beyond_max_pending_raises_runner_full():
    async with Runner(concurrency=1, max_pending=2, shutdown_timeout=0) as runner:
        runner.submit(BackgroundTask(asyncio.sleep, 5))  # running
        await asyncio.sleep(0)
        runner.submit(BackgroundTask(noop))
        runner.submit(BackgroundTask(noop))
        with pytest.raises(RunnerFull, match="max_pending"):
            runner.submit(BackgroundTask(noop))


async def test_a_full_runner_makes_the_request_wait_for_room():
    log: list[str] = []
    async with Runner(concurrency=1, max_pending=1, overflow_timeout=5) as runner:
        runner.submit(BackgroundTask(sleep_then, log, 0.1, "first"))
        await asyncio.sleep(0)
        runner.submit(BackgroundTask(sleep_then, log, 0, "second"))
        started = time.monotonic()
        late = BackgroundTask(sleep_then, log, 0, "third")
        await hand_off(runner, late)  # waits until "first" finishes and "second" starts
        waited = time.monotonic() - started
        assert runner.get(late.id) is not None
        await runner.join(timeout=5)
    assert 0.05 < waited < 1
    assert log == ["first", "second", "third"]


async def test_when_no_room_comes_the_task_runs_inline_rather_than_being_dropped(backbeat_log):
    log: list[str] = []
    async with Runner(
        concurrency=1, max_pending=1, overflow_timeout=0.05, shutdown_timeout=0
    ) as runner:
        runner.submit(BackgroundTask(asyncio.sleep, 5))
        await asyncio.sleep(0)
        runner.submit(BackgroundTask(noop))
        await hand_off(runner, BackgroundTask(log.append, "ran inline"))
        assert log == ["ran inline"]
    assert any("overflow_timeout" in m for m in backbeat_log.messages(30))


# --- policy: retries, timeouts, delays -----------------------------------------------------------


async def test_retries_until_success_with_hooks():
    events: list[tuple[str, str, int]] = []
    flaky = Flaky(failures=2)

    async def on_error(info, exc):
        events.append(("error", str(exc), info.attempts))

    def on_retry(info, exc):
        events.append(("retry", info.state, info.attempts))

    def on_start(info):
        events.append(("start", info.state, info.attempts))

    def on_success(info):
        events.append(("success", info.state, info.attempts))

    async with Runner(
        on_start=on_start, on_success=on_success, on_error=on_error, on_retry=on_retry
    ) as runner:
        t = BackgroundTask(flaky).using(retries=3, backoff=0.01)
        runner.submit(t)
        await runner.join(timeout=5)
    info = runner.get(t.id)
    assert (info.state, info.attempts, flaky.calls) == ("succeeded", 3, 3)
    assert info.error == "ConnectionError: failure 2"  # the last failure is kept
    assert events == [
        ("start", "running", 1),
        ("error", "failure 1", 1),
        ("retry", "scheduled", 1),
        ("start", "running", 2),
        ("error", "failure 2", 2),
        ("retry", "scheduled", 2),
        ("start", "running", 3),
        ("success", "succeeded", 3),
    ]


async def test_after_the_last_attempt_the_task_is_failed_and_logged(backbeat_log):
    flaky = Flaky(failures=10)

    @task(name="flaky.job", retries=2, backoff=0.01)
    async def job() -> None:
        await flaky()

    async with Runner() as runner:
        t = BackgroundTask(job)
        runner.submit(t)
        await runner.join(timeout=5)
    info = runner.get(t.id)
    assert (info.state, info.attempts, info.error) == ("failed", 3, "ConnectionError: failure 3")
    assert runner.stats()["failed"] == 1
    [final] = [r for r in backbeat_log.records if r.levelname == "ERROR"]
    assert "'flaky.job'" in final.getMessage() and "after 3 attempts" in final.getMessage()
    assert final.exc_info is not None
    retries = [r for r in backbeat_log.records if r.levelname == "WARNING"]
    assert len(retries) == 2 and "retrying in" in retries[0].getMessage()


async def test_retry_waits_follow_the_backoff():
    starts: list[float] = []
    flaky = Flaky(failures=2)

    async def timed() -> None:
        starts.append(time.monotonic())
        await flaky()

    async with Runner() as runner:
        runner.submit(BackgroundTask(timed).using(retries=2, backoff=0.1))
        await runner.join(timeout=5)
    first_wait, second_wait = starts[1] - starts[0], starts[2] - starts[1]
    # Jittered between half and all of backoff * 2**(n-1).
    assert 0.05 <= first_wait < 0.2
    assert 0.1 <= second_wait < 0.3


async def test_async_timeout_cancels_the_attempt():
    cancelled = anyio.Event()

    async def too_slow() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with Runner() as runner:
        t = BackgroundTask(too_slow).using(timeout=0.1)
        started = time.monotonic()
        runner.submit(t)
        await runner.join(timeout=5)
    assert time.monotonic() - started < 1
    assert cancelled.is_set()
    info = runner.get(t.id)
    assert (info.state, info.error) == ("failed", "TimeoutError: timed out after 0.1s")


async def test_sync_timeout_releases_the_slot_and_marks_the_task_failed():
    log: list[str] = []

    def blocking() -> None:
        time.sleep(0.5)
        log.append("thread finished anyway")

    async with Runner(concurrency=1) as runner:
        slow = BackgroundTask(blocking).using(timeout=0.05)
        after = BackgroundTask(log.append, "next task ran")
        runner.submit(slow)
        runner.submit(after)
        started = time.monotonic()
        await runner.join(timeout=5)
        elapsed = time.monotonic() - started
        assert runner.get(slow.id).error == "TimeoutError: timed out after 0.05s"
        assert log == ["next task ran"]  # the slot was released before the thread ended
        assert elapsed < 0.4
        await asyncio.sleep(0.6)
    assert log == ["next task ran", "thread finished anyway"]


async def test_delay_holds_the_task_back_from_its_creation():
    async with Runner() as runner:
        t = BackgroundTask(noop).using(delay=0.2)
        runner.submit(t)
        assert runner.get(t.id).state == TaskState.SCHEDULED
        await runner.join(timeout=5)
    info = runner.get(t.id)
    assert (info.started_at - info.created_at).total_seconds() >= 0.2


async def test_a_delay_already_served_does_not_wait_again():
    t = BackgroundTask(noop).using(delay=0.05)
    await asyncio.sleep(0.1)
    async with Runner() as runner:
        runner.submit(t)
        assert runner.get(t.id).state == TaskState.PENDING


def test_using_overrides_the_decorators_policy_and_validates():
    @task(retries=5, timeout=3)
    async def job() -> None: ...

    t = BackgroundTask(job)
    assert (t.policy.retries, t.policy.timeout) == (5, 3)
    assert t.using(retries=1, timeout=None) is t
    assert (t.policy.retries, t.policy.timeout) == (1, None)
    assert BackgroundTask(job).policy.retries == 5  # the function's policy is untouched
    with pytest.raises(ValueError, match="retries"):
        t.using(retries=-1)
    with pytest.raises(ValueError, match="timeout"):
        t.using(timeout=0)
    with pytest.raises(ValueError, match="backoff"):
        task(backoff="fast")  # type: ignore[arg-type]


async def test_a_task_raising_cancelled_error_on_its_own_is_a_failure():
    async def odd() -> None:
        raise asyncio.CancelledError()

    async with Runner() as runner:
        t = BackgroundTask(odd)
        runner.submit(t)
        await runner.join(timeout=5)
        assert runner.get(t.id).state == TaskState.FAILED


# --- order ------------------------------------------------------------------------------------


async def test_a_sequence_keeps_its_order_under_the_runner():
    log: list[str] = []
    sequence = BackgroundTasks(
        [
            BackgroundTask(sleep_then, log, 0.05, "first"),
            BackgroundTask(Flaky(failures=99)),
            BackgroundTask(sleep_then, log, 0, "third"),
        ]
    )
    async with Runner(concurrency=10) as runner:
        runner.submit(sequence)
        # Every member has a status at once, even those that wait their turn.
        states = [runner.get(member.id).state for member in sequence.tasks]
        assert states == ["pending", "pending", "pending"]
        await runner.join(timeout=5)
    assert log == ["first", "third"]
    assert [runner.get(m.id).state for m in sequence.tasks] == ["succeeded", "failed", "succeeded"]


async def test_a_groups_members_are_independent():
    pair = WaiterAndStarter()
    group = BackgroundTasks(
        [BackgroundTask(pair.waiter), BackgroundTask(pair.starter)], as_group=True
    )
    async with Runner() as runner:
        runner.submit(group)
        await runner.join(timeout=2)
    assert sorted(pair.log) == ["starter", "waiter"]


async def test_nested_collections_and_hand_added_callables():
    log: list[str] = []
    inner_group = BackgroundTasks(
        [BackgroundTask(sleep_then, log, 0.02, "g1"), BackgroundTask(sleep_then, log, 0, "g2")],
        as_group=True,
    )
    outer = BackgroundTasks([inner_group, BackgroundTask(log.append, "after group")])
    outer.tasks.append(lambda: log.append("appended by hand"))  # type: ignore[arg-type]
    async with Runner() as runner:
        runner.submit(outer)
        await runner.join(timeout=5)
    assert log == ["g2", "g1", "after group", "appended by hand"]


# --- context and identity -----------------------------------------------------------------------


async def test_tasks_see_their_creation_context_and_cannot_re_hand_off():
    seen: list[object] = []

    async def look() -> None:
        seen.append((request_id.get(), current_runner.get()))

    async with Runner() as runner:
        request_id.set("req-7")
        t = BackgroundTask(look)
        request_id.set("later")
        await hand_off(runner, t)
        await runner.join(timeout=5)
    assert seen == [("req-7", None)]


async def test_a_task_object_handed_over_twice_runs_twice_with_new_ids():
    log: list[str] = []
    shared = BackgroundTask(log.append, "x")
    async with Runner() as runner:
        await hand_off(runner, shared)
        await hand_off(runner, shared)
        await runner.join(timeout=5)
    assert log == ["x", "x"]
    assert runner.stats()["succeeded"] == 2
    assert runner.get(shared.id).state == "succeeded"


# --- retention ------------------------------------------------------------------------------------


async def test_finished_entries_are_kept_for_a_bounded_count():
    async with Runner(keep_finished=5) as runner:
        tasks = [BackgroundTask(noop) for _ in range(20)]
        for t in tasks:
            runner.submit(t)
        await runner.join(timeout=5)
    assert [runner.get(t.id) is not None for t in tasks] == [False] * 15 + [True] * 5
    assert runner.stats()["succeeded"] == 20  # totals survive forgetting


async def test_finished_entries_are_kept_for_a_bounded_time():
    async with Runner(finished_ttl=0.05) as runner:
        old = BackgroundTask(noop)
        runner.submit(old)
        await runner.join(timeout=5)
        assert runner.get(old.id) is not None
        await asyncio.sleep(0.1)
        runner.submit(BackgroundTask(noop))
        await runner.join(timeout=5)
        assert runner.get(old.id) is None


# --- hooks --------------------------------------------------------------------------------------


async def test_a_failing_hook_is_logged_and_changes_nothing(backbeat_log):
    def broken_hook(info) -> None:
        raise RuntimeError("hook bug")

    async with Runner(on_start=broken_hook, on_success=broken_hook) as runner:
        t = BackgroundTask(noop)
        runner.submit(t)
        await runner.join(timeout=5)
    assert runner.get(t.id).state == "succeeded"
    assert len([m for m in backbeat_log.messages() if "hook" in m]) == 2


# --- shutdown -------------------------------------------------------------------------------------


async def test_drain_finishes_what_it_can_then_cancels_and_logs_the_rest(backbeat_log):
    log: list[str] = []
    runner = Runner(concurrency=2, shutdown_timeout=0.3)
    await runner.start()
    short = BackgroundTask(sleep_then, log, 0.05, "short done")
    long = BackgroundTask(sleep_then, log, 10, "long done")
    waiting = BackgroundTask(log.append, "never")
    later = BackgroundTask(noop).using(delay=10)
    for t in (short, long, waiting, later):
        runner.submit(t)
    started = time.monotonic()
    await runner.drain()
    elapsed = time.monotonic() - started
    assert 0.25 < elapsed < 1.0
    # `waiting` got the slot `short` freed, so it ran too.
    assert log == ["short done", "never"]
    assert runner.get(long.id).state == "cancelled"
    assert runner.get(later.id).state == "cancelled"
    assert runner.get(long.id).error == "cancelled at shutdown while running"
    lost = [m for m in backbeat_log.messages() if "lost at shutdown" in m]
    assert any(long.id in m and "sleep_then" in m for m in lost)
    assert any(later.id in m and "scheduled" in m for m in lost)
    assert any("2 task(s) not finished" in m for m in backbeat_log.messages())
    assert not runner.running


async def test_after_drain_hand_offs_run_inline_and_the_runner_can_restart():
    log: list[str] = []
    runner = Runner()
    async with runner:
        pass
    await hand_off(runner, BackgroundTask(log.append, "inline"))
    assert log == ["inline"]
    async with runner:
        runner.submit(BackgroundTask(log.append, "restarted"))
        await runner.join(timeout=5)
    assert log == ["inline", "restarted"]


# --- eager mode ---------------------------------------------------------------------------------


async def test_eager_mode_runs_inline_retries_at_once_and_reraises():
    flaky = Flaky(failures=1)
    runner = Runner(eager=True)
    t = BackgroundTask(flaky).using(retries=1, backoff=60, delay=60)
    started = time.monotonic()
    await hand_off(runner, t)
    assert time.monotonic() - started < 1
    assert runner.get(t.id).state == "succeeded" and flaky.calls == 2
    with pytest.raises(ConnectionError, match="failure 1"):
        await hand_off(runner, BackgroundTask(Flaky(failures=5)))


async def test_submit_returns_the_id_each_run_is_kept_under():
    t = BackgroundTask(noop)
    async with Runner() as runner:
        first = runner.submit(t)
        second = runner.submit(t)
        await runner.join(timeout=5)
    assert first == t.id
    assert second != first
    assert runner.get(second).state == "succeeded"


async def test_what_only_a_store_does_is_nothing_or_an_error_naming_the_store():
    runner = Runner()
    with pytest.raises(ValueError, match="only a runner with a store can leave execution"):
        runner.executes = False
    with pytest.raises(ValueError, match="only a runner with a store has queues"):
        runner.queues = ["emails"]
    assert runner.executes and runner.queues is None and runner.store is None
    t = BackgroundTask(noop)
    async with runner:
        with pytest.raises(RuntimeError, match="only a runner with a store writes tasks ahead"):
            await runner.prepare(t)
        assert runner.get(t.id) is None  # nothing was taken
        # Names are a store's: nothing to keep, but a name that cannot be found still fails.
        runner.register_module(__name__)
        runner.register_tasks(t)
        assert runner.register(noop) == f"{__name__}:noop"
        with pytest.raises(TypeError):
            runner.register(lambda: None)
        assert await runner.wait_connected(0)  # no store to wait for
        assert runner.health() is None  # no worker
        assert runner.submit(t) == t.id
        await runner.join(timeout=5)
    assert runner.stored(t.id) is None  # kept in this process's table, not in a store
    assert [info.id for info in runner.local_tasks()] == [t.id]
