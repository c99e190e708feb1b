"""The backbeat command: workers, and a look into a store.

    backbeat worker MODULE:ATTR [--store URL] [--concurrency N] [--queues A,B]
                                [--metrics HOST:PORT]
    backbeat check MODULE:ATTR
    backbeat status --store URL [--failures N]
    backbeat workers --store URL [--json]
    backbeat list --store URL [--state S] [--queue Q] [--name N] [--limit N] [--json]
    backbeat show ID --store URL [--json]
    backbeat cancel ID... --store URL
    backbeat retry ID... --store URL | backbeat retry --failed --store URL
    backbeat purge --store URL [--older-than 7d] [--state S]... [--dry-run]
    backbeat watch --store URL [--interval SECONDS] [--limit N] [--once]
    backbeat dashboard --store URL [--host H] [--port P] [--root-path P] [--read-only] [--open]
                                   [--refresh SECONDS]

Every ``--store URL`` may be given as ``BACKBEAT_STORE=URL`` instead.
Built on `argparse` (the standard library's, so the command adds no dependency).
Bad arguments and unusable stores give a one-line error and a non-zero exit
(2 for a store that does not exist: only the app and its workers create one);
a reader that goes away (``backbeat list | head``) ends it quietly, exit 1.
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
import traceback
from collections.abc import Sequence
from typing import Any

from backbeat import __version__
from backbeat.applications import find_runner
from backbeat.checks import declare_route_tasks, problems_of, report
from backbeat.dashboard_command import add_parser as add_dashboard_parser
from backbeat.dashboard_command import run_dashboard
from backbeat.routing import declare_task_modules
from backbeat.runner import Runner
from backbeat.status import FINISHED, STATES
from backbeat.store_commands import CommandError, run_store_command
from backbeat.stores import SQLiteStore, StoreError, StoreMissing
from backbeat.watch import run_watch
from backbeat.worker_endpoint import INSTALL_METRICS, WorkerEndpoint, parse_address, worker_metrics

EXIT_ERROR = 1
EXIT_NO_STORE = 2

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> float:
    found = _DURATION.match(text.strip())
    if not found:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: use a number and s, m, h or d (e.g. 30m, 7d)"
        )
    return float(found.group(1)) * _SECONDS[found.group(2)]


def store_option(
    command: argparse.ArgumentParser, *, required: bool = True, help: str = "the store's URL"
) -> None:
    """``--store URL``, which ``BACKBEAT_STORE=URL`` in the environment gives instead."""
    default = os.environ.get("BACKBEAT_STORE") or None
    command.add_argument(
        "--store",
        metavar="URL",
        default=default,
        required=required and default is None,
        help=f"{help}; or set BACKBEAT_STORE",
    )


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="backbeat", description=__doc__.split("\n")[0])
    root.add_argument("--version", action="version", version=f"backbeat {__version__}")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    worker = commands.add_parser("worker", help="run the tasks of an app's store")
    worker.add_argument("target", metavar="MODULE:ATTR", help="an App, a Runner, or middleware")
    worker.add_argument("--concurrency", type=int, help="tasks at once (default: the runner's)")
    worker.add_argument(
        "--queues", metavar="A,B", help="run tasks of these queues only (default: all)"
    )
    store_option(
        worker, required=False, help="run the tasks of this store (default: the app's own)"
    )
    worker.add_argument("--log-level", default="INFO", help="default INFO")
    worker.add_argument(
        "--exit-if-unreachable",
        action="store_true",
        help="exit 1 at once if the store cannot be reached (default: wait, retrying)",
    )
    worker.add_argument(
        "--connect-timeout",
        type=float,
        metavar="SECONDS",
        help="exit 1 if the store cannot be reached within this time (default: wait for ever)",
    )
    worker.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve /healthz (for probes) and /metrics (Prometheus) here",
    )

    check = commands.add_parser(
        "check", help="list the tasks an app's routes declare that its store could not run"
    )
    check.add_argument("target", metavar="MODULE:ATTR", help="an App, a Runner, or middleware")

    status = commands.add_parser("status", help="counts by state and recent failures")
    store_option(status)
    status.add_argument("--failures", type=int, default=10, metavar="N", help="default 10")

    workers = commands.add_parser("workers", help="the workers alive now (their heartbeats)")
    store_option(workers)
    workers.add_argument("--json", action="store_true", help="one JSON object per line")

    listing = commands.add_parser("list", help="tasks, newest first")
    store_option(listing)
    listing.add_argument("--state", choices=STATES)
    listing.add_argument("--queue")
    listing.add_argument("--name")
    listing.add_argument("--limit", type=int, default=50, metavar="N", help="default 50")
    listing.add_argument("--before", metavar="ID", help="the page after this id")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")

    show = commands.add_parser("show", help="one task: arguments, result, error, traceback")
    show.add_argument("id", metavar="ID")
    store_option(show)
    show.add_argument("--json", action="store_true")

    cancel = commands.add_parser("cancel", help="cancel tasks (running ones at their next renewal)")
    cancel.add_argument("ids", nargs="+", metavar="ID")
    store_option(cancel)

    retry = commands.add_parser("retry", help="run failed tasks again")
    retry.add_argument("ids", nargs="*", metavar="ID")
    retry.add_argument("--failed", action="store_true", help="every failed task")
    store_option(retry)

    schedules = commands.add_parser(
        "schedules", help="periodic tasks: list them, or pause/resume one (kept in the store)"
    )
    schedules.add_argument("action", nargs="?", choices=("list", "pause", "resume"), default="list")
    schedules.add_argument("name", nargs="?", metavar="NAME")
    store_option(schedules)
    schedules.add_argument("--json", action="store_true", help="one JSON object per line")

    queues = commands.add_parser(
        "queues",
        help="queues: counts by state, paused or not; pause/resume one (kept in the store)",
    )
    queues.add_argument("action", nargs="?", choices=("list", "pause", "resume"), default="list")
    queues.add_argument("name", nargs="?", metavar="NAME")
    store_option(queues)
    queues.add_argument("--json", action="store_true", help="one JSON object per line")

    purge = commands.add_parser("purge", help="delete finished tasks")
    store_option(purge)
    purge.add_argument("--older-than", type=duration, default=0.0, metavar="AGE", help="e.g. 7d")
    purge.add_argument(
        "--state", action="append", choices=FINISHED, help="repeatable; default all finished"
    )
    purge.add_argument("--dry-run", action="store_true", help="only count them")

    watch = commands.add_parser(
        "watch", help="a live view: counts, throughput, workers, running tasks with progress"
    )
    store_option(watch)
    watch.add_argument(
        "--interval", type=float, default=1.0, metavar="SECONDS", help="between reads; default 1"
    )
    watch.add_argument(
        "--limit", type=int, default=20, metavar="N", help="running tasks listed; default 20"
    )
    watch.add_argument(
        "--once", action="store_true", help="print one frame and exit (so does a pipe)"
    )
    add_dashboard_parser(commands)
    store_option(commands.choices["dashboard"])
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "worker":
            return run_worker(
                args.target,
                args.concurrency,
                args.log_level,
                args.queues,
                args.store,
                exit_if_unreachable=args.exit_if_unreachable,
                connect_timeout=args.connect_timeout,
                metrics=args.metrics,
            )
        if args.command == "check":
            return run_check(args.target)
        if args.command == "watch":
            return run_watch(args)
        if args.command == "dashboard":
            return run_dashboard(args)
        return run_store_command(args)
    except (CommandError, StoreError) as exc:
        sys.stderr.write(f"backbeat {args.command}: error: {exc}\n")
        return EXIT_NO_STORE if isinstance(exc, StoreMissing) else EXIT_ERROR
    except BrokenPipeError:
        # The reader went away (`backbeat list | head -1`): no traceback. Python flushes
        # stdout once more at exit, which would complain again: point it at /dev/null.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR


# --- worker ---------------------------------------------------------------------------------


def load_runner(target: str, store: str | None = None) -> Runner:
    obj = load_target(target)
    runner = runner_of(obj, target)
    if store is not None:
        runner.use_store(store)
    declare_task_modules(runner, obj)
    # The routes' tasks the app stores (mounted ones too): the worker runs them by name.
    declare_route_tasks(runner, obj)
    if not runner.durable:
        raise CommandError(
            f"the runner of {target} has no store: give it one, e.g. "
            "Runner(store='sqlite:///tasks.db')"
        )
    return runner


def load_target(target: str) -> Any:
    """What MODULE:ATTR names, imported from the current directory."""
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
    return obj


def runner_of(obj: Any, target: str) -> Runner:
    runner = obj if isinstance(obj, Runner) else find_runner(obj)
    if runner is None:
        raise CommandError(f"{target} is not an App, a Runner or a BackbeatMiddleware")
    return runner


# --- check ----------------------------------------------------------------------------------


def run_check(target: str) -> int:
    """0: every task the app's routes declare can be run from its store (or it has none);
    1: the list of those that cannot, one line each."""
    obj = load_target(target)
    runner = runner_of(obj, target)
    problems = problems_of(runner, obj)
    if problems:
        sys.stdout.write(report(problems) + "\n")
        return EXIT_ERROR
    if not runner.durable:
        sys.stdout.write(
            f"{target}: no store: its tasks run in memory in this process, where any "
            "function runs; nothing to check\n"
        )
    else:
        sys.stdout.write(f"{target}: every task its routes declare can be run from its store\n")
    return 0


def run_worker(
    target: str,
    concurrency: int | None,
    log_level: str,
    queues: str | None = None,
    store: str | None = None,
    *,
    exit_if_unreachable: bool = False,
    connect_timeout: float | None = None,
    metrics: str | None = None,
) -> int:
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    runner = load_runner(target, store)
    if concurrency is not None:
        if concurrency < 1:
            raise CommandError(f"--concurrency must be >= 1, got {concurrency}")
        runner.concurrency = concurrency
    if queues is not None:
        names = [name.strip() for name in queues.split(",") if name.strip()]
        if not names:
            raise CommandError(f"--queues needs queue names, got {queues!r}")
        runner.queues = names
    if connect_timeout is not None and connect_timeout < 0:
        raise CommandError(f"--connect-timeout must be >= 0, got {connect_timeout}")
    runner.executes = True
    endpoint = None if metrics is None else listen(runner, metrics)
    try:
        return asyncio.run(
            _serve(runner, target, 0.0 if exit_if_unreachable else connect_timeout, endpoint)
        )
    finally:
        if endpoint is not None:
            endpoint.stop()


def listen(runner: Runner, address: str) -> WorkerEndpoint:
    """``--metrics HOST:PORT``: bound before the store is opened, so probes get their 503."""
    try:
        host, port = parse_address(address)
    except ValueError as exc:
        raise CommandError(f"--metrics: {exc}") from None
    metrics = worker_metrics(runner)
    if metrics is None:
        logging.getLogger("backbeat").warning(
            "backbeat worker: %s; /metrics answers 501", INSTALL_METRICS
        )
    try:
        return WorkerEndpoint(runner, host, port, metrics)
    except OSError as exc:
        raise CommandError(
            f"--metrics: cannot listen on {address}: {exc.strerror or exc}"
        ) from None


async def _serve(
    runner: Runner,
    target: str,
    connect_timeout: float | None,
    endpoint: WorkerEndpoint | None = None,
) -> int:
    log = logging.getLogger("backbeat")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if endpoint is not None:
        endpoint.start(loop)
        log.info(
            "backbeat worker: health at %s/healthz, metrics at %s/metrics",
            endpoint.url,
            endpoint.url,
        )
    if isinstance(runner.store, SQLiteStore):
        # The app creates its store, a worker waits for it (`engine.connecting`): started
        # from another directory, a relative path would name a new, empty file no app
        # writes to, and the worker would watch it, idle, for ever.
        runner.store.never_create()
    if connect_timeout == 0 and runner.store is not None:
        await runner.store.open()  # --exit-if-unreachable: StoreUnavailable is the one line
    async with runner:
        if not await _connected(runner, connect_timeout, stop):
            if stop.is_set():
                return 0
            sys.stderr.write(
                f"backbeat worker: error: the store {runner.store!r} could not be reached "
                f"within {connect_timeout:g}s\n"
            )
            return EXIT_ERROR
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
    return 0


async def _connected(runner: Runner, within: float | None, stop: asyncio.Event) -> bool:
    """Whether the store answered within `within` seconds (a SIGTERM meanwhile: False)."""
    connected = asyncio.ensure_future(runner.wait_connected(within))
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait((connected, stopped), return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if not connected.done():
        connected.cancel()
        return False
    return connected.result()
