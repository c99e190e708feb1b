import asyncio
import contextvars
import functools
import inspect
import logging
import threading

import anyio
import pytest

from backbeat import BackgroundTask, BackgroundTasks, Task, Tasks, task
from tests.helpers import WaiterAndStarter

pytestmark = pytest.mark.anyio

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


async def record(log: list[str], item: str) -> None:
    log.append(item)


async def sleep_forever(log: list[str]) -> None:
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        log.append("cancelled")
        raise


async def explode(message: str = "boom") -> None:
    raise RuntimeError(message)


def sync_record(log: list[str], item: str) -> None:
    log.append(
        f"{item}@{'main' if threading.current_thread() is threading.main_thread() else 'worker'}"
    )


# --- the seed API -----------------------------------------------------------------


def test_background_task_keeps_func_args_kwargs():
    t = BackgroundTask(record, ["x"], item="a")
    assert t.func is record
    assert t.args == (["x"],)
    assert t.kwargs == {"item": "a"}


def test_sync_func_attribute_is_an_async_callable():
    t = BackgroundTask(sync_record, [], "a")
    assert inspect.iscoroutinefunction(t.func)
    coro = t.func([], "a")
    assert asyncio.iscoroutine(coro)
    coro.close()


async def test_awaiting_a_task_runs_it():
    log: list[str] = []
    await BackgroundTask(record, log, item="async")()
    await BackgroundTask(sync_record, log, "sync")()
    assert log == ["async", "sync@worker"]


async def test_partials_and_async_callable_objects_run_on_the_loop():
    log: list[str] = []

    class Notifier:
        async def __call__(self, item: str) -> None:
            log.append(f"{item}:{threading.current_thread() is threading.main_thread()}")

    await BackgroundTask(functools.partial(record, log), "partial")()
    await BackgroundTask(Notifier(), "object")()
    assert log == ["partial", "object:True"]


def test_lilya_names_are_the_same_classes():
    assert Task is BackgroundTask
    assert Tasks is BackgroundTasks
    assert issubclass(BackgroundTasks, BackgroundTask)


def test_background_tasks_copies_the_list_it_is_given():
    given = [BackgroundTask(record, [], "a")]
    tasks = BackgroundTasks(tasks=given)
    assert tasks.tasks == given
    assert tasks.tasks is not given
    assert BackgroundTasks().tasks == []
    assert BackgroundTasks().tasks is not BackgroundTasks().tasks
    assert tasks.as_group is False
    assert BackgroundTasks(as_group=True).as_group is True


def test_add_task_appends_and_returns_the_new_task():
    tasks = BackgroundTasks()
    added = tasks.add_task(record, [], item="a")
    assert isinstance(added, BackgroundTask)
    assert tasks.tasks == [added]
    assert added.kwargs == {"item": "a"}


async def test_run_single_runs_in_order():
    log: list[str] = []

    async def slow(item: str) -> None:
        await asyncio.sleep(0.02)
        log.append(item)

    tasks = BackgroundTasks([BackgroundTask(slow, "first"), BackgroundTask(record, log, "second")])
    tasks.add_task(sync_record, log, "third")
    await tasks()
    assert log == ["first", "second", "third@worker"]


async def test_run_as_group_runs_concurrently():
    # In sequence the waiter would wait forever; as a group it is released.
    pair = WaiterAndStarter()
    tasks = BackgroundTasks(
        [BackgroundTask(pair.waiter), BackgroundTask(pair.starter)], as_group=True
    )
    with anyio.fail_after(2):
        await tasks()
    assert sorted(pair.log) == ["starter", "waiter"]


# --- ids and names ------------------------------------------------------------------


def test_every_task_has_a_sortable_unique_id():
    tasks = [BackgroundTask(record, [], str(i)) for i in range(100)]
    ids = [t.id for t in tasks]
    assert len(set(ids)) == 100
    # Sorted by creation to the millisecond: the first 10 characters are the time.
    assert [i[:10] for i in ids] == sorted(i[:10] for i in ids)
    assert BackgroundTasks().id[:10] >= ids[-1][:10]


def test_default_name_is_module_and_qualname():
    assert BackgroundTask(record, [], "a").name == f"{__name__}:record"
    assert BackgroundTask(functools.partial(record, [])).name == f"{__name__}:record"


def test_task_decorator_names_the_function_and_leaves_it_callable():
    @task(name="emails.send")
    async def send(message: str) -> str:
        return message.upper()

    @task
    def plain() -> int:
        return 7

    assert BackgroundTask(send, "hi").name == "emails.send"
    assert BackgroundTask(plain).name.endswith(
        ":test_task_decorator_names_the_function_and_leaves_it_callable.<locals>.plain"
    )
    assert plain() == 7
    assert asyncio.run(send("hi")) == "HI"


def test_task_decorator_rejects_what_it_cannot_mark():
    with pytest.raises(TypeError, match="needs a function"):
        task(name="x")(42)  # type: ignore[type-var]
    with pytest.raises(TypeError, match="cannot mark <built-in function len>"):
        task(len)


# --- isolation ------------------------------------------------------------------------


async def test_a_failing_task_is_logged_and_does_not_escape(backbeat_log):
    t = BackgroundTask(explode, "kaboom")
    await t()  # must not raise
    [entry] = backbeat_log.records
    assert entry.levelno == logging.ERROR
    assert f"{__name__}:explode" in entry.getMessage()
    assert t.id in entry.getMessage()
    assert "kaboom" in entry.getMessage()
    assert entry.exc_info is not None and entry.exc_info[0] is RuntimeError


async def test_a_failure_in_sequence_skips_nothing(backbeat_log):
    log: list[str] = []
    tasks = BackgroundTasks(
        [
            BackgroundTask(record, log, "before"),
            BackgroundTask(explode),
            BackgroundTask(sync_record, log, "after"),
        ]
    )
    tasks.add_task(functools.partial(explode, "second failure"))
    tasks.add_task(record, log, "last")
    await tasks()
    assert log == ["before", "after@worker", "last"]
    failures = backbeat_log.records
    assert len(failures) == 2


async def test_a_failure_in_a_group_cancels_no_sibling(backbeat_log):
    log: list[str] = []

    async def slow_sibling() -> None:
        await asyncio.sleep(0.05)
        log.append("sibling finished")

    tasks = BackgroundTasks([BackgroundTask(explode), BackgroundTask(slow_sibling)], as_group=True)
    await tasks()
    assert log == ["sibling finished"]
    assert len(backbeat_log.records) == 1


async def test_sync_task_failures_are_isolated_too(backbeat_log):
    log: list[str] = []

    def bad() -> None:
        raise ValueError("sync failure")

    await BackgroundTasks([BackgroundTask(bad), BackgroundTask(record, log, "ok")])()
    assert log == ["ok"]
    assert any("sync failure" in m for m in backbeat_log.messages())


async def test_things_appended_to_tasks_by_hand_are_isolated(backbeat_log):
    log: list[str] = []
    tasks = BackgroundTasks()
    tasks.tasks.append(explode)  # type: ignore[arg-type]
    tasks.add_task(record, log, "ok")
    await tasks()
    assert log == ["ok"]


@pytest.mark.parametrize("as_group", [False, True])
async def test_cancellation_is_never_swallowed(as_group):
    log: list[str] = []

    tasks = BackgroundTasks(
        [BackgroundTask(sleep_forever, log), BackgroundTask(record, log, "after")],
        as_group=as_group,
    )
    with anyio.move_on_after(0.1) as scope:
        await tasks()
    assert scope.cancelled_caught
    # In a group the sibling ran alongside; in sequence it never started.
    assert log == (["after", "cancelled"] if as_group else ["cancelled"])


async def test_cancelling_the_awaiting_task_cancels_a_context_task():
    log: list[str] = []

    runner = asyncio.create_task(BackgroundTask(sleep_forever, log)())
    await asyncio.sleep(0.05)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert log == ["cancelled"]


# --- context --------------------------------------------------------------------------


async def test_a_task_sees_the_context_of_its_creation():
    seen: list[str] = []

    async def read() -> None:
        seen.append(request_id.get())

    def read_sync() -> None:
        seen.append("sync:" + request_id.get())

    token = request_id.set("req-1")
    tasks = BackgroundTasks([BackgroundTask(read), BackgroundTask(read_sync)])
    request_id.set("req-2")
    tasks.add_task(read)
    request_id.reset(token)
    await tasks()
    assert seen == ["req-1", "sync:req-1", "req-2"]


async def test_a_task_cannot_change_its_callers_context():
    async def change() -> None:
        request_id.set("changed by task")

    token = request_id.set("caller")
    await BackgroundTask(change)()
    assert request_id.get() == "caller"
    request_id.reset(token)


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize("not_callable", [None, 3, "send_email"])
def test_a_non_callable_func_is_a_type_error_naming_it(not_callable):
    with pytest.raises(TypeError) as info:
        BackgroundTask(not_callable)
    assert repr(not_callable) in str(info.value)


def test_add_task_rejects_non_callables():
    with pytest.raises(TypeError, match="'oops'"):
        BackgroundTasks().add_task("oops")


def test_tasks_must_be_an_iterable_of_tasks():
    single = BackgroundTask(record, [], "a")
    with pytest.raises(TypeError, match="wrap a single task in a list"):
        BackgroundTasks(tasks=single)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"got <function record .*> \(function\) at index 1"):
        BackgroundTasks(tasks=[single, record])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="expects a list of BackgroundTask, got 42"):
        BackgroundTasks(tasks=42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expects BackgroundTask items"):
        BackgroundTasks(tasks="ab")  # type: ignore[arg-type]


async def test_a_deep_copy_runs_its_own_tasks_in_the_same_context():
    """Frameworks deep-copy route handlers with their tasks (a Litestar Router does)."""
    import copy

    ran: list[tuple[str, str]] = []
    where: contextvars.ContextVar[str] = contextvars.ContextVar("where", default="-")

    async def note(label: str) -> None:
        ran.append((label, where.get()))

    where.set("request")
    original = BackgroundTasks([BackgroundTask(note, "a")])
    copied = copy.deepcopy(original)
    copied.add_task(note, "b")
    await copied()
    assert ran == [("a", "request"), ("b", "request")]
    assert len(original.tasks) == 1
