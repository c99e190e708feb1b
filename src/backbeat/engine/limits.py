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
