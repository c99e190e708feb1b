"""`Store.gate_usage` for every store: what a gate's name says of its limit, and the busiest.

Gates are named by JSON lists (`backbeat.gates`): ``["rate", task, "20/1s", key]``,
``["queue-rate", queue, "100/60s"]`` and ``["concurrency", task, slots, key]``. The stores
count starts, running tasks and waiting tasks per gate name; this turns those counts into
`GateUsage` rows, the busiest first, at most `MOST` of them (a store with a key per tenant
may have thousands of gates: a dashboard shows the ones that matter).
"""

from __future__ import annotations

import json
import re
from typing import NamedTuple

from backbeat.stores.inspection import GateUsage

MOST = 200
_RATE = re.compile(r"^(\d+)/(.+)s$")


class Limit(NamedTuple):
    kind: str  # "rate" or "concurrency"
    name: str
    key: str
    limit: int
    window: float


def limit_of(gate: str) -> Limit | None:
    """The limit a gate name stands for; None for a name no backbeat wrote."""
    try:
        parts = json.loads(gate)
    except ValueError:
        return None
    if not isinstance(parts, list) or len(parts) < 3 or not isinstance(parts[1], str):
        return None
    kind, name = parts[0], parts[1]
    key = parts[3] if len(parts) > 3 and isinstance(parts[3], str) else ""
    if kind in ("rate", "queue-rate") and isinstance(parts[2], str):
        found = _RATE.match(parts[2])
        if found is None:
            return None
        try:
            return Limit("rate", name, key, int(found.group(1)), float(found.group(2)))
        except ValueError:
            return None
    if kind == "concurrency" and isinstance(parts[2], int):
        return Limit("concurrency", name, key, parts[2], 0.0)
    return None


def window_of(gate: str) -> float | None:
    """A rate gate's window in seconds (None: not a rate gate)."""
    limit = limit_of(gate)
    return limit.window if limit is not None and limit.kind == "rate" else None


def busiest(used: dict[str, int], waiting: dict[str, int]) -> list[GateUsage]:
    """`GateUsage` rows for the gates in use or with tasks waiting, busiest first (used plus
    waiting, then by name), at most `MOST`."""
    rows = []
    for gate in used.keys() | waiting.keys():
        limit = limit_of(gate)
        in_use, queued = used.get(gate, 0), waiting.get(gate, 0)
        if limit is None or (in_use == 0 and queued == 0):
            continue
        rows.append(GateUsage(*limit, used=in_use, waiting=queued))
    rows.sort(key=lambda row: (-(row.used + row.waiting), row.kind, row.name, row.key))
    return rows[:MOST]
