"""``backbeat watch --store URL``: a live view of a store in the terminal, redrawn in place.

Each frame comes from one `Snapshot`, read with a bounded number of queries whatever the
store's size: `counts` (and, when there are several queues, one `counts` per queue for at
most `QUEUES_SHOWN` of them), the workers, the ``--limit`` most recently created running
tasks (one `list_tasks`), and the schedules as `backbeat schedules` reads them (one `get`
each). `frame` renders a snapshot as text and is pure, so it is tested without a terminal;
`watch` reads and redraws every ``--interval`` seconds.

On a terminal, each frame is drawn from the top left (cursor home, each line cleared to its
end, then the rest of the screen): no curses and no alternate screen, so the last frame
stays readable after Ctrl-C. Lines are cut to the terminal's width and the frame to its
height (a frame taller than the screen would scroll, and the next one would be drawn over
the wrong lines); a resize redraws at once. Not on a terminal (a pipe, a file) or with
``--once``: one frame, without escape sequences, exit 0 — lines are cut only if $COLUMNS
is set.

Throughput is the tasks that finished (succeeded, failed or cancelled) per second between
two frames. A count that went down (finished tasks purged meanwhile, by a worker or
`backbeat purge`) counts as no change, and the rate is then shown as a lower bound
(">="): never negative. The first frame has no rate yet.

A store that fails mid-watch (unreachable, no answer within `READ_TIMEOUT`) is said at the
top of the frame, above the last snapshot read (with its time), and read again at the next
interval; a store missing at the start is exit 2, and one that cannot be read at the start
exit 1, as for every store command.

Whatever a task wrote (its name, its progress message) is shown with control characters
replaced: a message cannot move the cursor or restyle the operator's terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import io
import os
import shutil
import signal
import sys
import time
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from backbeat.progress import read_report
from backbeat.status import FINISHED, STATES
from backbeat.store_commands import CommandError, age, alive_workers, schedule_documents, table
from backbeat.stores import Store, StoreError, open_store
from backbeat.stores.base import StoredStatus, WorkerInfo

QUEUES_SHOWN = 20
READ_TIMEOUT = 10.0
MIN_INTERVAL = 0.1
BAR = 10  # characters of a progress bar

# Cursor home; clear to the end of the line; clear to the end of the screen; hide and
# show the cursor (ECMA-48 / VT100: every terminal emulator in use understands them).
HOME, CLEAR_LINE, CLEAR_BELOW = "\x1b[H", "\x1b[K", "\x1b[J"
HIDE_CURSOR, SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What one frame shows, read from the store at `taken_at`."""

    store: str  # the URL, as given
    taken_at: float  # time.time()
    clock: float  # time.monotonic(), for the rates
    counts: dict[str, int]
    queues: dict[str, dict[str, int]]  # per queue, when the store has several
    more_queues: int  # queues not read (beyond QUEUES_SHOWN)
    workers: list[WorkerInfo]
    running: list[StoredStatus]  # the most recently created, at most --limit
    schedules: list[dict[str, Any]]  # as `backbeat schedules --json` shows them
    error: str | None = None  # the latest read failed: this is the one before it
    failed_at: float | None = None


async def read(store: Store, url: str, limit: int) -> Snapshot:
    """One snapshot: at most 5 + QUEUES_SHOWN + one query per schedule."""
    counts = await store.counts()
    names = await store.queues()
    queues = {}
    if len(names) > 1:
        for name in names[:QUEUES_SHOWN]:
            queues[name] = await store.counts(name)
    workers = await alive_workers(store)
    running = await store.list_tasks(state="running", limit=limit) if limit else []
    now = time.time()
    schedules = await schedule_documents(store, now)
    return Snapshot(
        store=url,
        taken_at=now,
        clock=time.monotonic(),
        counts=counts,
        queues=queues,
        more_queues=max(len(names) - QUEUES_SHOWN, 0),
        workers=workers,
        running=running,
        schedules=schedules,
    )


# --- rendering ------------------------------------------------------------------------------


def frame(
    snapshot: Snapshot,
    previous: Snapshot | None,
    now: float,
    width: int | None = None,
    height: int | None = None,
    *,
    every: float | None = None,
) -> str:
    """The text of one frame: no escape sequences, no trailing newline; each line cut to
    `width` columns, and the whole to `height` lines (None: uncut)."""
    header = f"backbeat watch  {snapshot.store}  {_clock(now)}"
    lines = [header + (f"  every {every:g}s" if every else "")]
    if snapshot.error is not None:
        lines.append(f"! store error at {_clock(snapshot.failed_at or now)}: {snapshot.error}")
        lines.append(f"! retrying; below: as read at {_clock(snapshot.taken_at)}")
    lines.append("")
    lines.append("  ".join(f"{state} {snapshot.counts.get(state, 0)}" for state in STATES))
    lines.append(throughput(snapshot, previous))
    if snapshot.queues:
        rows = [["QUEUE", *(state.upper() for state in STATES)]]
        for queue, counts in snapshot.queues.items():
            rows.append([_clean(queue), *(str(counts.get(state, 0)) for state in STATES)])
        lines.append("")
        lines.extend(table(rows).splitlines())
        if snapshot.more_queues:
            lines.append(f"... and {snapshot.more_queues} more queue(s): backbeat status")
    lines.append("")
    lines.append(_workers(snapshot.workers))
    lines.extend(_running(snapshot, now))
    if snapshot.schedules:
        rows = [["SCHEDULE", "RULE", "NEXT", "LAST", "LAST STATE"]]
        for document in snapshot.schedules:
            keys = ("name", "rule", "next_run", "last_run", "last_state")
            rows.append([_clean(str(document[key])) for key in keys])
        lines.append("")
        lines.extend(table(rows).splitlines())
    if height is not None and len(lines) > height:
        hidden = len(lines) - height + 1
        lines = [*lines[: height - 1], f"... {hidden} more line(s): a taller terminal shows them"]
    if width is not None:
        lines = [cut(line, width) for line in lines]
    return "\n".join(lines)


def throughput(snapshot: Snapshot, previous: Snapshot | None) -> str:
    """Finished tasks per second since `previous`, per finished state; never negative."""
    if previous is None or snapshot.clock <= previous.clock:
        return "throughput  - (measured between two frames)"
    seconds = snapshot.clock - previous.clock
    changes = {
        state: snapshot.counts.get(state, 0) - previous.counts.get(state, 0) for state in FINISHED
    }
    # A drop is a purge: what finished meanwhile is unknown, at least none of it.
    bound = ">= " if any(change < 0 for change in changes.values()) else ""
    rates = {state: max(change, 0) / seconds for state, change in changes.items()}
    each = ", ".join(f"{state} {rate:.1f}/s" for state, rate in rates.items())
    return f"throughput  {bound}{sum(rates.values()):.1f}/s finished over {seconds:.1f}s ({each})"


def _workers(workers: list[WorkerInfo]) -> str:
    if not workers:
        return "workers  none alive"
    busy = sum(worker.running for worker in workers)
    slots = sum(worker.concurrency for worker in workers)
    return f"workers  {len(workers)} alive, running {busy} of {slots} slot(s)"


def _running(snapshot: Snapshot, now: float) -> list[str]:
    total = snapshot.counts.get("running", 0)
    if not snapshot.running:
        return ["", f"running  {total}"]
    shown = len(snapshot.running)
    heading = f"running  {total}" if total <= shown else f"running  {total}, {shown} newest shown"
    alive = {worker.name for worker in snapshot.workers}
    rows = [["ID", "NAME", "FOR", "PROGRESS", "WORKER", "MESSAGE"]]
    # Longest running first: a stuck task is what one looks for.
    for task in sorted(snapshot.running, key=lambda task: task.started_at or now):
        fraction, message = read_report(task.progress)
        worker = "-" if task.worker is None else _host_pid(task.worker)
        if task.worker is not None and task.worker not in alive:
            worker += " (no heartbeat)"
        since = "-" if task.started_at is None else age(now - task.started_at)
        rows.append(
            [task.id, _clean(task.name), since, bar(fraction), _clean(worker), _clean(message)]
        )
    return ["", heading, *table(rows).splitlines()]


def bar(fraction: float | None) -> str:
    """``[####......]  40%``; blank brackets when the task reported no fraction."""
    if fraction is None:
        return "[" + " " * BAR + "]"
    fraction = min(max(float(fraction), 0.0), 1.0)
    filled = int(fraction * BAR)  # full only at 100%
    return f"[{'#' * filled}{'.' * (BAR - filled)}] {int(fraction * 100):>3d}%"


def _host_pid(worker: str) -> str:
    """``host:pid`` of a worker's name (``host:pid:random``): what finds the process."""
    host, _, rest = worker.partition(":")
    pid = rest.partition(":")[0]
    return f"{host}:{pid}" if pid else worker


def _clock(timestamp: float) -> str:
    return f"{datetime.fromtimestamp(timestamp, UTC):%Y-%m-%d %H:%M:%S}Z"


def _clean(text: str) -> str:
    """Control characters (escape, newline, C1) shown as ``?``."""
    return "".join("?" if unicodedata.category(char) == "Cc" else char for char in text)


def cut(line: str, width: int) -> str:
    """The line cut to `width` terminal columns (wide characters take two), ``~`` marking
    a cut."""
    if _display_width(line) <= width:
        return line
    kept, columns = [], 0
    for char in line:
        columns += _columns(char)
        if columns > width - 1:
            break
        kept.append(char)
    return "".join(kept) + "~"


def _columns(char: str) -> int:
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def _display_width(text: str) -> int:
    return sum(_columns(char) for char in text)


# --- the command ----------------------------------------------------------------------------


def run_watch(args: argparse.Namespace) -> int:
    """`backbeat watch`: exit 0 when stopped (Ctrl-C, SIGTERM) or after its one frame."""
    if args.interval < MIN_INTERVAL:
        raise CommandError(f"--interval must be at least {MIN_INTERVAL}s, got {args.interval:g}")
    if args.limit < 0:
        raise CommandError(f"--limit must be >= 0, got {args.limit}")
    out = sys.stdout
    live = out.isatty() and not args.once and os.environ.get("TERM") != "dumb"
    if isinstance(out, io.TextIOWrapper):
        out.reconfigure(errors="replace")  # a task's message in a locale that lacks its letters
    store = open_store(args.store, create=False)
    try:
        return asyncio.run(watch(store, args.store, args.interval, args.limit, out, live=live))
    except KeyboardInterrupt:  # before the signal handlers were in place, or after
        return 0


async def watch(
    store: Store, url: str, interval: float, limit: int, out: TextIO, *, live: bool
) -> int:
    try:
        await store.open()
        current = await read(store, url, limit)  # a failure here is the command's error
        if not live:
            width = _terminal_size()[0] if out.isatty() else _columns_from_environment()
            out.write(frame(current, None, time.time(), width) + "\n")
            return 0
        await _live(store, url, interval, limit, current, out)
        return 0
    finally:
        await store.close()


async def _live(
    store: Store, url: str, interval: float, limit: int, current: Snapshot, out: TextIO
) -> None:
    loop = asyncio.get_running_loop()
    stop, resized = asyncio.Event(), asyncio.Event()
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGWINCH)
    for signum in handled:
        loop.add_signal_handler(signum, resized.set if signum == signal.SIGWINCH else stop.set)
    previous: Snapshot | None = None
    out.write(HIDE_CURSOR)
    try:
        deadline = time.monotonic() + interval
        while True:
            columns, lines = _terminal_size()
            # One column spare: a character in the last column leaves the cursor waiting to
            # wrap, and clearing the rest of the line then erases that character.
            text = frame(current, previous, time.time(), columns - 1, lines, every=interval)
            _draw(out, text)
            await _first(stop, resized, within=deadline - time.monotonic())
            if stop.is_set():
                return
            if resized.is_set():
                resized.clear()
                continue  # the same snapshot at the new size; the next read when due
            fresh = await _read_unless_stopped(store, url, limit, stop)
            if fresh is None:
                return
            # `interval` between the end of a read and the next: a slow store is not read
            # back to back.
            deadline = time.monotonic() + interval
            if isinstance(fresh, Snapshot):
                # After failed reads, `current` is the last snapshot read (with the error):
                # the rate spans the outage.
                previous, current = current, fresh
            else:
                current = dataclasses.replace(current, error=fresh, failed_at=time.time())
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)
        out.write(SHOW_CURSOR + "\n")
        out.flush()


async def _read_unless_stopped(
    store: Store, url: str, limit: int, stop: asyncio.Event
) -> Snapshot | str | None:
    """A snapshot, or why there is none (said in the frame); None when stopped."""
    reading = asyncio.ensure_future(asyncio.wait_for(read(store, url, limit), READ_TIMEOUT))
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait((reading, stopping), return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not reading.done():
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
        return None
    error = reading.exception()
    if error is None:
        return reading.result()
    if isinstance(error, TimeoutError):
        why = f"no answer within {READ_TIMEOUT:g}s"
    elif isinstance(error, StoreError):
        why = str(error)
    else:
        why = f"{type(error).__name__}: {error}"
    with contextlib.suppress(Exception):  # closing a broken connection may fail too
        await store.close()  # the next read connects afresh
    return _clean(why)


async def _first(*events: asyncio.Event, within: float) -> None:
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=max(within, 0.0), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def _draw(out: TextIO, text: str) -> None:
    """Over the previous frame: from the top left, each line cleared after its text, then
    everything below the frame."""
    body = (CLEAR_LINE + "\n").join(text.split("\n"))
    out.write(HOME + body + CLEAR_LINE + CLEAR_BELOW)
    out.flush()


def _terminal_size() -> tuple[int, int]:
    size = shutil.get_terminal_size()
    return max(size.columns, 20), max(size.lines, 5)


def _columns_from_environment() -> int | None:
    value = os.environ.get("COLUMNS", "")
    return int(value) if value.isdigit() and int(value) > 0 else None
