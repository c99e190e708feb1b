"""`Limits`: the runner's numbers, one value shared by the runner and its engine, and the
checks of the runner's options (a bad one is a ValueError naming it)."""

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

    @classmethod
    def checked(
        cls,
        *,
        concurrency: int,
        max_pending: int,
        shutdown_timeout: float,
        overflow_timeout: float,
        keep_finished: int,
        finished_ttl: float,
        max_lost_leases: int,
        max_task_size: int,
        lease: float,
        poll_interval: float,
    ) -> Limits:
        """A runner's limits from its options, once every number among them is checked
        (the stored feeder's too, with or without a store): ValueError naming the first
        bad one."""
        counts = {
            "concurrency": concurrency,
            "max_pending": max_pending,
            "keep_finished": keep_finished,
            "max_lost_leases": max_lost_leases,
            "max_task_size": max_task_size,
        }
        seconds = {
            "shutdown_timeout": shutdown_timeout,
            "overflow_timeout": overflow_timeout,
            "finished_ttl": finished_ttl,
            "lease": lease,
            "poll_interval": poll_interval,
        }
        for name, count in counts.items():
            check_count(name, count)
        for name, value in seconds.items():
            check_seconds(name, value)
        return cls(
            concurrency=concurrency,
            max_pending=max_pending,
            shutdown_timeout=float(shutdown_timeout),
            overflow_timeout=float(overflow_timeout),
            keep_finished=keep_finished,
            finished_ttl=float(finished_ttl),
        )


def queue_names(queues: list[str] | tuple[str, ...] | None) -> tuple[str, ...] | None:
    if queues is None:
        return None
    names = tuple(queues)
    if not names or not all(isinstance(name, str) and name for name in names):
        raise ValueError(f"Runner(queues=...) must be non-empty queue names, got {queues!r}")
    return names


def check_count(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"Runner({name}=...) must be an int >= 1, got {value!r}")


def check_seconds(name: str, value: object) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise ValueError(f"Runner({name}=...) must be a number >= 0, got {value!r}")
