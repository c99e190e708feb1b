"""Module-level task functions for the durable tests (durable tasks need names)."""

import asyncio
import contextvars
import os
import time
import uuid
from decimal import Decimal

from backbeat import Runner, progress, task

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
calls: list[tuple[str, object]] = []


def mark(line: str) -> None:
    path = os.environ.get("BACKBEAT_TEST_OUT")
    if path:
        with open(path, "a") as out:
            out.write(f"{line} {os.getpid()} {time.time()}\n")


async def record(label: str, amount: Decimal, ident: uuid.UUID) -> None:
    calls.append((label, (amount, ident, request_id.get())))


def record_sync(label: str, padding: str = "") -> None:
    calls.append((label, "sync"))


@task(name="tests.flaky", retries=1, backoff=0.01)
async def flaky(label: str) -> None:
    calls.append((label, "attempt"))
    raise ConnectionError(f"{label} failed")


async def sleep_and_mark(seconds: float, label: str) -> None:
    await asyncio.sleep(seconds)
    mark(label)


async def mark_start_and_sleep(seconds: float, label: str) -> None:
    mark(f"start:{label}")
    await asyncio.sleep(seconds)
    mark(label)


def fail_unless(path: str) -> None:
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing")
    calls.append(("fail_unless", path))


def runner(store: object, **options: object) -> Runner:
    """A durable runner that may run this module's plain functions (as an app would declare)."""
    made = Runner(store=store, **options)  # type: ignore[arg-type]
    made.register_module(__name__)
    return made


_failed_once: set[str] = set()


@task(name="tests.fails_once", retries=1, backoff=0.01)
async def fails_once(label: str) -> str:
    if label not in _failed_once:
        _failed_once.add(label)
        raise ConnectionError(f"{label}: first attempt fails")
    return f"{label} done"


async def total(numbers: list[float]) -> dict[str, float]:
    return {"sum": sum(numbers), "count": len(numbers)}


async def stepwise(steps: int, pause: float) -> str:
    for step in range(1, steps + 1):
        await asyncio.sleep(pause)
        progress(step / steps, f"step {step} of {steps}", step=step)
    return "done"


def stepwise_sync(steps: int) -> None:
    for step in range(1, steps + 1):
        time.sleep(0.02)
        progress(step / steps, step=step)


# When each call of `timed` started and ended (time.monotonic()), by label.
timings: dict[str, list[float]] = {}


async def timed(label: str) -> None:
    timings.setdefault(label, []).append(time.monotonic())
    timings[label].append(time.monotonic())


@task(name="tests.fails_then_succeeds", retries=3, backoff=0.05, max_backoff=0.05)
async def fails_then_succeeds(label: str) -> None:
    timings.setdefault(label, []).append(time.monotonic())
    if len(timings[label]) < 3:
        raise ConnectionError(f"{label}: attempt {len(timings[label])} fails")
