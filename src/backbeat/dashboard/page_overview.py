"""The overview: counts per state and queue, charts, latency, oldest wait, workers, running."""

from __future__ import annotations

import time

from backbeat.dashboard.charts import chart
from backbeat.dashboard.pages import (
    View,
    ago,
    esc,
    layout,
    progress_bar,
    table,
    task_link,
)
from backbeat.dashboard.snapshot import BUCKETS, History, Snapshot
from backbeat.progress import read_report
from backbeat.status import STATES
from backbeat.store_commands import age


def counts_table(view: View, snapshot: Snapshot) -> str:
    cells = "".join(
        f'<div class="count state-{state}"><a href="{esc(view.url("tasks", {"state": state}))}">'
        f'<span class="label">{state}</span>'
        f'<span class="number" data-count="{state}">{snapshot.counts.get(state, 0)}</span>'
        "</a></div>"
        for state in STATES
    )
    return f'<section class="counts">{cells}</section>'


def queues_table(view: View, snapshot: Snapshot) -> str:
    rows = []
    for queue, counts in snapshot.queues.items():
        cells = "".join(
            f'<td data-queue-count="{esc(queue)}/{state}">{counts.get(state, 0)}</td>'
            for state in STATES
        )
        link = esc(view.url("tasks", {"queue": queue}))
        paused = ' <span class="badge">paused</span>' if queue in snapshot.paused else ""
        rows.append(f'<tr><th><a href="{link}">{esc(queue)}</a>{paused}</th>{cells}</tr>')
    more = ""
    if snapshot.more_queues:
        more = f'<p class="note">… and {snapshot.more_queues} more queue(s) not read.</p>'
    return table(["queue", *STATES], rows, "No queues yet.") + more


def running_table(view: View, snapshot: Snapshot) -> str:
    now = time.time()
    rows = [
        f"<tr><td>{task_link(view, task.id)}</td><td>{esc(task.name)}</td>"
        f"<td>{esc(task.queue)}</td>"
        f"<td>{age(None if task.started_at is None else now - task.started_at)}</td>"
        f"<td>{progress_bar(*read_report(task.progress), live=task.id)}</td></tr>"
        for task in snapshot.running
    ]
    return table(["id", "name", "queue", "for", "progress"], rows, "Nothing is running.")


def facts(snapshot: Snapshot, history: History) -> dict[str, str]:
    """The overview's figures as shown (the live stream sends the same strings)."""
    throughput = history.throughput()
    latency = history.latency()
    oldest = None if snapshot.oldest_due is None else time.time() - snapshot.oldest_due
    bound = "≥ " if history.lower_bound() else ""
    alive = len(snapshot.workers)
    slots = sum(worker.concurrency for worker in snapshot.workers)
    return {
        "throughput": f"{bound}{throughput[-1]:.1f}/s" if throughput else "-",
        "latency": "-" if latency is None else f"{latency:.2f}s",
        "oldest": age(oldest),
        "workers": f"{alive} ({slots} slots)" if alive else "0",
    }


def chart_values(history: History) -> dict[str, tuple[list[float], str]]:
    """Each chart's values and the label of its top."""
    throughput = history.throughput()
    failures = history.failure_rate()
    return {
        "throughput": (throughput, f"{max(throughput, default=0):.1f}/s"),
        "failures": (failures, f"{max(failures, default=0):.0%}"),
    }


TITLES = {"throughput": "Finished per second, last hour", "failures": "Failure rate, last hour"}
LABELS = {
    "throughput": "Throughput",
    "latency": "Enqueue to start",
    "oldest": "Oldest pending",
    "workers": "Workers alive",
}


def render(view: View, snapshot: Snapshot, history: History) -> str:
    error = ""
    if snapshot.error:
        error = (
            f'<p class="error" role="alert">Reading the store failed: {esc(snapshot.error)}. '
            f"Shown: what was read {esc(ago(snapshot.taken_at))} ago.</p>"
        )
    shown = facts(snapshot, history)
    figures = "".join(
        f'<dt>{LABELS[name]}</dt><dd data-fact="{name}">{esc(value)}</dd>'
        for name, value in shown.items()
    )
    charts = "".join(
        chart(name, TITLES[name], values, BUCKETS, top)
        for name, (values, top) in chart_values(history).items()
    )
    body = (
        error
        + counts_table(view, snapshot)
        + f'<dl class="facts">{figures}</dl>'
        + f'<section class="charts">{charts}</section>'
        + "<h2>Queues</h2>"
        + queues_table(view, snapshot)
        + f"<h2>Running <small>(the {len(snapshot.running)} newest)</small></h2>"
        + running_table(view, snapshot)
    )
    return layout(view, "", "Overview", body)
