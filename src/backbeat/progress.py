"""`backbeat.progress(...)`: a running task says how far it has got.

    async def import_rows(path: str) -> None:
        for n, chunk in enumerate(chunks, 1):
            ...
            progress(n / len(chunks), f"{n} of {len(chunks)} chunks", rows=rows_done)

The latest report is kept with the task's status (`TaskInfo.progress`: a dict
with ``fraction``, ``message`` and whatever else was passed, as JSON for a
stored task) and replaces the previous one. The runner that runs the attempt
installs where reports go; called outside a task run by a runner (inline, in
eager mode, in a plain function call) it does nothing and logs at DEBUG.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("backbeat")

Reporter = Callable[[dict[str, Any]], None]

# Set by the engine around each attempt it runs.
current_reporter: contextvars.ContextVar[Reporter | None] = contextvars.ContextVar(
    "backbeat_progress_reporter", default=None
)


def progress(fraction: float | None = None, message: str | None = None, **data: Any) -> None:
    """Record the current task's progress (see the module's docstring)."""
    if fraction is not None and (
        not isinstance(fraction, int | float)
        or isinstance(fraction, bool)
        or not 0 <= fraction <= 1
    ):
        raise ValueError(f"progress(fraction=...) must be a number from 0 to 1, got {fraction!r}")
    report: dict[str, Any] = {}
    if fraction is not None:
        report["fraction"] = fraction
    if message is not None:
        report["message"] = str(message)
    report.update(data)
    reporter = current_reporter.get()
    if reporter is None:
        logger.debug("backbeat.progress() outside a task run by a runner: %r", report)
        return
    reporter(report)
