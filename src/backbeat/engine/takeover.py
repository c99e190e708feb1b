"""Taking over a dead worker's tasks in seconds, not after its leases run out.

Every live worker looks at the heartbeats in its store when it starts and then with
each of its own heartbeats (from the lease keeper's thread). A worker is dead when

* it ran on this machine and its process is gone (its pid ended, or now runs a newer
  process): known at once, so a process restarted after a ``kill -9`` takes over
  what its previous run held as it starts;
* its heartbeats stopped `grace` seconds ago (any machine; ``HEARTBEAT_GRACE``), judged
  only by a worker whose own heartbeats go through on time (after a stall of the store,
  everyone's are late; expiry is on the store's clock, hosts' clocks may disagree).

Its claims then end at once (`Store.take_over`): its tasks are claimed again as if
their leases had run out (counted as lost leases, so a task that kills every worker
still ends in the dead letter), and an outcome the "dead" worker would still send —
frozen, cut off, not dead after all — is refused, as after a lost lease.
"""

from __future__ import annotations

import logging
import time

from backbeat.processes import is_gone
from backbeat.stores.base import Store, WorkerInfo

logger = logging.getLogger("backbeat")

# A worker beats every second (or lease / 3, if shorter) and is taken for dead once no
# beat came for this long (or for one lease, if shorter).
HEARTBEAT_EVERY = 1.0
HEARTBEAT_GRACE = 10.0
_IDS_SHOWN = 5


def beat_interval(lease: float) -> float:
    return min(lease / 3, HEARTBEAT_EVERY)


def grace(lease: float) -> float:
    """How long after its last heartbeat a worker is taken for dead."""
    return min(lease, HEARTBEAT_GRACE)


def why_dead(worker: WorkerInfo, now: float, *, judge_silence: bool = True) -> str | None:
    """Why `worker` is dead, or None while it may be alive."""
    if is_gone(worker.machine, worker.pid, worker.process_started):
        return "its process is gone"
    if judge_silence and worker.expires_at <= now:
        return f"its heartbeats stopped, its grace ran out {now - worker.expires_at:.1f}s ago"
    return None


async def take_over_dead(store: Store, me: str, *, judge_silence: bool = True) -> int:
    """End the claims of every dead worker but `me`; how many tasks were taken over.

    ``judge_silence=False``: only processes seen gone from this machine (a worker whose
    own heartbeats were late, or that has just connected, cannot tell a silent worker
    from a stalled store)."""
    taken = 0
    now = time.time()
    for worker in await store.workers(include_expired=True):
        if worker.name == me:
            continue
        reason = why_dead(worker, now, judge_silence=judge_silence)
        if reason is None:
            continue
        ids = await store.take_over(worker.name)
        if not ids:
            continue  # it held nothing, or another process took its tasks over first
        taken += len(ids)
        shown = ", ".join(ids[:_IDS_SHOWN]) + (", …" if len(ids) > _IDS_SHOWN else "")
        logger.warning(
            "backbeat: worker %s (pid %d on %s) is dead (%s): %s takes over its %d task(s), "
            "which run again now: %s",
            worker.name,
            worker.pid,
            worker.host,
            reason,
            me,
            len(ids),
            shown,
        )
    return taken
