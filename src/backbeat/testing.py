"""Helpers for testing apps that use backbeat.

`TestClient` is Starlette's test client that, inside ``with client:`` (where
the lifespan, and so the runner, runs), waits after every request until the
runner is idle, so a test can assert on what its tasks did::

    with TestClient(app) as client:
        client.post("/register", json=...)
        assert sent_emails == [...]

A task that fails for good (its last attempt raised) during a request fails
the test: the client re-raises its exception after the request, as Starlette's
``raise_server_exceptions`` does for the handler's. Pass
``raise_task_exceptions=False`` to test failures on purpose.

Task arguments go through JSON and back on their way to the task, as a store
would hand them to a worker: an unannotated parameter gets a dict for a
pydantic model, a str for a datetime, in a test without a store as in
production with one, and an argument a store could not keep fails the test.
``TestClient(app, round_trip=False)`` hands over live objects (an app that
never uses a store). With a store, the store's own round trip is the one.

A runner with ``execute=False`` leaves its tasks to worker processes: the
client does not wait for those (they would never finish in this process);
look at them in the store, or run a worker.

For unit tests that want a task's exception right in the request, make the
app with an eager runner: ``App(routes=..., runner=Runner(eager=True))`` runs
each task inline, retries without waiting, skips delays and re-raises.
"""

from __future__ import annotations

from typing import Any

import starlette.testclient

from backbeat.applications import find_runner
from backbeat.runner import Runner
from backbeat.status import TaskInfo

__all__ = ["TestClient", "find_runner"]


class TestClient(starlette.testclient.TestClient):
    __test__ = False  # not a pytest test class

    def __init__(
        self,
        app: Any,
        *args: Any,
        runner: Runner | None = None,
        raise_task_exceptions: bool = True,
        round_trip: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, *args, **kwargs)
        self.runner = runner if runner is not None else find_runner(app)
        self.raise_task_exceptions = raise_task_exceptions
        self.round_trip = round_trip
        self.task_failures: list[tuple[TaskInfo, BaseException]] = []

    def __enter__(self) -> TestClient:
        super().__enter__()
        if self.runner is not None:
            self.runner.add_failure_listener(self._task_failed)
        return self

    def __exit__(self, *args: Any) -> None:
        try:
            super().__exit__(*args)
        finally:
            if self.runner is not None:
                self.runner.remove_failure_listener(self._task_failed)

    def _task_failed(self, info: TaskInfo, exc: BaseException) -> None:
        self.task_failures.append((info, exc))

    def request(self, *args: Any, **kwargs: Any) -> Any:
        runner = self.runner
        if runner is None:
            response = super().request(*args, **kwargs)
        else:
            # The tasks the request hands over get their arguments as a store would give
            # them (the runner's own setting again after: the app may be used elsewhere).
            usual = runner.round_trip
            runner.round_trip = self.round_trip
            try:
                response = super().request(*args, **kwargs)
            finally:
                runner.round_trip = usual
        self.wait_for_tasks()
        if self.raise_task_exceptions and self.task_failures:
            info, exc = self.task_failures[0]
            self.task_failures.clear()
            exc.add_note(
                f"raised by background task {info.name!r} (id {info.id}) after the response; "
                "TestClient(..., raise_task_exceptions=False) lets a test expect it"
            )
            raise exc
        return response

    def wait_for_tasks(self, timeout: float | None = 30.0) -> None:
        """Block until the runner has run what it took (inside ``with client:``; else no-op).

        Tasks left to workers (a runner with ``execute=False``) are not waited for.
        """
        portal = getattr(self, "portal", None)
        runner = self.runner
        if runner is not None and runner.running and runner.executes and portal is not None:
            portal.call(runner.join, timeout)
