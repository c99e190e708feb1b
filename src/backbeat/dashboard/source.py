"""What the dashboard reads and does: a store (given, by URL, or a stored runner's) or a
memory runner's in-process table (`LocalView`), every call counted.

The counts are how the tests hold each page to its query budget, and how the live stream
shows that one snapshot loop reads the store whatever the number of viewers (`reads`).
A store given by URL is made on the first request and kept open: a mounted app gets no
lifespan to open or close it, and a store opens itself on its first operation.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, cast

from backbeat.dashboard.local_view import LocalView
from backbeat.runner import Runner
from backbeat.store_commands import alive_workers, schedule_documents
from backbeat.stores import Store, open_store
from backbeat.stores.base import StoredStatus, WorkerInfo
from backbeat.stores.inspection import AttemptRecord, FailureGroup, GateUsage, TaskFilter, TaskPage

# The actions a memory runner's dashboard offers: its failed tasks cannot be run again.
LOCAL_ACTIONS = frozenset({"cancel"})


class _Counted:
    """A store (or a `LocalView`) whose every method call is counted in `calls`."""

    def __init__(self, target: object, calls: Counter[str]) -> None:
        self._target = target
        self._calls = calls

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._target, name)
        if not callable(attribute) or name == "twin":
            return attribute

        def counted(*args: Any, **kwargs: Any) -> Any:
            self._calls[name] += 1
            return attribute(*args, **kwargs)

        return counted


class Source:
    """Reads and actions for the pages, over whatever `dashboard(...)` was given."""

    def __init__(self, origin: Runner | Store | str) -> None:
        if isinstance(origin, str):
            if "://" not in origin:
                raise ValueError(
                    f"dashboard(source) as a string must be a store URL such as "
                    f"sqlite:///tasks.db or redis://localhost:6379/0, got {origin!r}"
                )
            self.label = _without_password(origin)
        elif isinstance(origin, Runner):
            self.label = (
                "this process's runner" if origin.store is None else type(origin.store).__name__
            )
        elif _looks_like_store(origin):
            self.label = type(origin).__name__
        else:
            raise TypeError(
                f"dashboard(source) takes a Runner, a Store or a store URL, got {origin!r}"
            )
        self._origin = origin
        self._target: object | None = None
        self.calls: Counter[str] = Counter()
        self.local = isinstance(origin, Runner) and origin.store is None

    @property
    def reads(self) -> int:
        """Every call made so far (reads and actions)."""
        return sum(self.calls.values())

    def _raw(self) -> object:
        if self._target is None:
            origin = self._origin
            if isinstance(origin, str):
                self._target = open_store(origin, create=False)
            elif isinstance(origin, Runner):
                self._target = LocalView(origin) if origin.store is None else origin.store
            else:
                self._target = origin
        return self._target

    @property
    def _store(self) -> Store:
        """The counted store; a memory runner's view answers the same calls it supports."""
        return cast(Store, _Counted(self._raw(), self.calls))

    async def close(self) -> None:
        """Close the store if the dashboard made it (from a URL); a store or runner given
        belongs to its owner."""
        if isinstance(self._origin, str) and self._target is not None:
            await cast(Store, self._target).close()

    def supports(self, method: str) -> bool:
        """Whether the store has this operation (`attempts` is optional; a store written
        before the dashboard's operations lacks the newest)."""
        return callable(getattr(self._raw(), method, None))

    def allows(self, action: str) -> bool:
        """Whether the source can do this action at all (a memory runner: cancel only)."""
        return action in LOCAL_ACTIONS if self.local else True

    # --- reads ---------------------------------------------------------------------------

    async def counts(self, queue: str | None = None) -> dict[str, int]:
        return await self._store.counts(queue)

    async def queues(self) -> list[str]:
        return await self._store.queues()

    async def workers(self) -> list[WorkerInfo]:
        return [] if self.local else await alive_workers(self._store)

    async def running(self, limit: int) -> list[StoredStatus]:
        return await self._store.list_tasks(state="running", limit=limit)

    async def oldest_due(self) -> float | None:
        return await self._store.oldest_due() if self.supports("oldest_due") else None

    async def paused_queues(self) -> list[str]:
        return await self._store.paused_queues() if self.supports("paused_queues") else []

    async def gate_usage(self) -> list[GateUsage]:
        return await self._store.gate_usage() if self.supports("gate_usage") else []

    async def schedules(self) -> list[dict[str, Any]]:
        """As `backbeat schedules` shows them: one read, and one `get` per schedule."""
        return [] if self.local else await schedule_documents(self._store, time.time())

    async def search(
        self, where: TaskFilter, *, limit: int, before: str | None, scan: int
    ) -> TaskPage:
        return await self._store.search(where, limit=limit, before=before, scan=scan)

    async def get(self, task_id: str) -> StoredStatus | None:
        return await self._store.get(task_id)

    async def attempts(self, task_id: str) -> list[AttemptRecord] | None:
        """The attempts that did not succeed, where the store keeps them (None: a memory
        runner, or a store written before `Store.attempts`)."""
        if self.local or not self.supports("attempts"):
            return None
        return await self._store.attempts(task_id)

    async def failure_groups(self, scan: int) -> list[FailureGroup]:
        return await self._store.failure_groups(scan=scan)

    # --- actions -------------------------------------------------------------------------

    async def retry(self, ids: list[str]) -> int:
        return await self._store.retry(ids)

    async def run_now(self, ids: list[str]) -> int:
        return await self._store.run_now(ids)

    async def cancel(self, ids: list[str]) -> int:
        return await self._store.cancel(ids, "cancelled from the dashboard")

    async def delete(self, ids: list[str]) -> int:
        return await self._store.delete(ids)

    async def purge(self, finished_before: float, states: tuple[str, ...], dry_run: bool) -> int:
        return await self._store.purge(finished_before, states, dry_run=dry_run)

    async def pause_queue(self, queue: str, paused: bool) -> None:
        await self._store.pause_queue(queue, paused)

    async def pause_schedule(self, name: str, paused: bool) -> bool:
        return await self._store.pause_schedule(name, paused)


def _looks_like_store(origin: object) -> bool:
    return all(callable(getattr(origin, name, None)) for name in ("counts", "get", "list_tasks"))


def _without_password(url: str) -> str:
    """The URL as the header shows it: a password in it is not shown."""
    scheme, _, rest = url.partition("://")
    credentials, at, place = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}://{credentials.partition(':')[0]}:***@{place}"
