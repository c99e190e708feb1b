"""backbeat behind a real uvicorn process on 127.0.0.1."""

import socket
import time

import httpx
import pytest

from tests.serving import request, uvicorn


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
