"""What a worker reports to its store about the tasks it runs, batched: one write at a time,
each with what came since the last (`TurnBatch`'s ``one_at_a_time``).

`ProgressReports`: a task's `backbeat.progress(...)` reports come from the task, on the
worker's loop or (a sync task) in its thread; the last report of each task in one turn
of the loop (or while the last write was in flight) is written, the others are dropped.
`Settlements`: the outcomes of attempts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from pydantic_core import PydanticSerializationError, to_json

from backbeat.batching import TurnBatch
from backbeat.logs import about_task
from backbeat.progress import Reporter
from backbeat.stores.base import Settlement, Store, StoreError, StoreUnavailable, split_receipt

logger = logging.getLogger("backbeat")


class ProgressReports:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._batch: TurnBatch[tuple[str, str]] = TurnBatch(self._keep, one_at_a_time=True)
        self._loop: asyncio.AbstractEventLoop | None = None

    def reporter(self, receipt: str) -> Reporter:
        """What an attempt's `backbeat.progress(...)` calls (made on the worker's loop)."""
        self._loop = asyncio.get_running_loop()
        return functools.partial(self._report, receipt)

    def _report(self, receipt: str, report: dict[str, Any]) -> None:
        try:
            document = to_json(report).decode()
        except (PydanticSerializationError, TypeError, ValueError) as exc:
            raise TypeError(f"progress(...) takes JSON values: {exc}") from None
        assert self._loop is not None
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._batch.add((receipt, document))
        else:
            self._loop.call_soon_threadsafe(self._batch.add, (receipt, document))

    async def _keep(self, reports: list[tuple[str, str]]) -> None:
        latest = dict(reports)  # one write per task: its last report of this loop turn
        for receipt, document in latest.items():
            try:
                await self.store.progress(receipt, document)
            except StoreError as exc:
                logger.warning("backbeat: cannot record a task's progress: %s", exc)

    async def settle(self) -> None:
        await self._batch.settle()


class Settlements:
    """The outcomes of attempts, recorded one write at a time, each with every outcome
    since the last.

    While the store is unreachable (a restart, a cut link) the outcomes are kept and
    sent again, with backoff, for up to five leases: once it answers, each is
    recorded, or refused if its claim was taken over meanwhile.

    Until then its claim is still this worker's: `unrecorded` lists the receipts the
    lease keeper goes on renewing. A task that finished while a neighbour blocks the
    loop (its write waits for the loop) must not lose its lease, and run again
    elsewhere, in that time.
    """

    def __init__(
        self, store: Store, lease: float, recorded: Callable[[], object] = lambda: None
    ) -> None:
        self.store = store
        self.lease = lease
        # Told once outcomes are in the store: a task they finish may have let another run.
        self.recorded = recorded
        self._batch: TurnBatch[Settlement] = TurnBatch(self._finish, one_at_a_time=True)
        # By task id; read (its receipts) from the lease keeper's thread.
        self._unrecorded: dict[str, Settlement] = {}

    def add(self, settlement: Settlement) -> None:
        self._unrecorded[split_receipt(settlement.receipt)[0]] = settlement
        self._batch.add(settlement)

    def unrecorded(self) -> list[str]:
        """The receipts of outcomes not yet recorded (nor refused): their leases are kept."""
        return [settlement.receipt for settlement in list(self._unrecorded.values())]

    def again_under(self, task_id: str, receipt: str) -> bool:
        """A claim of a task whose outcome is still to be recorded here: its lease ran out
        while the store could not be reached, and a claim (this worker's too) took it over.
        The outcome is recorded under the new claim instead of the task running twice (the
        old claim's write is refused by its token). Whether there was one."""
        held = self._unrecorded.get(task_id)
        if held is None:
            return False
        self.add(dataclasses.replace(held, receipt=receipt))
        return True

    async def settle(self) -> None:
        await self._batch.settle()

    async def _finish(self, settlements: list[Settlement]) -> None:
        try:
            await self._record(settlements)
        finally:
            for settlement in settlements:
                task_id = split_receipt(settlement.receipt)[0]
                if self._unrecorded.get(task_id) is settlement:  # not one sent again since
                    del self._unrecorded[task_id]

    async def _record(self, settlements: list[Settlement]) -> None:
        deadline = time.monotonic() + max(5 * self.lease, 10.0)
        wait = 0.1
        while True:
            try:
                kept = await self.store.finish(settlements)
                break
            except StoreUnavailable as exc:
                if time.monotonic() + wait > deadline:
                    logger.error(
                        "backbeat: gave up recording %d outcome(s): %s", len(settlements), exc
                    )
                    return
                logger.warning(
                    "backbeat: cannot record %d outcome(s) yet (trying again in %.1fs): %s",
                    len(settlements),
                    wait,
                    exc,
                )
                await asyncio.sleep(wait)
                wait = min(wait * 2, 2.0)
            except StoreError as exc:
                logger.error("backbeat: cannot record %d outcome(s): %s", len(settlements), exc)
                return
        self.recorded()
        for settlement, held in zip(settlements, kept, strict=True):
            if not held:
                task_id, attempt = split_receipt(settlement.receipt)
                logger.warning(
                    "backbeat: claim %s finished after it was lost (the task claimed again "
                    "elsewhere, or cancelled); this outcome (%s) is ignored",
                    settlement.receipt,
                    settlement.state.value,
                    extra=about_task(task_id, None, attempt),
                )
