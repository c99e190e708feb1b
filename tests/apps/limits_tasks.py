"""Tasks with gates for the process tests of rate limits and per-key concurrency
(tests/test_flow_limits.py; the workers' app is tests/apps/limits_app.py)."""

import asyncio
from pathlib import Path

from backbeat import task
from tests.apps.durable_tasks import mark


@task(name="limits.rated", rate_limit="20/s")
async def rated(label: str) -> None:
    mark(f"rated:{label}")


@task(name="limits.free")
async def free(label: str) -> None:
    mark(f"free:{label}")


@task(name="limits.keyed", concurrency_key="customer", max_concurrency=1)
async def keyed(customer: str, label: str, seconds: float, once: str = "") -> None:
    """Marks its start and end. With `once` (a file), it sleeps `seconds` only the first time
    (a run killed mid-task is short when it runs again)."""
    mark(f"start:{customer}:{label}")
    if once and not _first_run(Path(once)):
        seconds = 0.05
    await asyncio.sleep(seconds)
    mark(f"end:{customer}:{label}")


def _first_run(once: Path) -> bool:
    first = not once.exists()
    once.touch()
    return first
