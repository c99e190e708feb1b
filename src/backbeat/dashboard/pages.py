"""What every page shares: the layout, escaping, links under the mount, and formatting.

Pages are plain functions building HTML strings. Everything that comes from a task (name,
arguments, result, error, progress message, queue and worker names) goes through `esc`;
links are built from the request's ``root_path``, so the dashboard works mounted at any
path. No inline script and no ``style=""`` (the CSP forbids both): state is shown with
classes, SVG attributes and ``<progress>``.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlencode

from backbeat.dashboard.access import Grant
from backbeat.store_commands import age

NAV = (
    ("", "Overview"),
    ("tasks", "Tasks"),
    ("failures", "Failures"),
    ("workers", "Workers & queues"),
    ("schedules", "Schedules & limits"),
)


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


@dataclass(frozen=True, slots=True)
class View:
    """What a page needs to know about the request it answers."""

    root: str  # where the dashboard is mounted ("" at the top)
    title: str
    grant: Grant
    local: bool  # a memory runner: read and cancel only
    flash: str | None = None
    source: str = ""  # what is shown: a store URL (no password), a store's kind

    def url(self, path: str = "", query: dict[str, str] | None = None) -> str:
        link = f"{self.root}/{path}"
        given = {key: value for key, value in (query or {}).items() if value}
        return f"{link}?{urlencode(given)}" if given else link

    def can(self, action: str) -> bool:
        return self.grant.can(action) and (not self.local or action == "cancel")


def layout(view: View, current: str, heading: str, body: str) -> str:
    here = ' aria-current="page"'
    links = "".join(
        f'<a href="{esc(view.url(path))}"{here if path == current else ""}>{label}</a>'
        for path, label in NAV
    )
    flash = f'<p class="flash" role="status">{esc(view.flash)}</p>' if view.flash else ""
    mode = ""
    if view.local:
        mode = (
            '<p class="note">A runner without a store: this shows its in-process table only. '
            "Cancel works; retry, run now, delete and purge need a store (its failed tasks "
            "are gone with their closures).</p>"
        )
    elif not view.grant.acts:
        mode = '<p class="note">Read-only: you may look, not act.</p>'
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(heading)} · {esc(view.title)}</title>"
        f'<link rel="stylesheet" href="{esc(view.url("static/dashboard.css"))}">'
        f'<script src="{esc(view.url("static/dashboard.js"))}" defer></script>'
        f'</head><body data-events="{esc(view.url("events"))}">'
        f'<header><a class="brand" href="{esc(view.url())}">{esc(view.title)}</a>'
        f'<nav>{links}</nav><span class="source">{esc(view.source)}</span></header>'
        f"<main>{flash}{mode}<h1>{esc(heading)}</h1>{body}</main>"
        "</body></html>"
    )


def message_page(view: View, heading: str, text: str) -> str:
    return layout(view, "-", heading, f"<p>{esc(text)}</p>")


def ago(timestamp: float | None) -> str:
    return "-" if timestamp is None else age(time.time() - timestamp)


def hidden(fields: Iterable[tuple[str, str]]) -> str:
    """The hidden inputs a form posts: (name, value) pairs, a name may come more than once."""
    return "".join(
        f'<input type="hidden" name="{esc(name)}" value="{esc(value)}">' for name, value in fields
    )


def button_form(view: View, action: str, label: str, fields: dict[str, str]) -> str:
    """A one-button POST form for an action (shown only to those who may do it)."""
    if not view.can(action):
        return ""
    return (
        f'<form class="inline" method="post" action="{esc(view.url("actions/" + action))}">'
        f'{hidden(fields.items())}<button type="submit">{esc(label)}</button></form>'
    )


def pause_toggle(view: View, kind: str, paused: bool, fields: dict[str, str]) -> str:
    """The button that resumes a paused queue or schedule (`kind`), or pauses it."""
    action = f"{'resume' if paused else 'pause'}_{kind}"
    return button_form(view, action, "Resume" if paused else "Pause", fields)


def row(*cells: str) -> str:
    """A table row of cells already escaped or built."""
    return "<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


def table(head: list[str], rows: list[str], empty: str) -> str:
    if not rows:
        return f'<p class="empty">{esc(empty)}</p>'
    cells = "".join(f"<th>{esc(cell)}</th>" for cell in head)
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def progress_bar(fraction: float | None, message: str, live: str | None = None) -> str:
    """A bar and its message; `live`: the id of the running task whose bar the live stream
    moves (the script follows the bars marked with it)."""
    value = "" if fraction is None else f' value="{fraction:.3f}"'
    shown = "" if fraction is None else f"{fraction:.0%}"
    bar_mark = "" if live is None else f' data-progress="{esc(live)}"'
    message_mark = "" if live is None else f' data-progress-message="{esc(live)}"'
    return (
        f'<progress{bar_mark} max="1"{value}>{shown}</progress>'
        f" <span{message_mark}>{esc(message)}</span>"
    )


def task_link(view: View, task_id: str) -> str:
    return f'<a href="{esc(view.url("tasks/" + task_id))}"><code>{esc(task_id)}</code></a>'
