"""Helpers for testing apps that use backbeat.

`TestClient` is Starlette's test client that, inside ``with client:`` (where
the lifespan, and so the runner, runs), waits after every request until the
runner is idle, so a test can assert on what its tasks did::

    with TestClient(app) as client:
        client.post("/register", json=...)
        assert sent_emails == [...]

For unit tests that want a task's exception to fail the test, make the app
with an eager runner: ``App(routes=..., runner=Runner(eager=True))`` runs each
task inline in the request, retries without waiting, skips delays and
re-raises the last error (the test client then raises it).
"""

from __future__ import annotations

from typing import Any

import starlette.testclient

from backbeat.runner import Runner


def find_runner(app: Any) -> Runner | None:
    """The runner of an `App` or of a `BackbeatMiddleware` (also nested in middleware)."""
    seen = 0
    while app is not None and seen < 64:
        runner = getattr(app, "runner", None)
        if isinstance(runner, Runner):
            return runner
        app = getattr(app, "app", None)
        seen += 1
    return None


class TestClient(starlette.testclient.TestClient):
    __test__ = False  # not a pytest test class

    def __init__(self, app: Any, *args: Any, runner: Runner | None = None, **kwargs: Any) -> None:
        super().__init__(app, *args, **kwargs)
        self.runner = runner if runner is not None else find_runner(app)

    def request(self, *args: Any, **kwargs: Any) -> Any:
        response = super().request(*args, **kwargs)
        self.wait_for_tasks()
        return response

    def wait_for_tasks(self, timeout: float | None = 30.0) -> None:
        """Block until the runner is idle (inside ``with client:``; a no-op outside)."""
        portal = getattr(self, "portal", None)
        if self.runner is not None and self.runner.running and portal is not None:
            portal.call(self.runner.join, timeout)
