import asyncio
import functools
import inspect
import threading

import anyio
import anyio.to_thread
import pytest

from backbeat import enforce_async_callable, set_thread_limit
from backbeat.concurrency import DEFAULT_THREAD_LIMIT, synchronous, thread_limiter
from tests.helpers import ThreadProbe

pytestmark = pytest.mark.anyio


async def coroutine_function(x: int) -> int:
    return x + 1


def sync_function(x: int) -> tuple[int, bool]:
    return x + 1, threading.current_thread() is threading.main_thread()


class AsyncCallableObject:
    async def __call__(self, x: int) -> int:
        return x * 2


class SyncCallableObject:
    def __call__(self, x: int) -> int:
        return x * 3


def test_async_callables_are_returned_unchanged():
    partial = functools.partial(coroutine_function, 1)
    obj = AsyncCallableObject()
    assert enforce_async_callable(coroutine_function) is coroutine_function
    assert enforce_async_callable(partial) is partial
    assert enforce_async_callable(obj) is obj


async def test_sync_callables_run_in_a_worker_thread():
    wrapped = enforce_async_callable(sync_function)
    assert inspect.iscoroutinefunction(wrapped)  # as Lilya's and Starlette's checks expect
    assert synchronous(wrapped) is sync_function
    assert synchronous(sync_function) is None
    assert await wrapped(1) == (2, False)
    assert await enforce_async_callable(SyncCallableObject())(2) == 6
    assert await enforce_async_callable(functools.partial(sync_function, x=4))() == (5, False)


@pytest.mark.parametrize("not_callable", [None, 42, "send_email", [print]])
def test_non_callables_are_a_type_error_naming_the_object(not_callable):
    with pytest.raises(TypeError, match="needs a callable") as info:
        enforce_async_callable(not_callable)
    assert repr(not_callable) in str(info.value)


async def test_sync_tasks_use_backbeats_own_limiter_not_anyios_default():
    set_thread_limit(2)
    try:
        probe = ThreadProbe(seconds=0.1)
        default = anyio.to_thread.current_default_thread_limiter()
        async with anyio.create_task_group() as group:
            for _ in range(6):
                group.start_soon(enforce_async_callable(probe))
            await anyio.sleep(0.05)
            # The app's own threads are untouched by backbeat's work.
            assert default.borrowed_tokens == 0
            assert thread_limiter().borrowed_tokens == 2
        assert probe.peak == 2
    finally:
        set_thread_limit(DEFAULT_THREAD_LIMIT)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "4"])
def test_thread_limit_must_be_a_positive_int(bad):
    with pytest.raises(ValueError, match="positive int"):
        set_thread_limit(bad)


async def test_contextvars_reach_the_worker_thread():
    import contextvars

    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    var.set("request-42")
    assert await enforce_async_callable(var.get)() == "request-42"
    await asyncio.sleep(0)
