"""Whether a worker is alive: what ``backbeat worker --metrics`` answers at ``/healthz``.

A worker is healthy while three things beat: its event loop answers the lease
keeper (a task blocking the loop stops claims, outcomes and cancellations), the
lease keeper's thread ticks (without it, leases run out under running tasks),
and the claim loop turns (it does at least every ``poll_interval``, and at
least every 5 s while it backs off from store errors: it is stuck after
``poll_interval + lease + 5`` s). `StoredWorker.health` reads the three;
anything else is a problem, named in the answer. A store that cannot be reached
is not one: the worker retries, and restarting it would not help.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerHealth:
    worker: str
    running: int  # tasks running now
    loop_blocked: float  # seconds since the event loop last answered the lease keeper
    claim_loop_idle: float  # seconds since the claim loop last turned
    problems: tuple[str, ...]  # empty: healthy
    waiting_for_store: bool = False  # unreachable since start-up: retried, not a problem

    @property
    def healthy(self) -> bool:
        return not self.problems

    def document(self) -> dict[str, object]:
        return {
            "healthy": self.healthy,
            "worker": self.worker,
            "running": self.running,
            "loop_blocked_seconds": round(self.loop_blocked, 3),
            "claim_loop_idle_seconds": round(self.claim_loop_idle, 3),
            "problems": list(self.problems),
            "waiting_for_store": self.waiting_for_store,
        }
