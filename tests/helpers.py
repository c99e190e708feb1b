"""Small tools shared by the tests."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import anyio


async def asgi_call(
    app: Any, method: str = "POST", path: str = "/x", sent: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Call an ASGI app once, directly, with an empty body; return the messages it sent.

    Pass `sent` to watch the messages arrive while the call is still running.
    """
    sent = [] if sent is None else sent
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "http_version": "1.1",
        "scheme": "http",
        "server": ("test", 80),
        "client": ("test", 1),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


class ThreadProbe:
    """A sync task body that records how many copies of it ran at once."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.running = 0
        self.peak = 0
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        time.sleep(self.seconds)
        with self._lock:
            self.running -= 1


class WaiterAndStarter:
    """Two task bodies that finish only if they run concurrently (a group), not in sequence."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self._started = anyio.Event()

    async def waiter(self) -> None:
        await self._started.wait()
        self.log.append("waiter")

    async def starter(self) -> None:
        self._started.set()
        self.log.append("starter")


def take_the_store_away(path: Path) -> None:
    """The SQLite store at `path` goes, and cannot come back: a directory takes its name."""
    for file in path.parent.glob(path.name + "*"):
        file.unlink()
    path.mkdir()
