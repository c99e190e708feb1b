"""Workers (host, pid, heartbeat age, running, leases held) and queues (counts, paused,
pause and resume)."""

from __future__ import annotations

import time

from backbeat.dashboard.pages import (
    View,
    esc,
    layout,
    pause_toggle,
    row,
    table,
    task_link,
)
from backbeat.dashboard.snapshot import RUNNING_SHOWN, Snapshot
from backbeat.status import STATES
from backbeat.store_commands import age


def render(view: View, snapshot: Snapshot) -> str:
    now = time.time()
    held: dict[str, list[str]] = {}
    for task in snapshot.running:
        if task.worker is not None:
            held.setdefault(task.worker, []).append(task.id)
    rows = []
    for worker in snapshot.workers:
        leases = " ".join(task_link(view, task_id) for task_id in held.get(worker.name, []))
        rows.append(
            row(
                esc(worker.name),
                esc(worker.host),
                str(worker.pid),
                f"{age(now - worker.seen_at)} ago",
                f"{worker.running} / {worker.concurrency}",
                esc("all" if worker.queues is None else ", ".join(worker.queues)),
                leases or "-",
            )
        )
    workers = table(
        ["name", "host", "pid", "heartbeat", "running", "queues", "leases held"],
        rows,
        "No worker is alive."
        if not view.local
        else "A runner without a store has no workers: this process runs its tasks.",
    )
    queue_rows = []
    for queue, counts in snapshot.queues.items():
        paused = queue in snapshot.paused
        cells = "".join(f"<td>{counts.get(state, 0)}</td>" for state in STATES)
        toggle = pause_toggle(view, "queue", paused, {"queue": queue, "back": view.url("workers")})
        status = '<span class="badge">paused</span>' if paused else "active"
        queue_rows.append(f"<tr><th>{esc(queue)}</th>{cells}<td>{status} {toggle}</td></tr>")
    queues = table(["queue", *STATES, ""], queue_rows, "No queues yet.")
    body = "<h2>Workers</h2>" + workers + leases_note(snapshot) + "<h2>Queues</h2>" + queues
    return layout(view, "workers", "Workers & queues", body)


def leases_note(snapshot: Snapshot) -> str:
    """Leases are read from the snapshot's newest running tasks only: with more running,
    say so rather than show a worker holding fewer than it does."""
    running = snapshot.counts.get("running", 0)
    if running <= len(snapshot.running):
        return ""
    return (
        f'<p class="note" id="leases-note">Leases held: the leases of the {RUNNING_SHOWN} '
        f"newest running tasks only ({running} tasks are running).</p>"
    )
