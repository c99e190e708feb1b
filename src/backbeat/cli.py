"""The backbeat command: workers, and a look into a store.

    backbeat worker MODULE:ATTR [--concurrency N] [--queues A,B]
    backbeat status --store URL [--failures N]
    backbeat retry ID... --store URL | backbeat retry --failed --store URL
    backbeat purge --store URL --older-than 7d

Built on `argparse` (the standard library's, so the command adds no dependency).
Bad arguments and unusable stores give a one-line error and a non-zero exit
(2 for a store that does not exist: only the app and its workers create one).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import re
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from backbeat.routing import declare_task_modules
from backbeat.runner import Runner, find_runner
from backbeat.stores import StoreError, StoreMissing, open_store
from backbeat.stores.base import FINISHED_STATES

EXIT_ERROR = 1
EXIT_NO_STORE = 2

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class CommandError(Exception):
    """Said on one line, exit 1."""


def duration(text: str) -> float:
    found = _DURATION.match(text.strip())
    if not found:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: use a number and s, m, h or d (e.g. 30m, 7d)"
        )
    return float(found.group(1)) * _SECONDS[found.group(2)]


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="backbeat", description=__doc__.split("\n")[0])
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    worker = commands.add_parser("worker", help="run the tasks of an app's store")
    worker.add_argument("target", metavar="MODULE:ATTR", help="an App, a Runner, or middleware")
    worker.add_argument("--concurrency", type=int, help="tasks at once (default: the runner's)")
    worker.add_argument(
        "--queues", metavar="A,B", help="run tasks of these queues only (default: all)"
    )
    worker.add_argument("--log-level", default="INFO", help="default INFO")

    status = commands.add_parser("status", help="counts by state and recent failures")
    status.add_argument("--store", required=True, metavar="URL")
    status.add_argument("--failures", type=int, default=10, metavar="N", help="default 10")

    retry = commands.add_parser("retry", help="run failed tasks again")
    retry.add_argument("ids", nargs="*", metavar="ID")
    retry.add_argument("--failed", action="store_true", help="every failed task")
    retry.add_argument("--store", required=True, metavar="URL")

    purge = commands.add_parser("purge", help="delete finished tasks")
    purge.add_argument("--store", required=True, metavar="URL")
    purge.add_argument("--older-than", required=True, type=duration, metavar="AGE")
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "worker":
            return run_worker(args.target, args.concurrency, args.log_level, args.queues)
        if args.command == "status":
            return show_status(args.store, args.failures)
        if args.command == "retry":
            return retry_failed(args.store, args.ids, args.failed)
        return purge_finished(args.store, args.older_than)
    except (CommandError, StoreError) as exc:
        sys.stderr.write(f"backbeat {args.command}: error: {exc}\n")
        return EXIT_NO_STORE if isinstance(exc, StoreMissing) else EXIT_ERROR


# --- worker ---------------------------------------------------------------------------------


def load_runner(target: str) -> Runner:
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise CommandError(f"{target!r} is not MODULE:ATTR (for example myapp.main:app)")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CommandError(f"cannot import {module_name!r}: {exc}") from exc
    except Exception as exc:
        # The app's own code failed: one line that says where, not a traceback.
        where = traceback.extract_tb(exc.__traceback__)[-1]
        raise CommandError(
            f"importing {module_name!r} raised {type(exc).__name__}: {exc} "
            f"({where.filename}:{where.lineno})"
        ) from exc
    obj: Any = module
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise CommandError(f"{module_name!r} has no attribute {attribute!r}") from None
    runner = obj if isinstance(obj, Runner) else find_runner(obj)
    if runner is None:
        raise CommandError(f"{target} is not an App, a Runner or a BackbeatMiddleware")
    declare_task_modules(runner, obj)
    if not runner.durable:
        raise CommandError(
            f"the runner of {target} has no store: give it one, e.g. "
            "Runner(store='sqlite:///tasks.db')"
        )
    return runner


def run_worker(
    target: str, concurrency: int | None, log_level: str, queues: str | None = None
) -> int:
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    runner = load_runner(target)
    if concurrency is not None:
        if concurrency < 1:
            raise CommandError(f"--concurrency must be >= 1, got {concurrency}")
        runner.concurrency = concurrency
    if queues is not None:
        names = [name.strip() for name in queues.split(",") if name.strip()]
        if not names:
            raise CommandError(f"--queues needs queue names, got {queues!r}")
        runner.queues = names
    runner.executes = True
    asyncio.run(_serve(runner, target))
    return 0


async def _serve(runner: Runner, target: str) -> None:
    log = logging.getLogger("backbeat")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with runner:
        log.info(
            "backbeat worker for %s: store %r, queues %s, concurrency %d, pid %d",
            target,
            runner.store,
            ", ".join(runner.queues) if runner.queues else "all",
            runner.concurrency,
            os.getpid(),
        )
        await stop.wait()
        log.info("backbeat worker: stopping (draining for up to %.0fs)", runner.shutdown_timeout)
    log.info("backbeat worker: stopped")


# --- looking into a store ------------------------------------------------------------------------


def show_status(url: str, failures: int) -> int:
    store = open_store(url, create=False)
    try:
        counts = store.counts_sync()
        recent = asyncio.run(store.failures(failures)) if failures > 0 else []
    finally:
        asyncio.run(store.close())
    out = sys.stdout
    out.write(f"store {url}\n\n")
    width = max(len(state) for state in counts)
    for state, count in counts.items():
        out.write(f"  {state:<{width}}  {count:>8}\n")
    if recent:
        out.write(f"\nmost recent failures ({len(recent)}):\n")
        for status in recent:
            when = datetime.fromtimestamp(status.finished_at or status.created_at, UTC)
            out.write(
                f"  {when:%Y-%m-%d %H:%M:%S}Z  {status.id}  {status.name}  "
                f"(attempts {status.attempts})\n      {status.error}\n"
            )
    return 0


def retry_failed(url: str, ids: list[str], every_failed: bool) -> int:
    if bool(ids) == every_failed:
        raise CommandError("give task ids, or --failed for every failed task (not both)")
    store = open_store(url, create=False)
    try:
        count = asyncio.run(store.retry(None if every_failed else ids))
    finally:
        asyncio.run(store.close())
    sys.stdout.write(f"{count} task(s) back to pending\n")
    if ids and count < len(ids):
        raise CommandError(f"{len(ids) - count} of the ids given are not failed tasks")
    return 0


def purge_finished(url: str, older_than: float) -> int:
    store = open_store(url, create=False)
    try:
        count = asyncio.run(store.purge(time.time() - older_than, FINISHED_STATES))
    finally:
        asyncio.run(store.close())
    sys.stdout.write(f"{count} finished task(s) purged\n")
    return 0
