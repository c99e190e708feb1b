"""Schedules (rule, next and last run, pause and resume) and the limits in use now."""

from __future__ import annotations

from backbeat.dashboard.pages import View, button_form, esc, layout, table, task_link
from backbeat.dashboard.snapshot import Snapshot


def render(view: View, snapshot: Snapshot) -> str:
    rows = []
    for document in snapshot.schedules:
        paused = bool(document["paused"])
        toggle = button_form(
            view,
            "resume_schedule" if paused else "pause_schedule",
            "Resume" if paused else "Pause",
            {"name": str(document["name"]), "back": view.url("schedules")},
        )
        last = document.get("last_task")
        rows.append(
            f"<tr><td>{esc(document['name'])}</td><td><code>{esc(document['rule'])}</code></td>"
            f"<td>{esc(document['zone'])}</td><td>{esc(document['next_run'])}</td>"
            f"<td>{esc(document['last_run'])}</td><td>{esc(document['last_state'])}"
            f"{' ' + task_link(view, str(last)) if last else ''}</td><td>{toggle}</td></tr>"
        )
    schedules = table(
        ["name", "rule", "zone", "next run", "last run", "last state", ""],
        rows,
        "No schedules (a runner with this store records its own when it starts).",
    )
    gate_rows = [
        f"<tr><td>{esc(gate.kind)}</td><td>{esc(gate.name)}</td><td>{esc(gate.key or '-')}</td>"
        f"<td>{gate.used} / {gate.limit}"
        f"{f' per {gate.window:g}s' if gate.kind == 'rate' else ' running'}</td>"
        f"<td>{gate.waiting}</td></tr>"
        for gate in snapshot.gates
    ]
    gates = table(["limit", "of", "key", "used", "waiting"], gate_rows, "No limit is in use now.")
    body = "<h2>Schedules</h2>" + schedules + "<h2>Rate limits and concurrency</h2>" + gates
    return layout(view, "schedules", "Schedules & limits", body)
