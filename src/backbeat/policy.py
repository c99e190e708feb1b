"""A task's policy: its name, retries with backoff, timeout and delay.

Declared where the function is defined (`@task(...)`), overridden per use
(`BackgroundTask(...).using(...)`). The supervised runner applies it; a task
awaited inline (outside any runner) runs once, as in the seed API.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backbeat.gates import parse_rate


@dataclass(frozen=True, slots=True)
class TaskPolicy:
    name: str | None = None
    retries: int = 0
    backoff: float = 1.0
    max_backoff: float = 60.0
    timeout: float | None = None
    delay: float | None = None
    # Stored tasks: which workers take it (`backbeat worker --queues`), which first
    # (higher priority, then sooner due), and an idempotency key (a live task with
    # the same key is not added again: its id is returned instead).
    queue: str = "default"
    priority: int = 0
    key: str | None = None
    # Gates (`backbeat.gates`), enforced by the store when the task starts: at most
    # `rate_limit` starts per window (per `rate_limit_key` value), and at most
    # `max_concurrency` running at once per `concurrency_key` value (a parameter's name or
    # a callable; max_concurrency alone: per task name).
    rate_limit: str | None = None
    rate_limit_key: Callable[..., str] | None = None
    concurrency_key: str | Callable[..., str] | None = None
    max_concurrency: int | None = None

    @property
    def gated(self) -> bool:
        return (
            self.rate_limit is not None
            or self.concurrency_key is not None
            or self.max_concurrency is not None
        )

    def __post_init__(self) -> None:
        _check_int("retries", self.retries)
        _check_number("backoff", self.backoff, allow_zero=True)
        _check_number("max_backoff", self.max_backoff, allow_zero=True)
        if self.timeout is not None:
            _check_number("timeout", self.timeout, allow_zero=False)
        if self.delay is not None:
            _check_number("delay", self.delay, allow_zero=True)
        if not isinstance(self.queue, str) or not self.queue:
            raise ValueError(f"task option queue must be a non-empty str, got {self.queue!r}")
        if not isinstance(self.priority, int) or isinstance(self.priority, bool):
            raise ValueError(f"task option priority must be an int, got {self.priority!r}")
        if self.key is not None and (not isinstance(self.key, str) or not self.key):
            raise ValueError(f"task option key must be a non-empty str, got {self.key!r}")
        self._check_gates()

    def _check_gates(self) -> None:
        if self.rate_limit is not None:
            parse_rate(self.rate_limit)
        if self.rate_limit_key is not None:
            if not callable(self.rate_limit_key):
                raise ValueError(
                    "task option rate_limit_key must be a callable(*args, **kwargs) -> str, "
                    f"got {self.rate_limit_key!r}"
                )
            if self.rate_limit is None:
                raise ValueError("task option rate_limit_key needs a rate_limit to apply per key")
        key = self.concurrency_key
        if key is not None and not callable(key) and not (isinstance(key, str) and key):
            raise ValueError(
                "task option concurrency_key must be a parameter's name or a "
                f"callable(*args, **kwargs) -> str, got {key!r}"
            )
        if self.max_concurrency is not None and (
            not isinstance(self.max_concurrency, int)
            or isinstance(self.max_concurrency, bool)
            or self.max_concurrency < 1
        ):
            raise ValueError(
                f"task option max_concurrency must be an int >= 1, got {self.max_concurrency!r}"
            )

    def replace(self, **changes: Any) -> TaskPolicy:
        unknown = set(changes) - {field.name for field in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unknown task option(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    def retry_delay(self, failed_attempts: int) -> float:
        """Seconds to wait after the n-th failed attempt: exponential, capped, jittered.

        The un-jittered delay is ``backoff * 2 ** (n - 1)`` capped at ``max_backoff``;
        the wait is uniformly random between half of it and all of it, so that
        tasks failing together do not retry in lockstep.
        """
        base = min(float(self.max_backoff), self.backoff * 2.0 ** (failed_attempts - 1))
        return base / 2 + random.uniform(0, base / 2)


def retry_wait(policy: TaskPolicy, failed_attempts: int) -> float | None:
    """The retry decision: seconds to wait before the next attempt, or None (no more).

    `failed_attempts` counts the attempts that failed, this one included (an
    attempt whose worker died under it is not one of them).
    """
    if failed_attempts <= policy.retries:
        return policy.retry_delay(failed_attempts)
    return None


def _check_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"task option {name} must be an int >= 0, got {value!r}")


def _check_number(name: str, value: object, *, allow_zero: bool) -> None:
    valid = isinstance(value, int | float) and not isinstance(value, bool)
    if valid and (value > 0 or (allow_zero and value == 0)):  # type: ignore[operator]
        return
    bound = ">= 0" if allow_zero else "> 0"
    raise ValueError(f"task option {name} must be a number {bound}, got {value!r}")


DEFAULT_POLICY = TaskPolicy()
