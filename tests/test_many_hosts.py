"""Many machines, as many machines: the store's server (Redis, or PostgreSQL), the app and
two workers each on a host of their own (network namespaces on a private subnet), then a
host dies, a link is cut, the server dies and comes back. Both servers go through the same
steps.

Needs root (`ip netns`): skipped, with the reason, otherwise.
"""

import collections
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from tests.hosts import Hosts
from tests.postgres_server import OwnPostgres
from tests.redis_server import server_binary
from tests.serving import ROOT
from tests.test_workers import wait_until

pytestmark = [pytest.mark.netns, pytest.mark.process]

WORKER = [sys.executable, "-m", "backbeat", "worker", "tests.apps.durable_app:app"]
CLIENT = """
import json, sys, httpx
accepted = []
with httpx.Client(base_url="http://127.0.0.1:8000", timeout=10) as client:
    for index in range(int(sys.argv[1])):
        label = f"{sys.argv[2]}{index}"
        response = client.post("/work", params={"seconds": sys.argv[3], "label": label})
        if response.status_code == 201:
            accepted.append([label, response.json()["id"]])
print(json.dumps(accepted))
"""
LOOK = """
import json, sys
from backbeat import Runner
runner = Runner(store=sys.argv[1])
print(json.dumps({"stats": runner.stats(), "task": (lambda i: i and {"state": i.state.value,
    "attempts": i.attempts})(runner.get(sys.argv[2]) if len(sys.argv) > 2 else None)}))
"""


class RedisHost:
    """Redis on the host `store`; AOF with fsync always: its kill -9 loses no task it took."""

    name = "Redis"

    def __init__(self, hosts: Hosts, tmp_path) -> None:
        self.hosts, self.tmp_path = hosts, tmp_path
        self.address = hosts.address["store"]
        self.url = f"redis://{self.address}:6379/0?prefix=hosts"
        self.directory = tempfile.mkdtemp(dir=tmp_path)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.tmp_path / "redis.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(self.hosts.run_in("store", [
            server_binary() or "redis-server", "--bind", self.address, "--port", "6379",
            "--protected-mode", "no", "--save", "", "--appendonly", "yes",
            "--appendfsync", "always", "--dir", self.directory,
        ]), stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        wait_until(self.answers, 10, "redis")

    def answers(self) -> bool:
        ping = self.hosts.run_in("app", ["redis-cli", "-h", self.address, "ping"])
        return subprocess.run(ping, capture_output=True, text=True).stdout.strip() == "PONG"

    def crash(self) -> None:
        """kill -9."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    stop = crash


class PostgresHost:
    """A PostgreSQL cluster of the test's own on the host `store`, trusting the subnet."""

    name = "PostgreSQL"

    def __init__(self, hosts: Hosts, tmp_path) -> None:
        # Not under tmp_path: the server's user must reach its files (pytest's are root's).
        self.directory = tempfile.mkdtemp(prefix="backbeat-hosts-")
        address = hosts.address["store"]
        self.server = OwnPostgres(self.directory, address, 5432, hosts.run_in("store", []))
        self.url = f"postgresql://postgres@{address}:5432/test?schema=hosts"

    def start(self) -> None:
        self.server.start()  # back when it accepts connections (pg_ctl -w)

    def crash(self) -> None:
        """pg_ctl stop -m immediate: no checkpoint, no goodbye to clients; WAL recovery at
        the next start."""
        self.server.stop()

    def stop(self) -> None:
        self.server.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


class Cluster:
    def __init__(self, hosts: Hosts, server: RedisHost | PostgresHost, tmp_path) -> None:
        self.hosts, self.server, self.tmp_path = hosts, server, tmp_path
        self.store = server.url
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.starts = collections.Counter[str]()
        self.ids: dict[str, str] = {}

    def env(self, **more: str) -> dict[str, str]:
        import os

        return {
            **os.environ,
            "BACKBEAT_TEST_STORE": self.store,
            "BACKBEAT_TEST_OUT": str(self.tmp_path / "marks.txt"),
            "BACKBEAT_TEST_LEASE": "2",
            "BACKBEAT_TEST_SHUTDOWN": "0.2",
            "PYTHONUNBUFFERED": "1",
            **more,
        }

    def start(self, name: str, host: str, command: list[str], **env: str) -> None:
        self.starts[name] += 1
        log = open(self.tmp_path / f"{name}{self.starts[name]}.log", "wb")  # noqa: SIM115
        self.processes[name] = subprocess.Popen(
            self.hosts.run_in(host, command), cwd=ROOT, env=self.env(**env), stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip

    def log(self, name: str) -> str:
        return "\n".join(
            (self.tmp_path / f"{name}{n}.log").read_text(errors="replace")
            for n in range(1, self.starts[name] + 1)
        )

    def start_app(self) -> None:
        self.start("app", "app", [sys.executable, "-m", "uvicorn", "tests.apps.durable_app:app",
                                  "--port", "8000", "--log-level", "warning"],
                   BACKBEAT_TEST_EXECUTE="0")  # fmt: skip
        wait_until(self.app_answers, 15, "the app", lambda: self.log("app"))

    def app_answers(self) -> bool:
        """Any HTTP answer (a 404 will do): the server is up and listening."""
        probe = "import httpx; httpx.get('http://127.0.0.1:8000/')"
        command = self.hosts.run_in("app", [sys.executable, "-c", probe])
        return subprocess.run(command, cwd=ROOT, capture_output=True).returncode == 0

    def post(self, count: int, prefix: str, seconds: float) -> list[str]:
        """The labels of the tasks the app accepted (201); their ids in `self.ids`."""
        command = self.hosts.run_in(
            "app", [sys.executable, "-c", CLIENT, str(count), prefix, str(seconds)]
        )
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0, f"the client failed:\n{result.stderr}\n{self.log('app')}"
        pairs = json.loads(result.stdout)
        self.ids.update(pairs)
        return [label for label, _ in pairs]

    def look(self, task_id: str | None = None) -> dict:
        args = [self.store, *([task_id] if task_id else [])]
        command = self.hosts.run_in("app", [sys.executable, "-c", LOOK, *args])
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
        return json.loads(result.stdout)

    def marks(self) -> collections.Counter[str]:
        path = self.tmp_path / "marks.txt"
        lines = path.read_text().splitlines() if path.exists() else []
        return collections.Counter(line.split()[0] for line in lines)

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait()
        self.server.stop()


@pytest.mark.parametrize(
    "server",
    [
        pytest.param(RedisHost, marks=pytest.mark.redis, id="redis"),
        pytest.param(PostgresHost, marks=pytest.mark.postgres, id="postgres"),
    ],
)
def test_a_host_dies_a_link_is_cut_the_server_dies_and_no_accepted_task_is_lost(
    server, tmp_path, capsys
):
    def say(line: str) -> None:  # shown in the test run's output, not captured
        with capsys.disabled():
            print(line)

    with Hosts(["store", "app", "a", "b"]) as hosts:
        cluster = Cluster(hosts, server(hosts, tmp_path), tmp_path)
        try:
            run_the_three_steps(cluster, say)
        finally:
            cluster.stop_all()


def run_the_three_steps(cluster: Cluster, say) -> None:
    cluster.server.start()
    cluster.start_app()
    # 1. Host A dies (every process, kill -9) in the middle of its tasks.
    accepted = cluster.post(200, "s", 0.3)
    assert len(accepted) == 200
    cluster.start("a", "a", [*WORKER, "--concurrency", "8"])
    cluster.start("b", "b", [*WORKER, "--concurrency", "8"])
    wait_until(lambda: sum(cluster.marks().values()) >= 40, 30, "work", lambda: cluster.log("a"))
    # Mid-task: tasks claimed together end together, and a kill in the millisecond between a
    # task's end and the record of its outcome would run it again (at least once, by design).
    time.sleep(0.15)
    cluster.hosts.kill_all("a")
    wait_until(
        lambda: set(cluster.marks()) >= set(accepted), 60, "every task", lambda: cluster.log("b")
    )
    twice = [label for label, count in cluster.marks().items() if count > 1]
    say(f"\nstep 1 (host A killed): accepted {len(accepted)}, ran {len(cluster.marks())}, "
          f"twice {len(twice)}")  # fmt: skip
    assert not twice

    # 2. Host B's link is cut for longer than the lease while it runs a task.
    [long_one] = cluster.post(1, "long", 4.0)
    wait_until(
        lambda: running_state(cluster) == "running", 10, "B's claim", lambda: cluster.log("b")
    )
    cluster.hosts.cut("b")
    time.sleep(3)  # past the 2 s lease
    cluster.start("a", "a", [*WORKER, "--concurrency", "8"])  # A is back
    wait_until(lambda: cluster.marks()[long_one] >= 2, 20, "A's run", lambda: cluster.log("a"))
    cluster.hosts.mend("b")
    wait_until(
        lambda: "finished after it was lost" in cluster.log("b"), 30, "B's late finish refused",
        lambda: cluster.log("b"),
    )  # fmt: skip
    looked = cluster.look(cluster.ids[long_one])
    stats = looked["stats"]
    assert looked["task"] == {"state": "succeeded", "attempts": 2}  # B's claim, then A's
    say(f"step 2 (B cut off): {long_one} ran {cluster.marks()[long_one]} times (B's and A's); "
          f"B's late finish refused; stats {stats}")  # fmt: skip
    assert stats["succeeded"] == 201 and stats["running"] == 0 and stats["failed"] == 0

    # 3. The server dies and starts again (what it acknowledged is on disk): everyone
    # reconnects.
    name = cluster.server.name
    before_kill = cluster.post(50, "r", 0.05)
    assert len(before_kill) == 50
    cluster.server.crash()
    during = cluster.post(5, "down", 0.05)
    cluster.server.start()
    after = cluster.post(50, "t", 0.05)
    everything = [*accepted, *before_kill, *during, *after]
    wait_until(lambda: set(cluster.marks()) >= set(everything), 60, f"every task after {name} died")
    say(f"step 3 ({name} crashed, started again): accepted {len(before_kill)} before, "
          f"{len(during)} while down, {len(after)} after; all ran")  # fmt: skip
    assert cluster.look()["stats"]["succeeded"] == 201 + len(everything) - len(accepted)


def running_state(cluster: Cluster) -> str:
    stats = cluster.look()["stats"]
    return "running" if stats["running"] == 1 else "not yet"
