"""`backbeat dashboard --store URL`: the dashboard served by uvicorn in a real process, with
what the flags grant (loopback only, --read-only, --open), and the refusals before it
serves (no uvicorn, no store, a memory store)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from backbeat import BackgroundTask
from backbeat.dashboard_command import authorizer, is_loopback, warnings_for
from tests.apps import durable_tasks
from tests.redis_server import forget, fresh_prefix_url
from tests.serving import ROOT, free_port

BACKBEAT = [sys.executable, "-m", "backbeat"]


def backbeat(*args: str, prelude: str = "pass") -> subprocess.CompletedProcess[str]:
    """The command in a fresh interpreter; `prelude` runs first (e.g. to hide a module)."""
    code = f"import sys; {prelude}; from backbeat.cli import main; sys.exit(main(sys.argv[1:]))"
    inherited = {key: value for key, value in os.environ.items() if key != "BACKBEAT_STORE"}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=inherited,
    )


def outside_address() -> str:
    """An address of this machine that is not loopback: a client connecting to it from
    here is seen as coming from it (a remote client, as far as the dashboard can tell)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # UDP: picks the outgoing address, sends nothing
        except OSError:
            pytest.skip("this machine has no network address besides loopback")
        address = str(probe.getsockname()[0])
    if is_loopback(address):
        pytest.skip("this machine has no network address besides loopback")
    return address


def client(host: str) -> SimpleNamespace:
    """What an authorizer reads of a request: its client's address."""
    return SimpleNamespace(client=SimpleNamespace(host=host, port=50000))


@pytest.mark.process
def test_without_uvicorn_it_says_which_extra_to_install(tmp_path):
    result = backbeat(
        "dashboard",
        "--store",
        f"sqlite:///{tmp_path}/tasks.db",
        prelude="sys.modules['uvicorn'] = None",
    )
    assert result.returncode == 2
    assert 'pip install "backbeat[dashboard]"' in result.stderr


@pytest.mark.process
def test_a_store_that_does_not_exist_is_not_created(tmp_path):
    result = backbeat("dashboard", "--store", f"sqlite:///{tmp_path}/typo.db")
    assert result.returncode == 2
    assert "no store at" in result.stderr
    assert not (tmp_path / "typo.db").exists()


@pytest.mark.process
def test_a_memory_store_is_refused_with_what_to_do_instead():
    result = backbeat("dashboard", "--store", "memory://")
    assert result.returncode == 1
    assert "mount backbeat.dashboard.dashboard(runner)" in result.stderr


@pytest.mark.process
def test_bad_root_path_and_port_are_named(tmp_path):
    url = f"sqlite:///{tmp_path}/tasks.db"
    bad_root = backbeat("dashboard", "--store", url, "--root-path", "ops")
    assert bad_root.returncode == 1 and "--root-path must start with '/'" in bad_root.stderr
    bad_port = backbeat("dashboard", "--store", url, "--port", "70000")
    assert bad_port.returncode == 1 and "--port must be from 0 to 65535" in bad_port.stderr
    bad_refresh = backbeat("dashboard", "--store", url, "--refresh", "0")
    assert bad_refresh.returncode == 1 and "--refresh must be" in bad_refresh.stderr


def test_loopback_addresses():
    assert all(map(is_loopback, ["127.0.0.1", "127.8.9.1", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["10.0.0.2", "0.0.0.0", "::", "example.com", "", None]))


def test_what_the_flags_grant():
    # No flag: the dashboard's own default (loopback clients, full access).
    assert authorizer(open_to_all=False, read_only=False) is None
    read_here = authorizer(open_to_all=False, read_only=True)
    assert read_here is not None
    assert read_here(client("127.0.0.1")) == "read"
    assert read_here(client("10.1.2.3")) is None
    assert read_here(SimpleNamespace(client=None)) is None
    read_all = authorizer(open_to_all=True, read_only=True)
    assert read_all is not None and read_all(client("10.1.2.3")) == "read"
    full_all = authorizer(open_to_all=True, read_only=False)
    assert full_all is not None and full_all(client("10.1.2.3")) == "full"


def test_warnings_say_who_is_served():
    assert warnings_for("127.0.0.1", 8000, open_to_all=False, read_only=False) == []
    assert warnings_for("0.0.0.0", 8000, open_to_all=True, read_only=True) == []
    [remote] = warnings_for("0.0.0.0", 8000, open_to_all=False, read_only=True)
    assert "only loopback clients are served" in remote and "--open" in remote
    [acting] = warnings_for("0.0.0.0", 8000, open_to_all=True, read_only=False)
    assert "may retry, cancel and delete" in acting and "--read-only" in acting


# --- served ---------------------------------------------------------------------------------


async def stored_failure(url: str) -> str:
    """A store with one failed task in it (its app ran it), the task's id."""
    async with durable_tasks.runner(url, execute=True, poll_interval=0.05) as runner:
        task_id = await runner.asubmit(BackgroundTask(durable_tasks.flaky, "dash-cli"))
        deadline = time.monotonic() + 10
        while (await runner.aget(task_id)).state.value != "failed":
            assert time.monotonic() < deadline, "the task never failed"
            await asyncio.sleep(0.05)
    return task_id


class Dashboard:
    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process, self.port, self.log_path = process, port, log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def serve(tmp_path: Path, *args: str, name: str = "dashboard") -> Dashboard:
    port = free_port()
    log = tmp_path / f"{name}.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [*BACKBEAT, "dashboard", "--port", str(port), *args],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    served = Dashboard(process, port, log)
    deadline = time.monotonic() + 20
    while True:
        if process.poll() is not None:
            raise AssertionError(f"backbeat dashboard exited {process.returncode}:\n{log}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return served
        except OSError:
            assert time.monotonic() < deadline, f"never listened:\n{served.log()}"
            time.sleep(0.05)


def stop(served: Dashboard) -> int:
    served.process.send_signal(signal.SIGTERM)
    try:
        return served.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        served.process.kill()
        raise AssertionError(f"SIGTERM did not stop it:\n{served.log()}") from None


@pytest.mark.process
def test_serves_the_store_under_its_root_path_and_stops_on_sigterm(tmp_path):
    url = f"sqlite:///{tmp_path}/tasks.db"
    task_id = asyncio.run(stored_failure(url))
    served = serve(tmp_path, "--store", url, "--root-path", "/ops")
    try:
        with httpx.Client(base_url=served.url, timeout=10) as http:
            # A proxy strips the prefix; uvicorn's root_path puts it back in every link.
            tasks = http.get("/tasks", params={"state": "failed"})
            assert tasks.status_code == 200, tasks.text
            assert task_id in tasks.text and "/ops/tasks/" in tasks.text
            page = http.get(f"/tasks/{task_id}")
            assert page.status_code == 200 and "dash-cli failed" in page.text
            assert "default-src 'none'" in page.headers["content-security-policy"]
            # Loopback, no flag: full access, the retry is offered.
            assert 'action="/ops/actions/retry"' in page.text
    finally:
        code = stop(served)
    # A clean stop: uvicorn finishes, then dies of the SIGTERM it caught (its way, so a
    # supervisor sees the signal).
    assert code in (0, -signal.SIGTERM), served.log()
    assert "Finished server process" in served.log()
    assert "loopback clients only" in served.log()


@pytest.mark.process
def test_read_only_offers_no_action_and_refuses_one(tmp_path):
    url = f"sqlite:///{tmp_path}/tasks.db"
    task_id = asyncio.run(stored_failure(url))
    served = serve(tmp_path, "--store", url, "--read-only", "--host", "0.0.0.0")
    try:
        with httpx.Client(base_url=served.url, timeout=10) as http:
            page = http.get(f"/tasks/{task_id}")
            assert page.status_code == 200 and "dash-cli failed" in page.text
            assert 'method="post"' not in page.text  # no action offered
            refused = http.post("/api/actions/retry", json={"ids": [task_id]})
            assert refused.status_code == 403, refused.text
            state = http.get(f"/api/tasks/{task_id}").json()
            assert state["state"] == "failed"
        # From this machine's own network address: not loopback, so not served.
        remote = httpx.get(f"http://{outside_address()}:{served.port}/tasks", timeout=10)
        assert remote.status_code == 403
    finally:
        stop(served)
    # Bound to every address without --open: said at start, before any request.
    assert "only loopback clients are served" in served.log()


@pytest.mark.process
def test_open_and_read_only_serves_other_hosts_without_actions(tmp_path):
    url = f"sqlite:///{tmp_path}/tasks.db"
    task_id = asyncio.run(stored_failure(url))
    served = serve(tmp_path, "--store", url, "--host", "0.0.0.0", "--open", "--read-only")
    try:
        base = f"http://{outside_address()}:{served.port}"
        with httpx.Client(base_url=base, timeout=10) as http:
            page = http.get(f"/tasks/{task_id}")
            assert page.status_code == 200 and "dash-cli failed" in page.text
            assert 'method="post"' not in page.text
            refused = http.post("/api/actions/retry", json={"ids": [task_id]})
            assert refused.status_code == 403, refused.text
    finally:
        stop(served)
    assert "every client" in served.log() and "WARNING" not in served.log()


@pytest.mark.process
@pytest.mark.redis
def test_serves_a_redis_store_and_refuses_an_empty_prefix(tmp_path, redis_server):
    url = fresh_prefix_url(redis_server)
    try:
        empty = backbeat("dashboard", "--store", url)
        assert empty.returncode == 2 and "no backbeat store under prefix" in empty.stderr
        task_id = asyncio.run(stored_failure(url))
        served = serve(tmp_path, "--store", url)
        try:
            with httpx.Client(base_url=served.url, timeout=10) as http:
                failed = http.get("/tasks", params={"state": "failed"})
                assert failed.status_code == 200 and task_id in failed.text
                retried = http.post("/actions/retry", data={"id": task_id, "confirm": "yes"})
                assert retried.status_code == 303, retried.text
                assert http.get(f"/api/tasks/{task_id}").json()["state"] != "failed"
        finally:
            stop(served)
        assert "backbeat dashboard of RedisStore(" in served.log()
    finally:
        forget(url)
