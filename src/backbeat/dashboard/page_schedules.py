"""Schedules (rule, next and last run, pause and resume) and the limits in use now."""

from __future__ import annotations

from backbeat.dashboard.pages import View, esc, layout, pause_toggle, row, table, task_link
from backbeat.dashboard.snapshot import Snapshot


def render(view: View, snapshot: Snapshot) -> str:
    rows = []
    for document in snapshot.schedules:
        name = str(document["name"])
        paused = bool(document["paused"])
        back = view.url("schedules")
        toggle = pause_toggle(view, "schedule", paused, {"name": name, "back": back})
        last = document.get("last_task")
        last_state = esc(document["last_state"])
        if last:
            last_state += " " + task_link(view, str(last))
        rows.append(
            row(
                esc(name),
                f"<code>{esc(document['rule'])}</code>",
                esc(document["zone"]),
                esc(document["next_run"]),
                esc(document["last_run"]),
                last_state,
                toggle,
            )
        )
    schedules = table(
        ["name", "rule", "zone", "next run", "last run", "last state", ""],
        rows,
        "No schedules (a runner with this store records its own when it starts).",
    )
    gate_rows = [
        row(
            esc(gate.kind),
            esc(gate.name),
            esc(gate.key or "-"),
            f"{gate.used} / {gate.limit}"
            + (f" per {gate.window:g}s" if gate.kind == "rate" else " running"),
            str(gate.waiting),
        )
        for gate in snapshot.gates
    ]
    gates = table(["limit", "of", "key", "used", "waiting"], gate_rows, "No limit is in use now.")
    body = "<h2>Schedules</h2>" + schedules + "<h2>Rate limits and concurrency</h2>" + gates
    return layout(view, "schedules", "Schedules & limits", body)
