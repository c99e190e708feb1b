"""One task: its arguments (through the redaction hook), result, progress, attempts (the
store's history where it keeps one, else the latest error and traceback), worker, queue,
times, and the actions valid for its state.

A running task's page follows it (``data-follow``: the script asks the live stream for
this task): its bar moves, and when the task leaves running the script loads the page
again, once, to show how it ended. A page of a task that is not running is not live.
"""

from __future__ import annotations

import json
import time
from typing import Any

from pydantic_core import from_json

from backbeat.dashboard.actions import LABELS, actions_for
from backbeat.dashboard.pages import View, button_form, esc, layout, progress_bar
from backbeat.dashboard.redact import Redact
from backbeat.progress import read_report
from backbeat.store_commands import when
from backbeat.stores.base import StoredStatus
from backbeat.stores.inspection import AttemptRecord


def arguments_of(task: StoredStatus, redact: Redact) -> Any:
    """The arguments as shown: decoded and redacted (None: not kept, as in process)."""
    if task.payload is None:
        return None
    try:
        document = from_json(task.payload)
    except ValueError:
        return {"unreadable": "the stored arguments are not JSON"}
    return redact(document)


def _pretty(value: Any) -> str:
    return f"<pre>{esc(json.dumps(value, indent=2, ensure_ascii=False, default=repr))}</pre>"


def _decoded(document: str | None) -> Any:
    if document is None:
        return None
    try:
        return from_json(document)
    except ValueError:
        return document


def timeline(task: StoredStatus, state: str, attempts: list[AttemptRecord]) -> str:
    """Each attempt that did not succeed (outcome, worker, times, error, traceback), then
    the current one: running, or how the task ended if that is not in the history."""
    items = []
    for attempt in attempts:
        worker = f" on {esc(attempt.worker)}" if attempt.worker else ""
        trace = ""
        if attempt.traceback:
            shown = esc(attempt.traceback)
            trace = f"<details><summary>traceback</summary><pre>{shown}</pre></details>"
        items.append(
            f'<li><strong>#{attempt.number}</strong> <span class="state-{esc(attempt.outcome)}">'
            f"{esc(attempt.outcome)}</span>{worker}, {when(attempt.started_at)} → "
            f"{when(attempt.finished_at)}"
            f'<div class="error-text">{esc(attempt.error or "")}</div>{trace}</li>'
        )
    recorded = attempts[-1].number if attempts else 0
    if task.attempts > recorded and state in ("running", "succeeded"):
        worker = f" on {esc(task.worker)}" if task.worker else ""
        items.append(
            f'<li><strong>#{task.attempts}</strong> <span class="state-{state}">{state}</span>'
            f"{worker}, {when(task.started_at)} → {when(task.finished_at)}</li>"
        )
    return f'<ol class="timeline">{"".join(items)}</ol>'


def progress_section(task: StoredStatus, state: str) -> str:
    """The progress bar: live while running; else as the task left it, full for a task that
    succeeded (its last report may have said less; the work is done)."""
    if state != "running" and task.progress is None:
        return ""
    fraction, message = read_report(task.progress)
    if state == "succeeded":
        fraction = 1.0
    live = task.id if state == "running" else None
    return f"<h2>Progress</h2><p>{progress_bar(fraction, message, live)}</p>"


def render(
    view: View,
    task: StoredStatus,
    attempts: list[AttemptRecord] | None,
    redact: Redact,
    back: str,
) -> str:
    state = task.info(time.time()).state.value
    facts = [
        ("State", f'<span class="state-{state}">{state}</span>'),
        ("Name", esc(task.name)),
        ("Queue", esc(task.queue)),
        ("Priority", str(task.priority)),
        ("Attempts", str(task.attempts)),
        ("Worker", esc(task.worker or "-")),
        ("Created", when(task.created_at)),
        ("Due", when(task.due_at) if state in ("pending", "scheduled") else "-"),
        ("Started", when(task.started_at)),
        ("Finished", when(task.finished_at)),
    ]
    follow = f' data-follow="{esc(task.id)}"' if state == "running" else ""
    body = (
        f'<dl class="facts"{follow}>'
        + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
        + "</dl>"
    )
    buttons = "".join(
        button_form(view, action, LABELS[action], {"id": task.id, "back": back, "confirm": "yes"})
        for action in actions_for(state)
    )
    if buttons:
        body += f'<div class="actions">{buttons}</div>'
    body += progress_section(task, state)
    arguments = arguments_of(task, redact)
    body += "<h2>Arguments</h2>" + (
        _pretty(arguments)
        if arguments is not None
        else '<p class="note">Not kept: an in-process task holds live objects.</p>'
    )
    if task.result is not None:
        body += "<h2>Result</h2>" + _pretty(_decoded(task.result))
    body += "<h2>Attempts</h2>"
    if attempts:
        body += timeline(task, state, attempts)
    elif task.error:
        body += f'<p class="error-text">Latest error: {esc(task.error)}</p>'
        if task.traceback:
            body += f"<pre>{esc(task.traceback)}</pre>"
    else:
        body += f"<p>{task.attempts} attempt(s), no error recorded.</p>"
    return layout(view, "tasks", f"Task {task.id}", body)
