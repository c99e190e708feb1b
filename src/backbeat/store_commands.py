"""The ``backbeat`` commands that look into a store: status, workers, list, show, cancel, …

Each opens the store without creating it (a store that does not exist is exit 2),
does its work in one event loop, and prints aligned text for people or, with
``--json``, one JSON object per task for scripts. Exit codes: 0 done, 1 an error
or ids that were not acted on, 2 usage errors and missing stores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

from pydantic_core import from_json

from backbeat.processes import is_gone
from backbeat.schedules import Cron, rule_from_text, shown_time
from backbeat.status import FINISHED, STATES, UNFINISHED
from backbeat.stores import Store, open_store
from backbeat.stores.base import StoredStatus, WorkerInfo


class CommandError(Exception):
    """Said on one line, exit 1."""


def run_store_command(args: argparse.Namespace) -> int:
    command = COMMANDS[args.command]
    if args.command == "retry" and bool(args.ids) == args.failed:  # before touching the store
        raise CommandError("give task ids, or --failed for every failed task (not both)")
    store = open_store(args.store, create=False)
    return asyncio.run(_with(store, command, args))


async def _with(store: Store, command: Any, args: argparse.Namespace) -> int:
    try:
        await store.open()
        code: int = await command(store, args)
        return code
    finally:
        await store.close()


async def alive_workers(store: Store) -> list[WorkerInfo]:
    """The workers whose heartbeats go on, less those seen dead from here (their process is
    gone from this machine) that no live worker has taken over yet."""
    return [
        worker
        for worker in await store.workers()
        if not is_gone(worker.machine, worker.pid, worker.process_started)
    ]


def when(timestamp: float | None) -> str:
    """A time as the commands, the watch and the dashboard show it: UTC, to the second."""
    if timestamp is None:
        return "-"
    return f"{datetime.fromtimestamp(timestamp, UTC):%Y-%m-%d %H:%M:%S}Z"


def age(seconds: float | None) -> str:
    """``45s``, ``3m05s``, ``2h07m``, ``3d04h``; ``-`` for none."""
    if seconds is None:
        return "-"
    whole = max(int(seconds), 0)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def _document(task: StoredStatus) -> dict[str, Any]:
    info = task.info(time.time())
    shown = info.as_dict()
    shown["arguments"] = None if task.payload is None else from_json(task.payload)
    shown.update(traceback=task.traceback, worker=task.worker, priority=task.priority)
    return shown


def table(rows: list[list[str]], indent: str = "") -> str:
    widths = [max(len(row[n]) for row in rows) for n in range(len(rows[0]))]
    return "".join(
        indent
        + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        + "\n"
        for row in rows
    )


async def status(store: Store, args: argparse.Namespace) -> int:
    counts = await store.counts()
    recent = await store.list_tasks(state="failed", limit=args.failures) if args.failures else []
    alive = await alive_workers(store)
    out = sys.stdout
    out.write(f"store {args.store}\n\n")
    width = max(len(state) for state in counts)
    for state, count in counts.items():
        out.write(f"  {state:<{width}}  {count:>8}\n")
    queues = await store.queues()
    paused = await store.paused_queues()
    if queues:
        rows = [["QUEUE", *(state.upper() for state in counts)]]
        for queue in queues:
            of_queue = await store.counts(queue)
            shown = f"{queue} (paused)" if queue in paused else queue
            rows.append([shown, *(str(of_queue[state]) for state in counts)])
        out.write("\nby queue:\n" + table(rows, indent="  "))
    if paused:
        out.write(f"\npaused queues: {', '.join(paused)} (backbeat queues resume NAME)\n")
    out.write(f"\nworkers: {len(alive)} alive, running {sum(w.running for w in alive)} task(s)\n")
    if recent:
        out.write(f"\nmost recent failures ({len(recent)}):\n")
        for task in recent:
            out.write(
                f"  {when(task.finished_at or task.created_at)}  {task.id}  {task.name}  "
                f"(attempts {task.attempts})\n      {task.error}\n"
            )
    return 0


async def listing(store: Store, args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise CommandError(f"--limit must be >= 1, got {args.limit}")
    tasks = await store.list_tasks(
        state=args.state, queue=args.queue, name=args.name, limit=args.limit, before=args.before
    )
    if args.json:
        for task in tasks:
            sys.stdout.write(json.dumps(_document(task)) + "\n")
        return 0
    now = time.time()
    rows = [["ID", "STATE", "NAME", "QUEUE", "ATTEMPTS", "CREATED"]]
    for task in tasks:
        state = task.info(now).state.value
        created = when(task.created_at)
        rows.append([task.id, state, task.name, task.queue, str(task.attempts), created])
    sys.stdout.write(table(rows))
    return 0


async def show(store: Store, args: argparse.Namespace) -> int:
    task = await store.get(args.id)
    if task is None:
        raise CommandError(f"no task with id {args.id}")
    shown = _document(task)
    if args.json:
        sys.stdout.write(json.dumps(shown, indent=2) + "\n")
        return 0
    out = sys.stdout
    for field in ("id", "name", "state", "queue", "priority", "attempts", "worker"):
        out.write(f"{field + ':':<12}{shown[field]}\n")
    for field in ("created_at", "started_at", "finished_at"):
        out.write(f"{field.replace('_at', '') + ':':<12}{shown[field] or '-'}\n")
    for field in ("arguments", "result", "progress"):
        if shown[field] is not None:
            out.write(f"{field + ':':<12}{json.dumps(shown[field])}\n")
    if task.error:
        out.write(f"{'error:':<12}{task.error}\n")
    if task.traceback:
        out.write("\n" + task.traceback.rstrip() + "\n")
    return 0


async def cancel(store: Store, args: argparse.Namespace) -> int:
    ids = list(dict.fromkeys(args.ids))
    refused = await _refused(store, ids, acts_on=UNFINISHED)
    acted_on = [task_id for task_id in ids if task_id not in refused]
    count = await store.cancel(acted_on, "cancelled with `backbeat cancel`") if acted_on else 0
    sys.stdout.write(f"{count} task(s) cancelled\n")
    _say_the_rest(ids, count, refused, "cancelled")
    return 0


async def retry(store: Store, args: argparse.Namespace) -> int:
    if args.failed:
        count = await store.retry(None)
        sys.stdout.write(f"{count} task(s) back to pending\n")
        return 0
    ids = list(dict.fromkeys(args.ids))
    refused = await _refused(store, ids, acts_on=("failed",))
    acted_on = [task_id for task_id in ids if task_id not in refused]
    count = await store.retry(acted_on) if acted_on else 0
    sys.stdout.write(f"{count} task(s) back to pending\n")
    _say_the_rest(ids, count, refused, "retried (only failed tasks are)")
    return 0


async def _refused(store: Store, ids: list[str], acts_on: tuple[str, ...]) -> dict[str, str]:
    """The ids a command will not act on, each with why: unknown, or the task's state."""
    refused = {}
    now = time.time()
    for task_id in ids:
        task = await store.get(task_id)
        state = "unknown" if task is None else task.info(now).state.value
        if state not in acts_on:
            refused[task_id] = state
    return refused


def _say_the_rest(ids: list[str], count: int, refused: dict[str, str], verb: str) -> None:
    """Exit 1 naming the ids not acted on (a task may also have changed state meanwhile)."""
    if count == len(ids):
        return
    named = ", ".join(f"{task_id} ({why})" for task_id, why in refused.items())
    if len(ids) - count > len(refused):
        named += (", and " if named else "") + "some whose state changed meanwhile"
    raise CommandError(f"{len(ids) - count} of the {len(ids)} ids given not {verb}: {named}")


async def purge(store: Store, args: argparse.Namespace) -> int:
    states = tuple(args.state) if args.state else FINISHED
    count = await store.purge(time.time() - args.older_than, states, dry_run=args.dry_run)
    verb = "would be purged" if args.dry_run else "purged"
    sys.stdout.write(f"{count} finished task(s) {verb}\n")
    return 0


async def workers(store: Store, args: argparse.Namespace) -> int:
    alive = await alive_workers(store)
    if args.json:
        for worker in alive:
            sys.stdout.write(json.dumps(worker.document()) + "\n")
        return 0
    rows = [["NAME", "QUEUES", "RUNNING", "CONCURRENCY", "STARTED", "SEEN"]]
    for worker in alive:
        queues = "all" if worker.queues is None else ",".join(worker.queues)
        rows.append(
            [
                worker.name,
                queues,
                str(worker.running),
                str(worker.concurrency),
                when(worker.started_at),
                when(worker.seen_at),
            ]
        )
    sys.stdout.write(table(rows))
    return 0


def _written_without_table(documents: list[dict[str, Any]], as_json: bool, empty: str) -> bool:
    """Write the documents as JSON lines (``--json``), or `empty` when there are none; False
    when neither was the case, and the table is still to be written."""
    if as_json:
        for document in documents:
            sys.stdout.write(json.dumps(document) + "\n")
        return True
    if not documents:
        sys.stdout.write(empty + "\n")
        return True
    return False


async def schedules(store: Store, args: argparse.Namespace) -> int:
    """`backbeat schedules`: list them; `pause NAME` / `resume NAME`, kept in the store."""
    if args.action in ("pause", "resume"):
        if not args.name:
            raise CommandError(
                f"say which schedule to {args.action}: backbeat schedules {args.action} NAME"
            )
        if not await store.pause_schedule(args.name, args.action == "pause"):
            known = ", ".join(record.name for record in await store.schedules()) or "none"
            raise CommandError(f"no schedule named {args.name!r} (known: {known})")
        verb = "paused" if args.action == "pause" else "resumed"
        sys.stdout.write(f"schedule {args.name} {verb}: every process obeys at its next tick\n")
        return 0
    documents = await schedule_documents(store, time.time())
    empty = "no schedules (a runner with this store records its own when it starts)"
    if _written_without_table(documents, args.json, empty):
        return 0
    rows = [["NAME", "RULE", "ZONE", "NEXT", "LAST", "LAST STATE"]]
    for document in documents:
        rows.append(
            [
                str(document[column])
                for column in ("name", "rule", "zone", "next_run", "last_run", "last_state")
            ]
        )
    sys.stdout.write(table(rows))
    return 0


async def schedule_documents(store: Store, now: float) -> list[dict[str, Any]]:
    """Each schedule as `backbeat schedules` (and `backbeat watch`) show it: its rule, next
    and last run in its zone, and the state of its last task (one `get` per schedule)."""
    documents = []
    for record in await store.schedules():
        rule = rule_from_text(record.rule)
        shown_rule, zone, shown_zone = record.rule, "UTC", "-"
        if isinstance(rule, Cron):
            shown_rule, zone, shown_zone = rule.expression, rule.zone, rule.zone
        upcoming = None
        if rule is not None and not record.paused:
            upcoming = rule.after(max(int(now), record.last_tick or 0))
        last_state = record.note
        if record.note == "enqueued" and record.last_task is not None:
            task = await store.get(record.last_task)
            last_state = "purged" if task is None else task.info(now).state.value
        documents.append(
            {
                "name": record.name,
                "rule": shown_rule,
                "zone": shown_zone,
                "next_run": "paused" if record.paused else shown_time(upcoming, zone),
                "last_run": shown_time(record.last_tick, zone),
                "last_state": last_state or "-",
                "last_task": record.last_task,
                "paused": record.paused,
            }
        )
    return documents


async def queues(store: Store, args: argparse.Namespace) -> int:
    """`backbeat queues`: each queue's counts and whether it is paused; `pause NAME` /
    `resume NAME`, kept in the store (every process obeys at its next claim)."""
    if args.action in ("pause", "resume"):
        if not args.name:
            raise CommandError(
                f"say which queue to {args.action}: backbeat queues {args.action} NAME"
            )
        known = await store.queues()
        if args.action == "resume" and args.name not in await store.paused_queues():
            listed = ", ".join(await store.paused_queues()) or "none"
            raise CommandError(f"queue {args.name!r} is not paused (paused: {listed})")
        await store.pause_queue(args.name, args.action == "pause")
        if args.action == "resume":
            sys.stdout.write(f"queue {args.name} resumed: its tasks run again\n")
            return 0
        ahead = "" if args.name in known else " (it has no task yet: paused ahead)"
        sys.stdout.write(
            f"queue {args.name} paused{ahead}: none of its tasks starts until "
            f"`backbeat queues resume {args.name}`; running ones finish\n"
        )
        return 0
    paused = await store.paused_queues()
    documents: list[dict[str, Any]] = []
    for queue in sorted(set(await store.queues()) | set(paused)):
        counts = await store.counts(queue)
        documents.append({"queue": queue, "paused": queue in paused, "counts": counts})
    if _written_without_table(documents, args.json, "no queues (the store has no task yet)"):
        return 0
    rows = [["QUEUE", "PAUSED", *(state.upper() for state in STATES)]]
    for document in documents:
        counts = document["counts"]
        rows.append(
            [
                document["queue"],
                "paused" if document["paused"] else "-",
                *(str(counts[state]) for state in STATES),
            ]
        )
    sys.stdout.write(table(rows))
    return 0


COMMANDS = {
    "queues": queues,
    "schedules": schedules,
    "workers": workers,
    "status": status,
    "list": listing,
    "show": show,
    "cancel": cancel,
    "retry": retry,
    "purge": purge,
}
