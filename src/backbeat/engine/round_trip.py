"""A task tree with its arguments through JSON and back, as a store hands them to a worker.

The stored feeder writes a task's arguments as JSON and reads them back against its
function; a runner without a store does the same on request (``Runner(round_trip=True)``,
the test client's default), so that a test sees what a worker would.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from backbeat.concurrency import synchronous
from backbeat.serialization import decode_arguments, encode_arguments
from backbeat.tasks import BackgroundTask, BackgroundTasks


def original_function(task: BackgroundTask) -> Callable[..., Any]:
    func = task.func
    return synchronous(func) or func


def as_stored(task: BackgroundTask) -> BackgroundTask:
    """A copy of a task tree whose arguments went through JSON and back against their
    functions, as a store hands them to a worker (an unannotated parameter gets the plain
    JSON value); ArgumentError for arguments a store could not keep. Same ids."""
    if not isinstance(task, BackgroundTasks):
        payload = encode_arguments(task.name, task.args, task.kwargs)
        copied = copy.copy(task)
        copied.args, copied.kwargs = decode_arguments(original_function(task), payload)  # type: ignore[assignment]
        return copied
    collection = BackgroundTasks(as_group=task.as_group)
    collection.tasks = [
        as_stored(member) if isinstance(member, BackgroundTask) else member for member in task.tasks
    ]
    collection.id = task.id
    collection.created = task.created
    collection.policy = task.policy
    return collection
