"""Task ids: ULIDs (26 characters, Crockford base32) that sort by creation time.

The first 10 characters encode the creation time in milliseconds; the other
16 are 80 bits from the operating system's CSPRNG (`os.urandom`), drawn anew
for every id. An id is therefore unguessable from any other id — a task's
status URL is not a hint to the next one — and ids still sort by creation
time to the millisecond (ids made in the same millisecond are in no
particular order among themselves).
"""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Two characters per 10 bits: encoding is a few table look-ups, not a loop.
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_MASK40 = (1 << 40) - 1


def _encode40(value: int) -> str:
    p = _PAIRS
    return p[value >> 30] + p[(value >> 20) & 1023] + p[(value >> 10) & 1023] + p[value & 1023]


def _encode_time(ms: int) -> str:
    return _PAIRS[(ms >> 40) & 1023] + _encode40(ms & _MASK40)


class _Clock:
    last_ms = -1
    prefix = ""


# Random bytes are drawn from the CSPRNG a few kilobytes at a time: one system
# call per 400 ids instead of one per id. Each thread has its own buffer, and a
# forked child drops its parent's, so no two ids ever share their random part.
_IDS_PER_BATCH = 400
_buffers = threading.local()


def _forget_buffers() -> None:
    global _buffers
    _buffers = threading.local()


os.register_at_fork(after_in_child=_forget_buffers)

# One random byte per character, its low 5 bits picking the character (256 is a
# multiple of 32, so each character is uniform): 16 characters carry 80 random
# bits, and a whole batch is encoded by one `bytes.translate`, in C.
_BYTE_TO_CHAR = bytes(_ALPHABET.encode("ascii")[byte & 31] for byte in range(256))


def _random_part() -> str:
    """80 bits from the CSPRNG as 16 Crockford characters (made a batch at a time)."""
    local = _buffers
    try:
        return local.parts.pop()  # type: ignore[no-any-return]
    except (AttributeError, IndexError):
        pass
    text = os.urandom(16 * _IDS_PER_BATCH).translate(_BYTE_TO_CHAR).decode("ascii")
    local.parts = [text[at : at + 16] for at in range(0, len(text), 16)]
    return local.parts.pop()  # type: ignore[no-any-return]


def new_id() -> str:
    random = _random_part()
    ms = time.time_ns() // 1_000_000
    if ms > _Clock.last_ms:
        # Two threads may recompute this cache at once, which is harmless.
        _Clock.prefix = _encode_time(ms)
        _Clock.last_ms = ms
    # When the clock steps back, ids keep the last prefix, so they never sort
    # before ids already made.
    return _Clock.prefix + random


def id_timestamp(task_id: str) -> float:
    """The creation time (seconds since the epoch) encoded in an id."""
    value = 0
    for char in task_id[:10].upper():
        value = value * 32 + _ALPHABET.index(char)
    return value / 1000


# The most milliseconds 10 characters of Crockford base32 hold (48 bits).
_LAST_MS = (1 << 48) - 1


def lowest_id(at: float) -> str:
    """The lowest id of the millisecond that holds the time `at` (seconds since the
    epoch): every id made at or after that millisecond sorts at or after it, every id made
    before it sorts before, so a time becomes a bound on ids (keyset on the id alone)."""
    # A nanosecond's nudge: a time read off a whole millisecond (1.001) is stored as
    # 1.00099999..., which must not fall into the millisecond before.
    ms = min(max(at * 1000 + 1e-6, 0.0), float(_LAST_MS)) if at == at else 0.0
    return _encode_time(int(ms)) + "0" * 16
