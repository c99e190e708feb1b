"""Task ids: ULIDs (26 characters, Crockford base32) that sort by creation time.

Within one process ids are strictly increasing, even when many are made in the
same millisecond or from several threads, so sorting ids sorts tasks by creation.
"""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Two characters per 10 bits: encoding an id is a few table look-ups, not a loop.
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_RANDOM_BITS = 80
_RANDOM_MASK = (1 << _RANDOM_BITS) - 1

_lock = threading.Lock()
_last_ms = -1
_last_random = 0
_prefix = ""


def _encode_time(ms: int) -> str:
    return "".join(_PAIRS[(ms >> shift) & 1023] for shift in (40, 30, 20, 10, 0))


def new_id() -> str:
    global _last_ms, _last_random, _prefix
    with _lock:
        now_ms = time.time_ns() // 1_000_000
        if now_ms > _last_ms:
            _last_ms = now_ms
            _last_random = int.from_bytes(os.urandom(10), "big")
            _prefix = _encode_time(now_ms)
        else:
            # Same millisecond (or the clock stepped back): keep counting up.
            _last_random += 1
            if _last_random > _RANDOM_MASK:
                _last_ms += 1
                _last_random = 0
                _prefix = _encode_time(_last_ms)
        r = _last_random
        prefix = _prefix
    hi = r >> 40
    lo = r & 0xFFFFFFFFFF
    p = _PAIRS
    return (
        prefix
        + p[hi >> 30]
        + p[(hi >> 20) & 1023]
        + p[(hi >> 10) & 1023]
        + p[hi & 1023]
        + p[lo >> 30]
        + p[(lo >> 20) & 1023]
        + p[(lo >> 10) & 1023]
        + p[lo & 1023]
    )


def id_timestamp(task_id: str) -> float:
    """The creation time (seconds since the epoch) encoded in an id."""
    value = 0
    for char in task_id[:10].upper():
        value = value * 32 + _ALPHABET.index(char)
    return value / 1000
