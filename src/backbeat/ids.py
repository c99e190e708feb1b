"""Task ids: ULIDs (26 characters, Crockford base32) that sort by creation time.

The first 10 characters encode the creation time in milliseconds; the other
16 are 40 random bits drawn once per process (again after a fork) followed by
a 40-bit counter. Within a process ids are therefore unique and increasing,
also across threads and within one millisecond, without a lock; across
processes they differ by their random part.
"""

from __future__ import annotations

import itertools
import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Two characters per 10 bits: encoding is a few table look-ups, not a loop.
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_COUNTER_MASK = (1 << 40) - 1


def _encode40(value: int) -> str:
    p = _PAIRS
    return p[value >> 30] + p[(value >> 20) & 1023] + p[(value >> 10) & 1023] + p[value & 1023]


def _encode_time(ms: int) -> str:
    p = _PAIRS
    return p[(ms >> 40) & 1023] + _encode40(ms & _COUNTER_MASK)


class _State:
    process_part = ""
    counter = itertools.count()
    last_ms = -1
    prefix = ""


def _reseed() -> None:
    _State.process_part = _encode40(int.from_bytes(os.urandom(5), "big"))
    _State.counter = itertools.count(int.from_bytes(os.urandom(2), "big"))


_reseed()
os.register_at_fork(after_in_child=_reseed)


def new_id() -> str:
    # next() on itertools.count is atomic under the GIL; the prefix cache may be
    # recomputed by two threads at once, which is harmless.
    count = next(_State.counter) & _COUNTER_MASK
    ms = time.time_ns() // 1_000_000
    if ms > _State.last_ms:
        _State.prefix = _encode_time(ms)
        _State.last_ms = ms
    # When the clock steps back, ids keep the last prefix, so they still increase.
    return _State.prefix + _State.process_part + _encode40(count)


def id_timestamp(task_id: str) -> float:
    """The creation time (seconds since the epoch) encoded in an id."""
    value = 0
    for char in task_id[:10].upper():
        value = value * 32 + _ALPHABET.index(char)
    return value / 1000
