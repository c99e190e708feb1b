"""backbeat's pytest plugin (registered as the ``backbeat`` entry point of ``pytest11``).

Fixtures:

- ``backbeat_runner`` — a fresh in-memory `Runner`, not started: start it with
  ``async with runner:``, an `App`'s lifespan or ``backbeat.testing.TestClient``;
  ``await runner.join()`` waits for its tasks.
- ``backbeat_eager_runner`` — ``Runner(eager=True)``: every task runs inline
  where it is handed over; its exception is raised right there (not watched
  below: the test sees it in place).

Both hand tasks their arguments through JSON and back (``round_trip=True``), as
a store would: a test sees the types production with a store will see.
- ``backbeat_store`` — the URL of a fresh SQLite store in the test's ``tmp_path``.
- ``backbeat_sqlite_runner`` — a `Runner` on that store, not started.

A task that fails for good under the other runners fails the test at its
end, naming the task (a background failure is a failure, even though no
request saw it). Mark a test ``@pytest.mark.backbeat_failures_ok`` when it
makes tasks fail on purpose; ``backbeat_failures`` lists what failed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from backbeat.runner import Runner
from backbeat.status import TaskInfo

__all__ = [
    "backbeat_eager_runner",
    "backbeat_failures",
    "backbeat_runner",
    "backbeat_sqlite_runner",
    "backbeat_store",
]

Failures = list[tuple[TaskInfo, BaseException]]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "backbeat_failures_ok: tasks of this test may fail for good on purpose"
    )


@pytest.fixture
def backbeat_failures() -> Failures:
    """The tasks of this test's backbeat runners that failed for good, with their errors."""
    return []


@pytest.fixture
def backbeat_store(tmp_path: Path) -> str:
    """A fresh SQLite store's URL in the test's temporary directory."""
    return f"sqlite:///{tmp_path}/backbeat.db"


@pytest.fixture
def backbeat_runner(
    request: pytest.FixtureRequest, backbeat_failures: Failures
) -> Iterator[Runner]:
    """A fresh in-memory runner (not started) that hands tasks their arguments as a store
    would; its tasks' final failures fail the test."""
    yield from _watched(Runner(round_trip=True), request, backbeat_failures)


@pytest.fixture
def backbeat_eager_runner() -> Runner:
    """``Runner(eager=True)``: tasks run inline where they are handed over, and raise there
    (so `pytest.raises` around the request or the submit sees a task's exception)."""
    return Runner(eager=True, round_trip=True)


@pytest.fixture
def backbeat_sqlite_runner(
    request: pytest.FixtureRequest, backbeat_failures: Failures, backbeat_store: str
) -> Iterator[Runner]:
    """A runner on `backbeat_store` (not started); its tasks' final failures fail the test."""
    yield from _watched(Runner(store=backbeat_store), request, backbeat_failures)


def _watched(
    runner: Runner, request: pytest.FixtureRequest, failures: Failures
) -> Iterator[Runner]:
    def failed(info: TaskInfo, exc: BaseException) -> None:
        failures.append((info, exc))

    runner.add_failure_listener(failed)
    try:
        yield runner
    finally:
        runner.remove_failure_listener(failed)
    if failures and request.node.get_closest_marker("backbeat_failures_ok") is None:
        lines = [f"  {info.name!r} (id {info.id}): {info.error}" for info, _ in failures]
        pytest.fail(
            "background task(s) failed for good:\n"
            + "\n".join(lines)
            + "\n(mark the test @pytest.mark.backbeat_failures_ok if that is expected)",
            pytrace=False,
        )
