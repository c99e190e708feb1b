"""Failures grouped by task name and exception type, each with "retry group" and a link to
its tasks."""

from __future__ import annotations

from backbeat.dashboard.pages import View, ago, button_form, esc, layout, table, task_link
from backbeat.stores.inspection import FailureGroup

FAILURES_SCANNED = 10_000


def group_filter(group: FailureGroup) -> dict[str, str]:
    """The task filter of a group: failed, this name, an error holding its type (a piece of
    the message: it finds MyValueError's failures for ValueError too)."""
    return {"state": "failed", "name": group.name, "error": group.exception}


def render(view: View, groups: list[FailureGroup]) -> str:
    rows = []
    for group in groups:
        where = group_filter(group)
        # The retry is on the group's exact exception type (`actions.Selection`).
        fields = {"scope": "filter", **where, "exception": group.exception}
        retry = button_form(view, "retry", "Retry group", {**fields, "back": view.url("failures")})
        rows.append(
            f"<tr><td>{esc(group.name)}</td><td><code>{esc(group.exception)}</code></td>"
            f'<td><a href="{esc(view.url("tasks", where))}">{group.count}</a></td>'
            f"<td>{task_link(view, group.latest_id)} {ago(group.latest_at)} ago</td>"
            f'<td class="error-text">{esc(group.example)}</td><td>{retry}</td></tr>'
        )
    body = (
        f'<p class="note">Of the {FAILURES_SCANNED} most recently created failed tasks.</p>'
        + table(["task", "exception", "failed", "latest", "example", ""], rows, "No failed tasks.")
    )
    return layout(view, "failures", "Failures", body)
