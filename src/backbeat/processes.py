"""Which process a worker is, and whether a process seen in a heartbeat still runs.

A heartbeat names its process by pid, by when that process started, and by the
*machine* its pid belongs to: on Linux the kernel's boot id and the pid namespace,
so that two containers sharing a host name (each with its own pid 7) are never
taken for one another. Another process on the same machine can then tell at once
that a worker is gone — its pid no longer runs, or runs a newer process that reused
the pid — instead of waiting for its heartbeats or its leases to run out.

Where /proc is missing (macOS, BSD), the machine is the host name and a pid that
exists is taken to be the worker's (a reused pid then hides a death until the
heartbeat runs out: never a live worker taken for dead).
"""

from __future__ import annotations

import functools
import os
import socket
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")


@dataclass(frozen=True, slots=True)
class ProcessIdentity:
    machine: str  # where this pid means this process
    pid: int
    started: float  # when the process started (seconds since the epoch; 0.0: unknown)


@functools.cache
def _boot_time() -> float | None:
    try:
        for line in (_PROC / "stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def _start_time(pid: int) -> float | None:
    """When `pid` started, from /proc (None: no such process, a dead one not yet reaped by
    its parent, or no /proc)."""
    boot = _boot_time()
    if boot is None:
        return None
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count from its end.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None  # a zombie: it has ended
    ticks = int(fields[19])  # field 22, starttime, in clock ticks since boot
    return boot + ticks / os.sysconf("SC_CLK_TCK")


@functools.cache
def _machine() -> str:
    try:
        boot_id = (_PROC / "sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink(_PROC / "self/ns/pid")
    except OSError:
        return socket.gethostname()
    return f"{boot_id}/{namespace}"


def this_process() -> ProcessIdentity:
    return _identity(os.getpid())  # a forked child is another process


@functools.cache
def _identity(pid: int) -> ProcessIdentity:
    return ProcessIdentity(_machine(), pid, _start_time(pid) or 0.0)


def is_gone(machine: str, pid: int, started: float) -> bool:
    """True when the process a heartbeat names has ended, as far as this machine can tell.

    False for another machine's process (only its heartbeats can tell), and for a
    process this machine cannot look at.
    """
    if not machine or machine != _machine():
        return False
    running_since = _start_time(pid)
    if running_since is not None:
        # The same pid with another start time is a new process that reused it.
        return started > 0 and abs(running_since - started) > 1.0
    if _boot_time() is not None:
        return True  # /proc is there and has no such pid
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
