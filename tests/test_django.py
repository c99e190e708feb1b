"""backbeat.django: a real Django project (tests/django_project, on the django-tasks backport)
enqueues through Django's task API only; a `backbeat worker backbeat.django:runner` process
runs the tasks; results are read back through the same API, in another process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("django_tasks")

from backbeat import Runner
from tests.serving import ROOT, background_process, uvicorn
from tests.test_workers import wait_until

pytestmark = pytest.mark.process

ENQUEUE = """
import json
from datetime import timedelta
import django
django.setup()
from django.utils import timezone
from tests.django_project.shop.tasks import send_welcome, refuse, count_async
import asyncio
later = send_welcome.using(run_after=timezone.now() + timedelta(seconds=60))
results = {
    "welcome": send_welcome.enqueue("ann@example.com", shout=True),
    "refuse": refuse.enqueue(12),
    "async": asyncio.run(count_async.aenqueue([1, 2, 3])),
    "later": later.enqueue("bob@example.com"),
}
print(json.dumps({k: [r.id, r.status, r.args, r.kwargs] for k, r in results.items()}))
"""

READ = """
import json, sys
import django
django.setup()
from django_tasks import default_task_backend
out = {}
for key, task_id in json.loads(sys.argv[1]).items():
    r = default_task_backend.get_result(task_id)
    errors = [[e.exception_class_path, e.traceback.splitlines()[-1]] for e in r.errors]
    value = r.return_value if r.status == "SUCCESSFUL" else None
    out[key] = [r.status, value, errors, r.task.queue_name, r.task.priority, r.attempts,
                r.task.func.__name__]
try:
    default_task_backend.get_result("nope")
except Exception as exc:
    out["missing"] = type(exc).__name__
print(json.dumps(out))
"""


def django_env(url: str) -> dict[str, str]:
    return {
        "DJANGO_SETTINGS_MODULE": "tests.django_project.settings",
        "BACKBEAT_DJANGO_STORE": url,
    }


def run(code: str, url: str, *args: str, database: str | None = None) -> dict:
    import os

    env = {**os.environ, **django_env(url)}
    if database is not None:  # the project's own PostgreSQL database
        env["BACKBEAT_DJANGO_DATABASE"] = database
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_djangos_task_api_on_backbeats_store_and_worker(tmp_path, shared_db):
    url = shared_db  # SQLite and Redis
    enqueued = run(ENQUEUE, url)
    assert {key: value[1] for key, value in enqueued.items()} == dict.fromkeys(enqueued, "READY")
    assert enqueued["welcome"][2:] == [["ann@example.com"], {"shout": True}]
    ids = {key: value[0] for key, value in enqueued.items()}
    store = Runner(store=url)
    worker = [sys.executable, "-m", "backbeat", "worker", "backbeat.django:runner"]
    with background_process(worker, tmp_path, env=django_env(url), name="worker") as (_, log):
        wait_until(
            lambda: store.stats()["succeeded"] + store.stats()["failed"] == 3,
            20,
            "the worker to run the three due tasks",
            log.read_text,
        )
    seen = run(READ, url, json.dumps(ids))
    assert seen["welcome"] == [
        "SUCCESSFUL",
        "WELCOME ANN@EXAMPLE.COM",
        [],
        "mail",
        10,
        1,
        "send_welcome",
    ]
    status, value, errors, *_ = seen["refuse"]
    assert (status, value) == ("FAILED", None)
    assert errors == [["builtins.ValueError", "ValueError: cannot refund 12"]]
    assert seen["async"][:2] == ["SUCCESSFUL", 6]
    assert seen["later"][0] == "READY"  # run_after is a minute away: still waiting
    assert seen["missing"] == "TaskResultDoesNotExist"


def test_what_the_backend_cannot_do_is_refused_when_declared_or_enqueued(tmp_path):
    code = """
import json
import django
django.setup()
from django_tasks import task
from backbeat.django import BackbeatBackend
from tests.django_project.shop.tasks import send_welcome
def with_context(context, note):
    pass
out = {}
for key, call in {
    "context": lambda: task(takes_context=True)(with_context),
    "queue": lambda: send_welcome.using(queue_name="nope").enqueue("x"),
    "arguments": lambda: send_welcome.enqueue({1, 2}),
    "flag": lambda: BackbeatBackend("bad", {"OPTIONS": {"store": "memory://",
                                                        "enqueue_on_commit": "no"}}),
}.items():
    try:
        call()
        out[key] = "accepted"
    except Exception as exc:
        out[key] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
"""
    url = f"sqlite:///{tmp_path}/tasks.db"
    seen = run(code, url)
    assert seen["context"].startswith("InvalidTaskError") and "takes_context" in seen["context"]
    assert seen["queue"].startswith("InvalidTaskError")
    assert "cannot be stored" in seen["arguments"] or "JSON" in seen["arguments"]
    assert seen["flag"] == (
        'InvalidTaskError: TASKS["bad"]["OPTIONS"]["enqueue_on_commit"] must be True '
        "or False, not 'no'"
    )
    assert sum(Runner(store=url).stats().values()) == 0  # nothing was stored


def test_the_example_project_served_by_uvicorn_and_killed(tmp_path):
    """A view enqueues through Django's API; the web process is killed with SIGKILL before any
    worker runs; a worker started afterwards runs every accepted task."""
    import signal

    import httpx

    env = {"DJANGO_SETTINGS_MODULE": "examples.django_shop.settings",
           "BACKBEAT_STORE": f"sqlite:///{tmp_path}/tasks.db"}  # fmt: skip
    emails = [f"user{n}@example.com" for n in range(5)]
    with uvicorn("examples.django_shop.asgi:application", tmp_path, env=env, name="web") as web:
        with httpx.Client(base_url=web.url, timeout=10) as client:
            ids = [client.post(f"/signup?email={e}").json()["task"] for e in emails]
            assert client.get(f"/tasks/{ids[0]}").json()["status"] == "READY"
        web.process.send_signal(signal.SIGKILL)
        web.process.wait()
    worker = [sys.executable, "-m", "backbeat", "worker", "backbeat.django:runner"]
    with background_process(worker, tmp_path, env=env, name="worker") as (_, log):
        wait_until(
            lambda: log.read_text().count("welcome sent") == 5, 20, "welcomes", log.read_text
        )
    with (
        uvicorn("examples.django_shop.asgi:application", tmp_path, env=env, name="again") as web,
        httpx.Client(base_url=web.url, timeout=10) as client,
    ):
        seen = [client.get(f"/tasks/{i}").json() for i in ids]
    assert seen == [{"status": "SUCCESSFUL", "return_value": f"welcome:{e}"} for e in emails]


ATOMIC = """
import json, sys
import django
django.setup()
from django.db import connection, transaction
from django_tasks import default_task_backend
from tests.django_project.shop.tasks import send_welcome
orders = sys.argv[1]
with connection.cursor() as cursor:
    cursor.execute(f"CREATE TABLE {orders} (id text PRIMARY KEY)")
class RolledBack(Exception):
    pass
try:
    with transaction.atomic():
        gone = send_welcome.enqueue("gone@example.com")
        raise RolledBack
except RolledBack:
    pass
with transaction.atomic():
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {orders} VALUES ('order-1')")
    kept = send_welcome.enqueue("kept@example.com", shout=True)
    try:  # the store's own connections cannot see it before the commit
        default_task_backend.get_result(kept.id)
        seen_before_commit = True
    except Exception:
        seen_before_commit = False
outside = send_welcome.enqueue("outside@example.com")  # no atomic block: stored at once
try:  # enqueue_on_commit False: written by the store's connections, not Django's
    with transaction.atomic():
        at_once = send_welcome.using(backend="at_once").enqueue("at-once@example.com")
        raise RolledBack
except RolledBack:
    pass
with connection.cursor() as cursor:
    cursor.execute(f"SELECT id FROM {orders}")
    committed = [row[0] for row in cursor.fetchall()]
print(json.dumps({"committed": committed, "gone": gone.id, "kept": kept.id, "outside": outside.id,
                  "at_once": at_once.id,
                  "status": kept.status, "args": [kept.args, kept.kwargs],
                  "seen_before_commit": seen_before_commit}))
"""


@pytest.mark.postgres
def test_in_atomic_a_task_is_written_on_djangos_connection_with_the_store_in_its_database(
    tmp_path, postgres_server
):
    """The store in the project's own PostgreSQL database: enqueued in `atomic()`, the task
    is committed or rolled back with the block's rows; with enqueue_on_commit False, stored
    at once whatever the block does; a worker runs what was stored."""
    pytest.importorskip("psycopg")
    from tests.postgres_server import forget, fresh_schema_url

    url = fresh_schema_url(postgres_server)
    schema = url.rpartition("schema=")[2]
    env = {**django_env(url), "BACKBEAT_DJANGO_DATABASE": postgres_server}
    store = Runner(store=url)
    try:
        assert sum(store.stats().values()) == 0  # the store's schema, where the app's table goes
        seen = run(ATOMIC, url, f'"{schema}".orders', database=postgres_server)
        assert seen["committed"] == ["order-1"]
        assert seen["status"] == "READY" and not seen["seen_before_commit"]
        assert seen["args"] == [["kept@example.com"], {"shout": True}]
        assert store.stored(seen["gone"]) is None  # rolled back with the block
        worker = [sys.executable, "-m", "backbeat", "worker", "backbeat.django:runner"]
        with background_process(worker, tmp_path, env=env, name="worker") as (_, log):
            wait_until(lambda: store.stats()["succeeded"] == 3, 20, "3 tasks", log.read_text)
        assert store.stored(seen["kept"]).result == '"WELCOME KEPT@EXAMPLE.COM"'
        assert store.stored(seen["outside"]).state == "succeeded"
        assert store.stored(seen["at_once"]).state == "succeeded"  # its block rolled back
        assert store.stored(seen["gone"]) is None
    finally:
        forget(url)


ON_COMMIT = """
import json
import django
django.setup()
from django.db import connection, transaction
from django_tasks import default_task_backend
from django_tasks.exceptions import TaskResultDoesNotExist
from tests.django_project.shop.tasks import send_welcome
def stored(task_id):
    try:
        default_task_backend.get_result(task_id)
    except TaskResultDoesNotExist:
        return False
    return True
class RolledBack(Exception):
    pass
with connection.cursor() as cursor:
    cursor.execute("CREATE TABLE orders (id text PRIMARY KEY)")
out = {}
try:
    with transaction.atomic():
        out["gone"] = send_welcome.enqueue("gone@example.com").id
        raise RolledBack
except RolledBack:
    pass
with transaction.atomic():
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO orders VALUES ('order-1')")
    kept = send_welcome.enqueue("kept@example.com", shout=True)
    try:
        with transaction.atomic():  # a savepoint: rolled back with its task
            out["savepoint"] = send_welcome.enqueue("savepoint@example.com").id
            raise RolledBack
    except RolledBack:
        pass
    try:  # refused now, as an immediate enqueue is, not at the commit
        send_welcome.enqueue({1, 2})
        out["refused"] = "accepted"
    except Exception as exc:
        out["refused"] = f"{type(exc).__name__}: {exc}"
    out["kept_before_commit"] = stored(kept.id)
out["kept"] = [kept.id, kept.status, kept.args, kept.kwargs, stored(kept.id)]
try:  # enqueue_on_commit False: written at once, whatever the transaction does
    with transaction.atomic():
        at_once = send_welcome.using(backend="at_once").enqueue("at-once@example.com")
        out["at_once_before_commit"] = stored(at_once.id)
        raise RolledBack
except RolledBack:
    pass
out["at_once"] = at_once.id
print(json.dumps(out))
"""


def test_in_atomic_a_task_is_written_when_djangos_transaction_commits_to_a_store_elsewhere(
    tmp_path, shared_db
):
    """The store elsewhere (SQLite, Redis) and Django's database SQLite: enqueued in
    `atomic()`, the task is checked at once and stored at the commit, never if the block (or
    its savepoint) rolls back; the "at_once" backend (enqueue_on_commit False) stores it at
    once; a worker runs what was stored."""
    url = shared_db
    seen = run(ON_COMMIT, url, database=f"sqlite://{tmp_path}/django.db")
    kept_id, status, args, kwargs, kept_after_commit = seen["kept"]
    assert (status, args, kwargs) == ("READY", ["kept@example.com"], {"shout": True})
    assert not seen["kept_before_commit"] and kept_after_commit
    assert "cannot be stored" in seen["refused"] or "JSON" in seen["refused"]
    assert seen["at_once_before_commit"]
    store = Runner(store=url)
    assert store.stored(seen["gone"]) is None
    assert store.stored(seen["savepoint"]) is None
    assert sum(store.stats().values()) == 2  # nothing else was written, not the refused one
    env = {**django_env(url), "BACKBEAT_DJANGO_DATABASE": f"sqlite://{tmp_path}/django.db"}
    worker = [sys.executable, "-m", "backbeat", "worker", "backbeat.django:runner"]
    with background_process(worker, tmp_path, env=env, name="worker") as (_, log):
        wait_until(lambda: store.stats()["succeeded"] == 2, 20, "the two tasks", log.read_text)
    assert store.stored(kept_id).result == '"WELCOME KEPT@EXAMPLE.COM"'
    assert store.stored(seen["at_once"]).result == '"welcome at-once@example.com"'
    assert store.stored(seen["gone"]) is None and store.stored(seen["savepoint"]) is None


FAILED_AT_COMMIT = """
import json, logging
import django
django.setup()
from django.db import connection, transaction
from tests.django_project.shop.tasks import send_welcome
logged = []
class Keep(logging.Handler):
    def emit(self, record):
        logged.append([record.getMessage(), getattr(record, "task_id", None)])
logging.getLogger("backbeat").addHandler(Keep())
with connection.cursor() as cursor:
    cursor.execute("CREATE TABLE orders (id text PRIMARY KEY)")
try:
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO orders VALUES ('order-1')")
        result = send_welcome.enqueue("ann@example.com")
    raised = None
except Exception as exc:
    raised = f"{type(exc).__name__}: {exc}"
with connection.cursor() as cursor:
    cursor.execute("SELECT id FROM orders")
    committed = [row[0] for row in cursor.fetchall()]
print(json.dumps({"id": result.id, "raised": raised, "committed": committed, "logged": logged}))
"""


def test_a_store_write_that_fails_at_the_commit_raises_to_the_committer_and_names_the_task(
    tmp_path,
):
    """The store cannot be written at the commit (a SQLite store whose file is a
    directory): Django's transaction stays committed, the error reaches the code that
    committed, and the log says which task was not written."""
    (tmp_path / "not-a-file").mkdir()
    url = f"sqlite:///{tmp_path}/not-a-file"
    seen = run(FAILED_AT_COMMIT, url, database=f"sqlite://{tmp_path}/django.db")
    assert seen["committed"] == ["order-1"]
    assert seen["raised"].startswith("StoreError") and "not-a-file" in seen["raised"]
    [(message, task_id)] = seen["logged"]
    assert task_id == seen["id"] and seen["id"] in message and "not-a-file" in message
