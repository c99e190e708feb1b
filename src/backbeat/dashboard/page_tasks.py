"""The task list: state tabs, the filter form (a GET: the URL is the bookmark), keyset
pages from `Store.search`, a checkbox per row, and bulk actions on the selection or on
everything the filter matches."""

from __future__ import annotations

import time

from backbeat.dashboard.actions import LABELS, TASK_ACTIONS
from backbeat.dashboard.filters import filter_query
from backbeat.dashboard.pages import View, esc, hidden, layout, table, task_link
from backbeat.dashboard.snapshot import Snapshot
from backbeat.status import FINISHED, STATES
from backbeat.store_commands import when
from backbeat.stores.inspection import TaskFilter, TaskPage

ERROR_SHOWN = 120  # characters of an error in the list
PAGE_SIZE = 50


def tabs(view: View, where: TaskFilter, snapshot: Snapshot) -> str:
    query = filter_query(where)
    query.pop("state", None)
    total = sum(snapshot.counts.values())
    here = ' aria-current="page"'
    links = [
        f'<a href="{esc(view.url("tasks", query))}"{"" if where.state else here}>all '
        f'<span data-count="total">{total}</span></a>'
    ]
    for state in STATES:
        link = esc(view.url("tasks", {**query, "state": state}))
        current = here if where.state == state else ""
        links.append(
            f'<a href="{link}"{current}>{state} '
            f'<span data-count="{state}">{snapshot.counts.get(state, 0)}</span></a>'
        )
    return f'<nav class="tabs">{"".join(links)}</nav>'


def filter_form(view: View, where: TaskFilter) -> str:
    given = filter_query(where)

    def field(name: str, label: str, hint: str = "") -> str:
        placeholder = f' placeholder="{esc(hint)}"' if hint else ""
        value = esc(given.get(name, ""))
        return f'<label>{esc(label)} <input name="{name}" value="{value}"{placeholder}></label>'

    options = "".join(
        f'<option value="{state}"{" selected" if where.state == state else ""}>{state}</option>'
        for state in STATES
    )
    return (
        f'<form class="filters" method="get" action="{esc(view.url("tasks"))}">'
        + field("name", "Name", "emails.send")
        + f'<label>State <select name="state"><option value="">any</option>{options}'
        "</select></label>"
        + field("queue", "Queue")
        + field("id", "Id starts with")
        + field("argument", "Arguments contain")
        + field("error", "Error contains")
        + field("created_from", "Created from (UTC)", "2026-12-03T00:00")
        + field("created_to", "Created before (UTC)", "2026-12-04")
        + '<button type="submit">Filter</button>'
        + f' <a href="{esc(view.url("tasks"))}">clear</a></form>'
    )


def bulk_buttons(view: View) -> str:
    return "".join(
        f'<button type="submit" name="action" value="{action}">{LABELS[action]}</button>'
        for action in TASK_ACTIONS
        if view.can(action)
    )


def purge_form(view: View, back: str) -> str:
    """Purge finished tasks older than N hours (asks first, with the count)."""
    if not view.can("purge"):
        return ""
    boxes = "".join(
        f'<label><input type="checkbox" name="states" value="{state}" checked> {state}</label>'
        for state in FINISHED
    )
    return (
        f'<h2>Purge</h2><form class="bulk" method="post" action="{esc(view.url("actions/purge"))}">'
        f'<input type="hidden" name="back" value="{esc(back)}">'
        '<label>Finished more than <input name="older_than_hours" value="168" size="5" '
        f'inputmode="decimal"> hours ago</label> {boxes}'
        '<button type="submit">Purge…</button></form>'
    )


def render(
    view: View, where: TaskFilter, page: TaskPage, snapshot: Snapshot, before: str | None
) -> str:
    query = filter_query(where)
    back = view.url("tasks", {**query, "before": before or ""})
    acts = any(view.can(action) for action in TASK_ACTIONS)
    rows = []
    now = time.time()
    for task in page.tasks:
        state = task.info(now).state.value
        box = (
            f'<td><input type="checkbox" name="id" value="{esc(task.id)}" form="selection" '
            f'aria-label="select {esc(task.id)}"></td>'
            if acts
            else ""
        )
        error = task.error or ""
        if len(error) > ERROR_SHOWN:
            error = error[:ERROR_SHOWN] + "…"
        rows.append(
            f"<tr>{box}<td>{task_link(view, task.id)}</td><td>{esc(task.name)}</td>"
            f'<td class="state-{state}">{state}</td><td>{esc(task.queue)}</td>'
            f"<td>{task.attempts}</td><td>{when(task.created_at)}</td>"
            f'<td class="error-text">{esc(error)}</td></tr>'
        )
    head = ["id", "name", "state", "queue", "attempts", "created", "error"]
    if acts:
        head = ["", *head]
    listing = table(head, rows, "No task matches.")
    if acts and rows:
        # The header's cell: a select-all box the script drives (without it: tick each row,
        # or act on everything matching the filter below).
        listing = listing.replace(
            "<th></th>",
            '<th><input type="checkbox" data-select-all aria-label="select all"></th>',
            1,
        )
    more = ""
    if page.cursor is not None:
        further = esc(view.url("tasks", {**query, "before": page.cursor}))
        if len(page.tasks) < PAGE_SIZE:  # the scan ran out before the page filled
            more = (
                f'<p class="note">Searched {page.scanned} tasks. '
                f'<a href="{further}">Search further</a></p>'
            )
        else:
            more = f'<p class="pager"><a href="{further}" rel="next">Older →</a></p>'
    if before:
        more = f'<p class="pager"><a href="{esc(view.url("tasks", query))}">← Newest</a></p>' + more
    actions = ""
    if acts:
        hidden_back = f'<input type="hidden" name="back" value="{esc(back)}">'
        filter_fields = hidden(query.items())
        actions = (
            f'<form id="selection" class="bulk" method="post" action="{esc(view.url("actions"))}">'
            f'{hidden_back}<input type="hidden" name="scope" value="ids">'
            f"<span>Selected tasks:</span> {bulk_buttons(view)}</form>"
            f'<form class="bulk" method="post" action="{esc(view.url("actions"))}">'
            f'{hidden_back}<input type="hidden" name="scope" value="filter">{filter_fields}'
            f"<span>Everything matching the filter:</span> {bulk_buttons(view)}</form>"
        )
    body = (
        tabs(view, where, snapshot)
        + filter_form(view, where)
        + actions
        + listing
        + more
        + purge_form(view, back)
    )
    return layout(view, "tasks", "Tasks", body)
