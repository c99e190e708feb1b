"""``backbeat dashboard --store URL``: the dashboard served standalone, next to the workers.

Secure by default, like the dashboard itself: only loopback clients are served, with full
access. ``--read-only`` takes the actions away; ``--open`` serves every client that can
reach the port (behind an authenticating proxy, or with ``--read-only``). Uvicorn is an
extra (``backbeat[dashboard]``): the rest of the command line works without it.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import ipaddress
import logging
import sys
from collections.abc import Callable
from typing import Any

from backbeat.store_commands import CommandError
from backbeat.stores import open_store

logger = logging.getLogger("backbeat")

INSTALL_UVICORN = (
    "backbeat dashboard serves with uvicorn, which is not installed: "
    'pip install "backbeat[dashboard]"'
)
EXIT_USAGE = 2

Authorize = Callable[[Any], str | None]


def add_parser(commands: Any) -> None:
    """The ``dashboard`` subcommand (``commands``: argparse's subparsers)."""
    dashboard = commands.add_parser(
        "dashboard",
        help="serve the web dashboard of a store (loopback clients only unless --open)",
    )
    dashboard.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    dashboard.add_argument("--port", type=int, default=8000, help="default 8000")
    dashboard.add_argument(
        "--root-path", default="", metavar="PATH", help="the path a proxy serves it under"
    )
    dashboard.add_argument(
        "--read-only", action="store_true", help="show everything, offer no action"
    )
    dashboard.add_argument(
        "--open",
        action="store_true",
        help="serve every client, not only loopback ones (put a proxy that authenticates "
        "in front, or add --read-only)",
    )
    dashboard.add_argument("--title", default="backbeat", help="the pages' title")
    dashboard.add_argument(
        "--refresh",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="how often the shared snapshot is read again (live views, counts); default 1",
    )
    dashboard.add_argument("--log-level", default="info", help="uvicorn's; default info")


def is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def authorizer(*, open_to_all: bool, read_only: bool) -> Authorize | None:
    """What the flags grant. None: the dashboard's own default (loopback clients, full)."""
    if not open_to_all and not read_only:
        return None
    grant = "read" if read_only else "full"

    def authorize(request: Any) -> str | None:
        client = request.client.host if request.client is not None else None
        return grant if open_to_all or is_loopback(client) else None

    return authorize


def warnings_for(host: str, port: int, *, open_to_all: bool, read_only: bool) -> list[str]:
    """What an operator should know before the first request, given the flags."""
    said = []
    if not open_to_all and not is_loopback(host):
        said.append(
            f"listening on {host}:{port}, but only loopback clients are served (the others "
            "get 403): add --open (and --read-only, or an authenticating proxy in front) to "
            "serve them"
        )
    if open_to_all and not read_only:
        said.append(
            f"--open without --read-only: anyone who can reach {host}:{port} may retry, "
            "cancel and delete tasks; put a proxy that authenticates in front, or add --read-only"
        )
    return said


def check_store(url: str) -> str:
    """The store exists and answers (StoreMissing/StoreError otherwise): a typo in a SQLite
    path must not become a new, empty store that the dashboard shows as all quiet.
    Returns how to name it in logs (no password)."""
    if url == "memory://":
        raise CommandError(
            "memory:// lives inside one process: a standalone dashboard would show an empty "
            "store; mount backbeat.dashboard.dashboard(runner) in the app instead"
        )

    store = open_store(url, create=False)

    async def probe() -> None:
        await store.open()
        await store.close()

    asyncio.run(probe())
    return repr(store)


def run_dashboard(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("uvicorn") is None:
        sys.stderr.write(f"backbeat dashboard: error: {INSTALL_UVICORN}\n")
        return EXIT_USAGE
    if not 0 <= args.port <= 65535:
        raise CommandError(f"--port must be from 0 to 65535, got {args.port}")
    from backbeat.dashboard.app import MIN_REFRESH

    if not args.refresh >= MIN_REFRESH:
        raise CommandError(f"--refresh must be at least {MIN_REFRESH:g}s, got {args.refresh:g}")
    root_path = args.root_path.rstrip("/")
    if root_path and not root_path.startswith("/"):
        raise CommandError(f"--root-path must start with '/', got {args.root_path!r}")
    shown = check_store(args.store)
    import uvicorn

    from backbeat.dashboard import dashboard

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for warning in warnings_for(
        args.host, args.port, open_to_all=args.open, read_only=args.read_only
    ):
        logger.warning("backbeat dashboard: %s", warning)
    app = dashboard(
        args.store,
        authorize=authorizer(open_to_all=args.open, read_only=args.read_only),
        title=args.title,
        refresh=args.refresh,
    )
    logger.info(
        "backbeat dashboard of %s on http://%s:%d%s/ (%s, %s)",
        shown,
        args.host,
        args.port,
        root_path,
        "every client" if args.open else "loopback clients only",
        "read-only" if args.read_only else "with actions",
    )
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        root_path=root_path,
        log_level=args.log_level.lower(),
        # Live views hold their connections open: a stop waits for them this long at most.
        timeout_graceful_shutdown=3,
    )
    uvicorn.Server(config).run()
    return 0
