"""Which process a worker is, and whether a process seen in a heartbeat still runs.

A heartbeat names its process by pid, by when that process started, and by the
*machine* its pid belongs to: on Linux the kernel's boot id and the pid namespace,
so that two containers sharing a host name (each with its own pid 7) are never
taken for one another. Another process on the same machine can then tell at once
that a worker is gone — its pid no longer runs, or runs a newer process that reused
the pid — instead of waiting for its heartbeats or its leases to run out.

The start time is the kernel's own count, in seconds since boot: unlike a wall-clock
time it does not move when the clock is set, and the boot id in `machine` says that
two counts are comparable. Where a pid cannot be looked at (/proc mounted with
``hidepid``, a process of another user) or where pids cannot be placed (no pid
namespace to read), the process is taken to be alive: never a live worker taken for
dead; its heartbeats tell. Without /proc at all (macOS, BSD) the machine is the host
name and only a pid that no longer exists tells a death.
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
    machine: str  # where this pid means this process ("": nowhere this can tell)
    pid: int
    started: float  # seconds after boot the process started (0.0: unknown)


def _start_time(pid: int) -> float | None:
    """When `pid` started, in seconds since boot (None: no such process, a dead one not yet
    reaped by its parent, or one this process may not look at)."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count from its end.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None  # a zombie: it has ended
    ticks = int(fields[19])  # field 22, starttime, in clock ticks since boot
    return ticks / os.sysconf("SC_CLK_TCK")


@functools.cache
def _machine() -> str:
    if not _PROC.is_dir():
        return socket.gethostname()
    try:
        boot_id = (_PROC / "sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink(_PROC / "self/ns/pid")
    except OSError:
        return ""  # pids cannot be placed: only heartbeats tell
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
    if _PROC.is_dir():
        running_since = _start_time(pid)
        if running_since is not None:
            # The same pid with another start time is a new process that reused it.
            return started > 0 and abs(running_since - started) > 0.5
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # there, another user's
    if _PROC.is_dir():
        # It exists: a zombie (ended, its parent has not reaped it yet) reads as None above.
        stat = _PROC / str(pid) / "stat"
        try:
            return stat.read_text().split(")")[-1].split()[0] in ("Z", "X")
        except OSError:
            return False  # hidden from us (hidepid): taken to be alive
    return False
