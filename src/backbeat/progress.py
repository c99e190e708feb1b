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

`read_report` is how the views (`backbeat watch`, the dashboard) read a stored report back.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable
from typing import Any

from pydantic_core import from_json

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


def read_report(document: str | None) -> tuple[float | None, str]:
    """The fraction (0..1) and message of a report stored as JSON; anything else in it is
    left to `backbeat show`. A report that cannot be read shows as none: it is the task's
    own writing, and a view must not fail on it."""
    if document is None:
        return None, ""
    try:
        report = from_json(document)
    except ValueError:
        return None, ""
    if not isinstance(report, dict):
        return None, ""
    fraction = report.get("fraction")
    if not isinstance(fraction, int | float) or isinstance(fraction, bool):
        fraction = None
    else:
        fraction = min(max(float(fraction), 0.0), 1.0)
    message = report.get("message")
    return fraction, "" if message is None else str(message)
