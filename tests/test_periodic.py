"""A periodic task runs exactly once per tick whatever the number of processes: 1-second
ticks for a minute with 4 worker processes on one SQLite file, with 3 hosts (network
namespaces) on one Redis, and with 3 hosts on one PostgreSQL; meanwhile one process is
killed with SIGKILL and restarted, the schedule is paused and resumed from another process,
and at the end everything stops, so that nothing runs the ticks missed while nothing ran
and the first process back goes on."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import pytest

from tests.hosts import Hosts
from tests.postgres_server import forget, fresh_schema_url
from tests.redis_server import server_binary
from tests.serving import ROOT
from tests.test_many_hosts import PostgresHost
from tests.test_workers import wait_until

pytestmark = pytest.mark.process

SECONDS = 60
WORKER = [sys.executable, "-m", "backbeat", "worker", "tests.apps.periodic_app:runner"]
# Workers wait for an app to make the store: this stands in for it.
CREATE = """
import asyncio, sys
from backbeat.stores import open_store

asyncio.run(open_store(sys.argv[1]).open())
"""
LOOK = """
import asyncio, json, sys
from backbeat.stores import open_store

async def look():
    store = open_store(sys.argv[1], create=False)
    await store.open()
    tasks = await store.list_tasks(name="every_second", limit=100_000)
    [record] = await store.schedules()
    print(json.dumps({
        "tasks": [[task.due_at, task.state, task.attempts] for task in tasks],
        "note": record.note, "paused": record.paused,
    }))
    await store.close()

asyncio.run(look())
"""


class Fleet:
    """Worker processes on one store, each on a host of its own (Redis, PostgreSQL) or all
    here (SQLite, or PostgreSQL's local server without netns)."""

    def __init__(self, tmp_path, store: str, hosts: Hosts | None, names: list[str]) -> None:
        self.tmp_path, self.store, self.hosts, self.names = tmp_path, store, hosts, names
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.starts = 0
        self.out = tmp_path / "runs.txt"

    def command(self, name: str, command: list[str]) -> list[str]:
        return command if self.hosts is None else self.hosts.run_in(name, command)

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "BACKBEAT_TEST_STORE": self.store,
            "BACKBEAT_TEST_OUT": str(self.out),
            "PYTHONUNBUFFERED": "1",
        }

    def start(self, name: str, command: list[str] = WORKER) -> None:
        self.starts += 1
        with open(self.tmp_path / f"{name}.{self.starts}.log", "wb") as log:
            self.processes[name] = subprocess.Popen(
                self.command(name, command), cwd=ROOT, env=self.env(), stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip

    def logs(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in self.tmp_path.glob("*.log"))

    def stop(self, name: str, how: signal.Signals = signal.SIGTERM) -> None:
        process = self.processes.pop(name)
        process.send_signal(how)
        process.wait(timeout=30)

    def stop_all(self) -> None:
        """All at once: stopping them one after the other would leave the last ones ticking."""
        stopping = [self.processes.pop(name) for name in self.names if name in self.processes]
        for process in stopping:
            process.send_signal(signal.SIGTERM)
        for process in stopping:
            process.wait(timeout=30)

    def run(self, code: str, *args: str) -> str:
        command = self.command(self.names[0], [sys.executable, "-c", code, self.store, *args])
        done = subprocess.run(command, cwd=ROOT, env=self.env(), capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def look(self) -> dict:
        return json.loads(self.run(LOOK))

    def schedules(self, action: str) -> None:
        cli = "import sys; from backbeat.cli import main; sys.exit(main(sys.argv[2:]))"
        self.run(cli, "schedules", action, "every_second", "--store", self.store)

    def run_times(self) -> list[float]:
        lines = self.out.read_text().splitlines() if self.out.exists() else []
        return [float(line.split()[1]) for line in lines]

    def runs(self) -> int:
        return len(self.run_times())


@pytest.mark.netns
@pytest.mark.redis
@pytest.mark.postgres
def test_each_tick_runs_once_on_sqlite_redis_and_postgres(tmp_path, request):
    """The three fleets side by side, a minute each at the same time (they mostly wait:
    running them one after the other would cost CI two minutes more). Each is built in its
    own thread too: a PostgreSQL cluster takes seconds to make and start."""
    builders = [("sqlite", sqlite_fleet)]
    if os.geteuid() == 0 and shutil.which("ip"):
        builders += [("redis", redis_fleet), ("postgres", postgres_fleet)]
    else:
        print("\nNO NETNS: the Redis fleet needs root and `ip`; it did not run")
        try:
            url = fresh_schema_url(request.getfixturevalue("postgres_server"))
        except pytest.skip.Exception as skipped:
            print(f"\n{skipped}")
        else:
            builders.append(("postgres", functools.partial(local_postgres_fleet, url=url)))

    def build_and_exercise(kind: str, build, cleanup: ExitStack) -> None:
        try:
            fleet = build(tmp_path / kind, cleanup)
        except pytest.skip.Exception as skipped:  # no server: the others still run
            print(f"\n{skipped}")
            return
        exercise(fleet, kind)

    with ExitStack() as cleanup, ThreadPoolExecutor(len(builders)) as pool:
        # A stack per fleet: each thread registers its own clean-up, in its own stack.
        runs = [
            pool.submit(build_and_exercise, kind, build, cleanup.enter_context(ExitStack()))
            for kind, build in builders
        ]
        for done in runs:
            done.result()


def sqlite_fleet(tmp_path, cleanup: ExitStack) -> Fleet:
    """4 worker processes on this host, one SQLite file."""
    tmp_path.mkdir()
    fleet = Fleet(tmp_path, f"sqlite:///{tmp_path}/tasks.db", None, ["w1", "w2", "w3", "w4"])
    cleanup.callback(lambda: [p.kill() for p in fleet.processes.values()])
    return fleet


def redis_fleet(tmp_path, cleanup: ExitStack) -> Fleet:
    """3 hosts of their own (network namespaces), a worker on each, Redis on a fourth."""
    tmp_path.mkdir()
    names = ["a", "b", "c"]
    hosts = cleanup.enter_context(Hosts(["redis", *names]))
    address = hosts.address["redis"]
    fleet = Fleet(tmp_path, f"redis://{address}:6379/0?prefix=periodic", hosts, names)
    cleanup.callback(lambda: [p.kill() for p in fleet.processes.values()])
    fleet.start("redis", [
        server_binary() or "redis-server", "--bind", address, "--port", "6379",
        "--protected-mode", "no", "--save", "", "--dir", tempfile.mkdtemp(dir=tmp_path),
    ])  # fmt: skip
    ping = ["redis-cli", "-h", address, "ping"]
    wait_until(
        lambda: subprocess.run(hosts.run_in("a", ping), capture_output=True).stdout == b"PONG\n",
        10,
        "redis",
    )
    return fleet


def postgres_fleet(tmp_path, cleanup: ExitStack) -> Fleet:
    """3 hosts of their own, a worker on each, a PostgreSQL cluster of the test's own on a
    fourth."""
    tmp_path.mkdir()
    names = ["a", "b", "c"]
    hosts = cleanup.enter_context(Hosts(["store", *names]))
    server = PostgresHost(hosts, tmp_path)
    cleanup.callback(server.stop)
    fleet = Fleet(tmp_path, server.url, hosts, names)
    cleanup.callback(lambda: [p.kill() for p in fleet.processes.values()])
    server.start()
    return fleet


def local_postgres_fleet(tmp_path, cleanup: ExitStack, url: str) -> Fleet:
    """Without netns: 3 worker processes on this host, a fresh schema on the tests' server."""
    tmp_path.mkdir()
    cleanup.callback(forget, url)
    fleet = Fleet(tmp_path, url, None, ["w1", "w2", "w3"])
    cleanup.callback(lambda: [p.kill() for p in fleet.processes.values()])
    return fleet


def exercise(fleet: Fleet, kind: str) -> None:
    workers = list(fleet.names)
    fleet.run(CREATE)
    for name in workers:
        fleet.start(name)
    wait_until(lambda: fleet.runs() >= 1, 20, "the first tick's run", fleet.logs)
    began = time.time()

    def at(second: float) -> None:  # seconds after the first run
        time.sleep(max(began + second - time.time(), 0))

    at(SECONDS * 0.25)
    fleet.stop(workers[0], signal.SIGKILL)
    killed = time.time()
    at(SECONDS * 0.35)
    fleet.start(workers[0])
    at(SECONDS * 0.55)
    fleet.schedules("pause")
    paused = time.time()
    at(SECONDS * 0.65)
    fleet.schedules("resume")
    resumed = time.time()
    at(SECONDS)
    fleet.stop_all()  # everything down ...
    stopped = time.time()
    time.sleep(4)
    fleet.start(workers[1])  # ... and one process back
    back = time.time()
    # The runs' file first: a look at the store costs a Python process, and a stream of
    # them would slow the worker's start that they wait for.
    wait_until(lambda: max(fleet.run_times()) >= back, 20, "a run after the restart", fleet.logs)

    def all_finished() -> bool:
        tasks = fleet.look()["tasks"]
        return all(state == "succeeded" for _, state, _ in tasks) and (
            max(due for due, _, _ in tasks) >= int(back)
        )

    wait_until(all_finished, 20, "the tasks to finish after the restart", fleet.logs)
    fleet.stop_all()

    tasks = fleet.look()["tasks"]
    ticks = sorted(int(due) for due, _, _ in tasks)
    print(
        f"\n{kind}: {len(ticks)} ticks enqueued from {len(fleet.names)} processes, "
        f"{fleet.runs()} runs, attempts {sorted({a for _, _, a in tasks})}"
    )
    assert len(ticks) == len(set(ticks)), "a tick was enqueued twice"
    # Each attempt ran once. A second attempt is at-least-once at work, not a second tick:
    # only a task the killed process had claimed and not yet settled may have one.
    assert fleet.runs() == sum(attempts for _, _, attempts in tasks)
    assert sum(attempts > 1 for _, _, attempts in tasks) <= 1
    first = ticks[0]
    expected = {
        tick
        for tick in range(first, int(stopped))
        if not paused + 1 < tick < resumed - 1  # paused: noted, nothing enqueued
    }
    # A tick may land either side of the pause, the resume and the stop: only those
    # strictly inside each window are asserted. The kill is not such a window: the ticks
    # around it are all expected, enqueued by the processes left.
    loose = {
        tick
        for tick in range(first, int(back) + 2)
        if abs(tick - paused) <= 1 or abs(tick - resumed) <= 1 or tick >= int(stopped) - 1
    }
    assert int(killed) in expected
    assert not (expected - loose) - set(ticks), f"ticks missing: {sorted(expected - set(ticks))}"
    assert not [t for t in ticks if paused + 1 < t < resumed - 1], "a paused tick was enqueued"
    # Everything was down from `stopped` to `back`: nothing ran those ticks, and the first
    # process back went on from its first tick (the missed-tick policies are tested with an
    # injected clock in tests/engine/test_scheduler.py, on every store).
    assert not [t for t in ticks if stopped + 1 < t < back - 1]
    assert max(ticks) >= int(back)
