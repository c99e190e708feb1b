"""A backend for Django's task framework: Django's task API, backbeat's store and workers.

    # settings.py
    TASKS = {
        "default": {
            "BACKEND": "backbeat.django.BackbeatBackend",
            "OPTIONS": {"store": "sqlite:////var/lib/myapp/tasks.db"},  # or redis://…
        }
    }

    # myapp/tasks.py
    from django_tasks import task          # Django >= 6.0: from django.tasks import task

    @task(priority=10, queue_name="mail")
    def send_welcome(email: str) -> str: ...

    result = send_welcome.enqueue("ann@example.com")   # also .aenqueue, .using(run_after=…)
    result.refresh(); result.status, result.return_value, result.errors

Tasks are written to the store and run by
``DJANGO_SETTINGS_MODULE=myproject.settings backbeat worker backbeat.django:runner``,
which sets Django up, imports every installed app's ``tasks`` module and runs the
tasks of the backend's store with backbeat's leases, retries and dead letters.
Priorities map to backbeat priorities, ``queue_name`` to queues, ``run_after`` to a
delay. ``get_result`` reads the store: status, times, arguments,
return value, errors (with the exception's class and traceback), the worker.

Inside ``transaction.atomic()`` a task goes with the transaction (``"enqueue_on_commit"``,
an option, True by default, as django-tasks had it):

- With the store in the app's own PostgreSQL database (``"store": "postgresql://…"``
  naming the host, port and database name of an entry of ``DATABASES``), and that
  database's connection in an atomic block, the task is written on Django's connection,
  in that transaction: stored if it commits, never if it rolls back (workers see it, and
  are woken, at the commit). Django's connection is blocking (psycopg), so the task is
  written through its cursor with the same statements the store runs itself
  (`backbeat.stores.postgres_callers`).
- Otherwise, with the default database's connection in an atomic block (the store
  elsewhere: SQLite, Redis, another database), the task is checked now (its name, its
  arguments, their size: what an immediate enqueue refuses is refused here) and written
  in ``transaction.on_commit``: never if the block rolls back, savepoints included.
  A write that fails at the commit raises to whoever committed (the data stays
  committed; Django runs none of the later callbacks), logged with the task's id.

Either way the result returned is READY, with the id the task has, made without reading
the store (which has not got the task yet). Outside an atomic block, or with
``"enqueue_on_commit": False``, the task is written by the store's own connections before
``enqueue`` returns, whatever Django's transaction does afterwards.

Works with ``django.tasks`` (Django >= 6.0) and with the ``django-tasks`` backport
(Django 4.2-5.2), whichever is installed. Not supported: ``takes_context=True`` tasks
(refused at enqueue time with a clear error).
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from pydantic_core import from_json

from backbeat.runner import Runner
from backbeat.stores.base import StoredStatus
from backbeat.tasks import BackgroundTask


def _tasks_api() -> str:
    """``django.tasks`` (Django >= 6.0) if it is there, else the ``django_tasks`` backport."""
    try:
        importlib.import_module("django.tasks")
    except ImportError:
        return "django_tasks"
    return "django.tasks"


_API = _tasks_api()
_base: Any = importlib.import_module(f"{_API}.base")
_exceptions: Any = importlib.import_module(f"{_API}.exceptions")
BaseTaskBackend: Any = importlib.import_module(f"{_API}.backends.base").BaseTaskBackend
Task: Any = _base.Task
TaskError: Any = _base.TaskError
TaskResult: Any = _base.TaskResult
TaskResultStatus: Any = _base.TaskResultStatus
InvalidTaskError: Any = _exceptions.InvalidTaskError
TaskResultDoesNotExist: Any = _exceptions.TaskResultDoesNotExist

__all__ = ["BackbeatBackend"]

_STATUS = {
    "pending": TaskResultStatus.READY,
    "held": TaskResultStatus.READY,
    "scheduled": TaskResultStatus.READY,
    "running": TaskResultStatus.RUNNING,
    "succeeded": TaskResultStatus.SUCCESSFUL,
    "failed": TaskResultStatus.FAILED,
    "cancelled": TaskResultStatus.FAILED,
}


class BackbeatBackend(BaseTaskBackend):  # type: ignore[misc]  # Django's class: untyped here
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        options = params.get("OPTIONS", {})
        store = options.get("store")
        if not store:
            raise InvalidTaskError(
                f'TASKS["{alias}"]["OPTIONS"]["store"] is missing: a backbeat store URL '
                '("sqlite:///path/tasks.db", "redis://host:6379/0")'
            )
        self.store_url = str(store)
        self.signing_key = options.get("signing_key")
        self.enqueue_on_commit = options.get("enqueue_on_commit", True)
        if not isinstance(self.enqueue_on_commit, bool):
            raise InvalidTaskError(
                f'TASKS["{alias}"]["OPTIONS"]["enqueue_on_commit"] must be True or False, '
                f"not {self.enqueue_on_commit!r}"
            )
        # Writes only: `backbeat worker backbeat.django:runner` runs the tasks.
        self.runner = Runner(store=self.store_url, execute=False, signing_key=self.signing_key)
        # The alias of Django's database the store lives in, if any (looked up once).
        self._database: str | object | None = _UNKNOWN

    def validate_task(self, task: Task) -> None:
        super().validate_task(task)
        if task.takes_context:
            raise InvalidTaskError(
                f"{task.module_path}: takes_context=True is not supported by backbeat's backend"
            )

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        self.validate_task(task)
        job = BackgroundTask(task.func, *args, **kwargs).using(
            queue=task.queue_name, priority=task.priority, delay=_delay(task.run_after)
        )
        self.runner.register(task.func)
        if not self.enqueue_on_commit:
            return self.get_result(self.runner.submit(job))  # stored when this returns
        connection = self._store_database_in_atomic_block()
        if connection is not None:
            task_id = self.runner.submit(job, connection=connection)
        else:
            db = _django_db()
            default = db.connections[db.DEFAULT_DB_ALIAS]  # whose commits on_commit follows
            if not default.in_atomic_block:
                return self.get_result(self.runner.submit(job))
            task_id = self.runner.submit_on_commit(job, default.on_commit)
        return _ready(task, task_id, args, kwargs, self.alias)

    def _store_database_in_atomic_block(self) -> Any:
        """Django's connection to the store's own database, while it is in an atomic block;
        else None."""
        if self._database is _UNKNOWN:
            self._database = _database_of(self.store_url)
        if self._database is None:
            return None
        connection = _django_db().connections[self._database]
        return connection if connection.in_atomic_block else None

    def get_result(self, result_id: str) -> TaskResult:
        row = self.runner.stored(result_id)
        if row is None:
            raise TaskResultDoesNotExist(result_id)
        return _result(row, self.alias)


_UNKNOWN = object()


def _django_db() -> Any:
    return importlib.import_module("django.db")


def _database_of(store_url: str) -> str | None:
    """The alias in ``DATABASES`` of the PostgreSQL database a store URL names (the same
    host, port and database name as written there), or None."""
    store = urlsplit(store_url)
    if store.scheme not in ("postgresql", "postgres"):
        return None
    place = (store.hostname or "localhost", store.port or 5432, store.path.lstrip("/"))
    databases = importlib.import_module("django.conf").settings.DATABASES
    for alias, database in databases.items():
        if "postgresql" not in database.get("ENGINE", ""):
            continue
        port = int(database.get("PORT") or 5432)
        if (database.get("HOST") or "localhost", port, database.get("NAME")) == place:
            return str(alias)
    return None


def _ready(task: Task, task_id: str, args: Any, kwargs: Any, alias: str) -> TaskResult:
    """The result of a task whose transaction has not committed yet."""
    return TaskResult(
        task=task,
        id=task_id,
        status=TaskResultStatus.READY,
        enqueued_at=datetime.now(UTC),
        started_at=None,
        finished_at=None,
        last_attempted_at=None,
        args=list(args),
        kwargs=dict(kwargs),
        backend=alias,
        errors=[],
        worker_ids=[],
    )


def _delay(run_after: datetime | None) -> float | None:
    return None if run_after is None else max(run_after.timestamp() - time.time(), 0.0)


def _time(timestamp: float | None) -> datetime | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC)


def _result(row: StoredStatus, alias: str) -> TaskResult:
    document = from_json(row.payload or '{"args": [], "kwargs": {}}')
    state = "scheduled" if row.state == "pending" and row.due_at > time.time() else row.state
    status = _STATUS[state]
    errors = []
    if row.error and status == TaskResultStatus.FAILED:
        trace = row.traceback or row.error
        errors.append(TaskError(exception_class_path=_exception_path(row), traceback=trace))
    result = TaskResult(
        task=_django_task(row.name, row.queue, row.priority, alias),
        id=row.id,
        status=status,
        enqueued_at=_time(row.created_at),
        started_at=_time(row.started_at),
        finished_at=_time(row.finished_at),
        last_attempted_at=_time(row.started_at),
        args=list(document.get("args", [])),
        kwargs=dict(document.get("kwargs", {})),
        backend=alias,
        errors=errors,
        worker_ids=[row.worker] * row.attempts if row.worker else [],
    )
    if row.result is not None:
        object.__setattr__(result, "_return_value", from_json(row.result))
    return result


def _exception_path(row: StoredStatus) -> str:
    """The failing exception's class as ``module.Class``, from the stored traceback's last
    line (``traceback`` writes non-builtin classes with their module)."""
    text = (row.traceback or row.error or "").strip().splitlines() or ["Exception"]
    name = text[-1].partition(":")[0].strip() or "Exception"
    return name if "." in name else f"builtins.{name}"


def _django_task(name: str, queue: str, priority: int, alias: str) -> Task:
    """The task object Django's API hands back in a result: the module's own when it can be
    imported, else one made for the stored function."""
    module_name, _, qualname = name.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), qualname)
    except (ImportError, AttributeError):
        found = None
    if isinstance(found, Task):
        return found
    func = found if callable(found) else _missing(name)
    return Task(func=func, priority=priority, queue_name=queue, backend=alias)


def _missing(name: str) -> Any:
    def missing(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError(f"task function {name} cannot be imported here")

    return missing


_worker: Runner | None = None


def __getattr__(name: str) -> Any:
    """``backbeat.django:runner`` — the worker's runner, made on first use: Django set up
    (``DJANGO_SETTINGS_MODULE``), every installed app's ``tasks`` module imported, their
    tasks registered, on the default backend's store (``BACKBEAT_DJANGO_BACKEND`` names
    another alias)."""
    global _worker
    if name != "runner":
        raise AttributeError(name)
    if _worker is None:
        _worker = _worker_runner()
    return _worker


def _worker_runner() -> Runner:
    importlib.import_module("django").setup()
    importlib.import_module("django.utils.module_loading").autodiscover_modules("tasks")
    alias = os.environ.get("BACKBEAT_DJANGO_BACKEND", "default")
    backend = _backends()[alias]
    if not isinstance(backend, BackbeatBackend):
        raise InvalidTaskError(f'TASKS["{alias}"] is not backbeat.django.BackbeatBackend')
    runner = Runner(store=backend.store_url, signing_key=backend.signing_key)
    apps = importlib.import_module("django.apps").apps
    for config in apps.get_app_configs():
        module = sys.modules.get(f"{config.name}.tasks")
        for value in vars(module).values() if module is not None else ():
            if isinstance(value, Task) and value.backend == alias:
                runner.register(value.func)
    return runner


def _backends() -> Any:
    return importlib.import_module(_API).task_backends
