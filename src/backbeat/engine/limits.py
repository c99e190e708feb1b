"""`Limits`: the runner's numbers, one value shared by the runner and its engine."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Limits:
    """How much a runner takes on. Changeable until the runner starts (the CLI's
    ``--concurrency``); the engine reads them as it goes."""

    concurrency: int = 100
    max_pending: int = 10_000
    shutdown_timeout: float = 30.0
    overflow_timeout: float = 10.0
    keep_finished: int = 10_000
    finished_ttl: float = 3600.0
