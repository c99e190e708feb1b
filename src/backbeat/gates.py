"""Rate limits and per-key concurrency ("gates"): parsing the options, and the gates of a call.

A task with ``rate_limit="20/s"`` passes a *rate gate* when it starts: at most 20 starts
in any window of one second, across every worker on the store. With ``rate_limit_key``,
each key value has a gate of its own (one tenant cannot starve the others). A task with
``concurrency_key`` (or ``max_concurrency``) holds a slot of a *concurrency gate* while
it runs: at most ``max_concurrency`` tasks with the same key value (of the same task
name) at once. The key values are computed here, from the call's arguments, when the
task is written; the store enforces the gates when it starts tasks
(`backbeat.stores.base.Store.claim`).

Gates are named by JSON lists (``["rate", task name, "20/1s", key]``,
``["concurrency", task name, 1, key]``), so that no two task names, limits and keys ever
share a gate by accident: a call whose ``.using(...)`` sets another limit has gates of its
own.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
from collections.abc import Callable
from typing import Any, NamedTuple

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
# Stores forget start times older than this (`Store.purge`), whatever the gate.
LONGEST_WINDOW = 86400.0
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?|\.\d+)?\s*([smh])\s*$")


def parse_rate(text: object) -> tuple[int, float]:
    """``"20/s"`` -> (20, 1.0); also ``"100/m"``, ``"1000/h"`` and ``"20/2s"`` (20 starts per
    two seconds). ValueError naming the option for anything else."""
    match = _RATE.match(text) if isinstance(text, str) else None
    if match is not None:
        count, number, unit = match.groups()
        window = (float(number) if number else 1.0) * _UNITS[unit]
        if int(count) >= 1 and 0 < window <= LONGEST_WINDOW:
            return int(count), window
    raise ValueError(
        f"task option rate_limit must be 'N/s', 'N/m' or 'N/h' (N >= 1 starts per second, "
        f"minute or hour; also 'N/2s' for a window of 2 s, up to 24h), got {text!r}"
    )


def check_concurrency_key(func: Callable[..., Any], key: object) -> None:
    """A ``concurrency_key`` naming a parameter must name one of `func`'s; TypeError if not."""
    if not isinstance(key, str):
        return
    signature = _signature(func)
    if signature is None:
        return  # no signature to check against (some builtins): checked at write time
    named = [
        name
        for name, parameter in signature.parameters.items()
        if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    ]
    if key not in named:
        raise TypeError(
            f"task option concurrency_key={key!r} names no parameter of "
            f"{getattr(func, '__qualname__', func)!r} "
            f"(its parameters: {', '.join(named) or 'none'})"
        )


class Gates(NamedTuple):
    """The gates of one stored task (`backbeat.stores.base.NewTask`'s fields)."""

    rate_gate: str | None
    rate_limit: int
    rate_window: float
    concurrency_gate: str | None
    max_concurrency: int


def gates_of(
    name: str,
    func: Callable[..., Any],
    args: tuple[Any, ...] | list[Any],
    kwargs: dict[str, Any],
    *,
    rate_limit: str | None,
    rate_limit_key: Callable[..., Any] | None,
    concurrency_key: str | Callable[..., Any] | None,
    max_concurrency: int | None,
) -> Gates:
    """The gates a call of task `name` passes; ValueError when a key cannot be computed
    (a key callable that raises or returns no string): the task is refused before any 2xx."""
    rate_gate, count, window = None, 0, 0.0
    if rate_limit is not None:
        count, window = parse_rate(rate_limit)
        key = (
            None
            if rate_limit_key is None
            else _key_value(name, "rate_limit_key", rate_limit_key, args, kwargs)
        )
        # The limit is part of the gate: a task whose `.using(rate_limit=...)` differs is
        # counted apart, never under another limit's log.
        rate_gate = json.dumps(["rate", name, f"{count}/{window:g}s", key])
    concurrency_gate, slots = None, 0
    if concurrency_key is not None or max_concurrency is not None:
        slots = 1 if max_concurrency is None else max_concurrency
        key = None
        if isinstance(concurrency_key, str):
            key = _argument(name, func, concurrency_key, args, kwargs)
        elif concurrency_key is not None:
            key = _key_value(name, "concurrency_key", concurrency_key, args, kwargs)
        concurrency_gate = json.dumps(["concurrency", name, slots, key])
    return Gates(rate_gate, count, window, concurrency_gate, slots)


def _key_value(
    name: str,
    option: str,
    key: Callable[..., Any],
    args: tuple[Any, ...] | list[Any],
    kwargs: dict[str, Any],
) -> str:
    try:
        value = key(*args, **kwargs)
    except Exception as exc:
        raise ValueError(
            f"task {name!r} cannot be stored: its {option} raised {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(value, str):
        raise ValueError(
            f"task {name!r} cannot be stored: its {option} must return a str, "
            f"got {type(value).__name__} {value!r}"
        )
    return value


def _argument(
    name: str,
    func: Callable[..., Any],
    parameter: str,
    args: tuple[Any, ...] | list[Any],
    kwargs: dict[str, Any],
) -> str:
    signature = _signature(func)
    try:
        if signature is None:
            raise TypeError("the function has no signature to read it from")
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        value = bound.arguments[parameter]
    except (TypeError, KeyError) as exc:
        raise ValueError(
            f"task {name!r} cannot be stored: its concurrency_key argument {parameter!r} "
            f"cannot be read from the call: {exc}"
        ) from None
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise ValueError(
        f"task {name!r} cannot be stored: its concurrency_key argument {parameter!r} must be "
        f"a str or an int, got {type(value).__name__} {value!r}"
    )


@functools.lru_cache(maxsize=1024)
def _signature(func: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(func)
    except (TypeError, ValueError):
        return None


def queue_gates(limits: dict[str, str] | None) -> dict[str, Gates]:
    """The rate gates of ``Runner(queue_rate_limits={"emails": "100/m"})``, by queue: shared
    by every task of the queue that has no ``rate_limit`` of its own; ValueError for a bad one."""
    gates = {}
    for queue, rate in (limits or {}).items():
        if not isinstance(queue, str) or not queue:
            raise ValueError(f"queue_rate_limits: a queue name must be a non-empty str: {queue!r}")
        try:
            count, window = parse_rate(rate)
        except ValueError as exc:
            raise ValueError(f"queue_rate_limits[{queue!r}]: {exc}") from None
        gate = json.dumps(["queue-rate", queue, f"{count}/{window:g}s"])
        gates[queue] = Gates(gate, count, window, None, 0)
    return gates
