"""backbeat behind a real uvicorn process on 127.0.0.1."""

import signal
import socket
import time

import httpx
import pytest

from tests.serving import request, uvicorn

pytestmark = pytest.mark.process


@pytest.fixture
def server(tmp_path):
    with uvicorn("tests.apps.serving:app", tmp_path) as running:
        yield running


def test_the_response_does_not_wait_for_a_slow_task(server):
    started = time.perf_counter()
    response = httpx.post(f"{server.url}/slow")
    elapsed = time.perf_counter() - started
    assert response.status_code == 201
    assert response.json() == {"accepted": True}
    # The task sleeps 1 s; the response must come back well before that.
    assert elapsed < 0.5, f"response took {elapsed:.3f}s"
    assert "slow-done" not in server.marks()
    server.wait_for_mark("slow-done")


def test_a_failing_task_keeps_the_connection_and_its_sibling(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        assert request(sock, "POST", "/fail") == (201, b'{"ok":true}')
        server.wait_for_mark("sibling")
        time.sleep(0.1)  # the ASGI call has ended by now; a failure would have closed us
        assert request(sock, "GET", "/ping") == (200, b'{"pong":"yes"}')
        assert request(sock, "POST", "/fail")[0] == 201
    log = server.log()
    assert "Exception in ASGI application" not in log
    # Visible in a plain uvicorn console: the task's name, id and traceback.
    assert "Background task 'tests.apps.serving:explode' (id " in log
    assert "Traceback (most recent call last)" in log
    assert "RuntimeError: task exploded on purpose" in log


def test_control_starlettes_own_tasks_break_the_connection(tmp_path):
    # What the previous test guards against, shown on plain Starlette.
    with (
        uvicorn("tests.apps.serving:starlette_app", tmp_path) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock,
    ):
        assert request(sock, "POST", "/fail")[0] == 200
        time.sleep(0.3)
        with pytest.raises(ConnectionError):
            request(sock, "GET", "/ping")
        assert "sibling" not in server.marks()
        assert "Exception in ASGI application" in server.log()


def eight_requests_starting_two_second_tasks(server) -> list[int]:
    statuses = []
    for _ in range(8):
        response = httpx.post(f"{server.url}/sleep", params={"seconds": 2})
        statuses.append(response.status_code)
    return statuses


def test_tasks_do_not_count_against_uvicorns_concurrency_limit(tmp_path):
    with uvicorn("tests.apps.serving:app", tmp_path, "--limit-concurrency", "3") as server:
        assert eight_requests_starting_two_second_tasks(server) == [201] * 8
        for _ in range(8):
            server.wait_for_mark("slept-2")


def test_control_inline_tasks_hold_the_request_open_and_get_503(tmp_path):
    with uvicorn("tests.apps.serving:inline_app", tmp_path, "--limit-concurrency", "3") as server:
        statuses = eight_requests_starting_two_second_tasks(server)
    assert 503 in statuses


def test_sigterm_drains_then_cancels_and_logs_what_is_left(tmp_path):
    with uvicorn("tests.apps.serving:shutdown_app", tmp_path) as server:
        short = httpx.post(f"{server.url}/sleep", params={"seconds": 0.5}).json()["id"]
        long = httpx.post(f"{server.url}/sleep", params={"seconds": 60}).json()["id"]
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=10)
        elapsed = time.monotonic() - started
        log = server.log()
        assert "slept-0.5" in server.marks()
        assert "slept-60" not in server.marks()
    # shutdown_timeout is 2 s: the drain waits that long for the 60 s task, then cancels it.
    assert 1.9 < elapsed < 2 + 1.5, f"exit took {elapsed:.2f}s"
    # A clean exit (uvicorn >= 0.29 re-raises the SIGTERM it handled, hence -15).
    assert server.process.returncode in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in log
    assert f"Task 'tests.apps.serving:sleep_and_mark' (id {long}) lost at shutdown" in log
    assert short not in log
    assert "1 task(s) not finished within shutdown_timeout=2.0s" in log
