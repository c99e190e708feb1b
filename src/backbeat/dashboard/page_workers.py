"""Workers (host, pid, heartbeat age, running, leases held) and queues (counts, paused,
pause and resume)."""

from __future__ import annotations

import time

from backbeat.dashboard.pages import View, age, button_form, esc, layout, table, task_link
from backbeat.dashboard.snapshot import Snapshot
from backbeat.stores.base import COUNTED_STATES


def render(view: View, snapshot: Snapshot) -> str:
    now = time.time()
    held: dict[str, list[str]] = {}
    for task in snapshot.running:
        if task.worker is not None:
            held.setdefault(task.worker, []).append(task.id)
    rows = []
    for worker in snapshot.workers:
        leases = " ".join(task_link(view, task_id) for task_id in held.get(worker.name, []))
        queues = "all" if worker.queues is None else ", ".join(worker.queues)
        rows.append(
            f"<tr><td>{esc(worker.name)}</td><td>{esc(worker.host)}</td><td>{worker.pid}</td>"
            f"<td>{age(now - worker.seen_at)} ago</td>"
            f"<td>{worker.running} / {worker.concurrency}</td><td>{esc(queues)}</td>"
            f"<td>{leases or '-'}</td></tr>"
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
        cells = "".join(f"<td>{counts.get(state, 0)}</td>" for state in COUNTED_STATES)
        toggle = button_form(
            view,
            "resume_queue" if paused else "pause_queue",
            "Resume" if paused else "Pause",
            {"queue": queue, "back": view.url("workers")},
        )
        status = '<span class="badge">paused</span>' if paused else "active"
        queue_rows.append(f"<tr><th>{esc(queue)}</th>{cells}<td>{status} {toggle}</td></tr>")
    queues = table(["queue", *COUNTED_STATES, ""], queue_rows, "No queues yet.")
    note = f'<p class="note">Leases held: of the {len(snapshot.running)} newest running tasks.</p>'
    body = "<h2>Workers</h2>" + workers + note + "<h2>Queues</h2>" + queues
    return layout(view, "workers", "Workers & queues", body)
