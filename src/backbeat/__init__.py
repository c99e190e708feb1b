"""backbeat: background tasks for web apps that run after the response and are never lost."""

from backbeat.applications import App
from backbeat.concurrency import enforce_async_callable, set_thread_limit
from backbeat.middleware import BackbeatMiddleware
from backbeat.progress import progress
from backbeat.responses import JSONResponse, Request, Response
from backbeat.routing import delete, get, patch, post, put, route
from backbeat.runner import Runner, RunnerFull
from backbeat.status import TaskCancelled, TaskFailed, TaskInfo, TaskState
from backbeat.status_routes import status_route
from backbeat.tasks import BackgroundTask, BackgroundTasks, Task, Tasks, task

__version__ = "0.1.0"

__all__ = [
    "App",
    "BackbeatMiddleware",
    "BackgroundTask",
    "BackgroundTasks",
    "JSONResponse",
    "Request",
    "Response",
    "Runner",
    "RunnerFull",
    "Task",
    "TaskCancelled",
    "TaskFailed",
    "TaskInfo",
    "TaskState",
    "Tasks",
    "delete",
    "enforce_async_callable",
    "get",
    "patch",
    "post",
    "progress",
    "put",
    "route",
    "set_thread_limit",
    "status_route",
    "task",
]
