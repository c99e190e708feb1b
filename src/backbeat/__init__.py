"""backbeat: background tasks for web apps that run after the response and are never lost."""

from backbeat.applications import App
from backbeat.concurrency import enforce_async_callable, set_thread_limit
from backbeat.responses import JSONResponse, Request, Response
from backbeat.routing import delete, get, patch, post, put, route
from backbeat.tasks import BackgroundTask, BackgroundTasks, Task, Tasks, task

__version__ = "0.1.0"

__all__ = [
    "App",
    "BackgroundTask",
    "BackgroundTasks",
    "JSONResponse",
    "Request",
    "Response",
    "Task",
    "Tasks",
    "delete",
    "enforce_async_callable",
    "get",
    "patch",
    "post",
    "put",
    "route",
    "set_thread_limit",
    "task",
]
