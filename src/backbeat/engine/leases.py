"""The lease keeper: a worker's leases are renewed from a thread of its own.

Renewing on the event loop that runs the tasks fails exactly when it matters:
an ``async`` task that blocks its loop (a sync client called from async code,
a CPU-bound loop) also blocks the renewals, the lease runs out, another worker
takes the task over while the first one is still running it, and the first
one's success is then discarded. So a thread, with its own event loop for the
store's calls, renews the leases of everything the worker runs, every
``lease / 3`` seconds, whatever the worker's loop is doing.

It also sends the worker's heartbeat every second (``engine.takeover``: a worker
whose heartbeats stop, or whose process is gone, has its tasks taken over).

The keeper also watches that loop: when it has not answered for a second (or
``lease / 3``, if shorter), the keeper logs a warning naming the task that is
running on it. A loop blocked for ``10 * lease`` is taken for hung: the keeper
stops renewing and says so, so that other workers take the tasks over (and a
task that hangs every worker it runs on ends in the dead letter; see
``max_lost_leases``), rather than holding them forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable

from backbeat.engine.takeover import beat_interval, grace, take_over_dead
from backbeat.stores.base import Store, WorkerInfo, split_receipt

logger = logging.getLogger("backbeat")

HUNG_AFTER_LEASES = 10


class LeaseKeeper:
    def __init__(
        self,
        store: Store,
        worker: str,
        lease: float,
        receipts: Callable[[], list[str]],
        running: Callable[[], list[str]],
        stop: Callable[[list[str]], object],
        describe: Callable[[], str],
        worker_info: Callable[[], WorkerInfo],
        taken_over: Callable[[], object] = lambda: None,
    ) -> None:
        self.store = store
        self.worker = worker
        self.lease = lease
        # The claims to renew (read from the thread): those running, and those whose
        # outcome is not written yet; only the running ones can be stopped.
        self.receipts = receipts
        self.running = running
        self.stop_tasks = stop  # tells the worker's loop which tasks to stop
        self.describe = describe  # what the worker's loop is running now
        self.worker_info = worker_info  # what the heartbeat says
        self.taken_over = taken_over  # a dead worker's tasks are claimable now (thread-safe)
        # The loop is said to be blocked (a warning, and a 503 at /healthz) after this long.
        self.warn_after = min(lease / 3, 1.0)
        self.ticked_at = time.monotonic()  # the thread's last turn (read by `health`)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # When this keeper asked the worker's loop to answer and it has not yet (None: it
        # answered every ask). Blocked is measured from there, not from the last answer: a
        # keeper stuck in a renewal (a store that hangs) asks nothing meanwhile, and the
        # time it spent so is not the loop's.
        self._unanswered_since: float | None = None
        self._beat_sent_at = float("-inf")  # the last heartbeat the store took (monotonic)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        started = time.monotonic()
        self._unanswered_since = None
        self.ticked_at = started
        self._thread = threading.Thread(
            target=self._run, name=f"backbeat-leases-{self.worker}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def loop_blocked(self, now: float) -> float:
        """Seconds the worker's loop has left this keeper's oldest ask unanswered (monotonic
        `now`)."""
        asked = self._unanswered_since
        return 0.0 if asked is None else max(now - asked, 0.0)

    def _beat(self) -> None:
        self._unanswered_since = None

    def _run(self) -> None:
        own_loop = asyncio.new_event_loop()
        # The worker's store may belong to the worker's loop: this thread has its own handle.
        store = self.store.twin()
        tick = min(self.lease / 6, 0.25)
        warn_after = self.warn_after
        renew_every = self.lease / 3
        beat_every = beat_interval(self.lease)
        last_renewal = -renew_every  # a first renewal, heartbeat and look around at once
        last_beat = -beat_every
        warned = gave_up = False
        try:
            while not self._stop.wait(tick):
                now = time.monotonic()
                self.ticked_at = now
                blocked = self.loop_blocked(now)
                if self._unanswered_since is None:
                    self._unanswered_since = now
                try:
                    assert self._loop is not None
                    self._loop.call_soon_threadsafe(self._beat)
                except RuntimeError:
                    return  # the worker's loop is closed
                if blocked > warn_after and not warned:
                    warned = True
                    logger.warning(
                        "backbeat: worker %s: the event loop has been blocked for %.1fs by %s; "
                        "an async task is running blocking code (use a sync def, which runs "
                        "in a thread, or await). Its lease is kept meanwhile.",
                        self.worker,
                        blocked,
                        self.describe(),
                    )
                elif blocked <= warn_after:
                    warned = gave_up = False
                if blocked > HUNG_AFTER_LEASES * self.lease:
                    if not gave_up:
                        gave_up = True
                        logger.error(
                            "backbeat: worker %s: the event loop has been blocked for %.0fs by "
                            "%s; taken for hung, its leases are no longer renewed and other "
                            "workers will take its tasks over",
                            self.worker,
                            blocked,
                            self.describe(),
                        )
                    continue
                if now - last_beat >= beat_every:
                    last_beat = now
                    self._beat_and_look_around(own_loop, store)
                if now - last_renewal >= renew_every:
                    last_renewal = now
                    self._renew(own_loop, store)
        finally:
            self._leave(own_loop, store)
            own_loop.close()

    def _leave(self, own_loop: asyncio.AbstractEventLoop, store: Store) -> None:
        """Say that this worker stops; close the handle of this thread."""
        try:
            own_loop.run_until_complete(store.heartbeat(self.worker_info(), 0))
        except Exception as exc:
            logger.debug("backbeat: worker %s: cannot remove its heartbeat: %s", self.worker, exc)
        if store is not self.store:
            with contextlib.suppress(Exception):
                own_loop.run_until_complete(store.close())

    def _beat_and_look_around(self, own_loop: asyncio.AbstractEventLoop, store: Store) -> None:
        """Say this worker is alive; take over the tasks of workers that are not."""
        try:
            own_loop.run_until_complete(store.heartbeat(self.worker_info(), grace(self.lease)))
        except Exception as exc:
            logger.warning("backbeat: worker %s cannot send its heartbeat: %s", self.worker, exc)
            return
        # Others' silence means death only if this worker's own beats went through on time:
        # after a stall of the store (or of this process) everyone's beats are late.
        done = time.monotonic()
        steady = done - self._beat_sent_at <= 2 * beat_interval(self.lease) + 1.0
        self._beat_sent_at = done
        try:
            taken = own_loop.run_until_complete(
                take_over_dead(store, self.worker, judge_silence=steady)
            )
        except Exception as exc:
            logger.warning("backbeat: worker %s cannot look for dead workers: %s", self.worker, exc)
            return
        if taken:
            with contextlib.suppress(RuntimeError):  # the worker's loop is closed
                self.taken_over()

    def _renew(self, own_loop: asyncio.AbstractEventLoop, store: Store) -> None:
        receipts = self.receipts()
        if not receipts:
            return
        try:
            stop = own_loop.run_until_complete(store.renew(receipts, self.lease))
        except Exception as exc:
            logger.error("backbeat: worker %s cannot renew its task leases: %s", self.worker, exc)
            return
        # An outcome recorded meanwhile ended its claim: that is no reason to stop anything
        # (its task is done, its receipt only waits to be marked recorded), nor to stop a
        # later attempt of the same task this worker claimed since (a retry).
        # A task renewed under two receipts at once (an outcome not yet written, and its
        # retry's claim) is left to the next renewal, which tells them apart.
        sent: dict[str, str | None] = {}
        for receipt in receipts:
            task_id = split_receipt(receipt)[0]
            sent[task_id] = None if task_id in sent else receipt
        current = set(self.running())
        stop = [task_id for task_id in stop if sent.get(task_id) in current]
        if stop:
            # Cancelled by someone, or the lease is gone (another worker may run the
            # task now): either way this worker stops it; its outcome would be refused.
            logger.warning(
                "backbeat: worker %s stops task(s) %s: cancelled, or the lease was lost",
                self.worker,
                ", ".join(stop),
            )
            self.stop_tasks(stop)
