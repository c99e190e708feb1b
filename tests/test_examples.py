"""The reference page's examples, as `make demo` serves them."""

import logging

import pytest

from backbeat import App, Runner
from backbeat.testing import TestClient
from examples.register import app
from tests.conftest import recording

USER = {"email": "ann@example.com", "password": "s3cret"}


@pytest.fixture
def client(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # write_in_file writes ./log.txt
    # The example's routes, with a store of the test's own.
    runner = Runner(store=f"sqlite:///{tmp_path}/tasks.db")
    with TestClient(App(routes=app.routes, runner=runner)) as client:
        yield client


def test_single_task_example(client):
    with recording("examples.register") as log:
        response = client.post("/register", json=USER)
    assert (response.status_code, response.json()) == (201, {"message": "Created"})
    assert "notification sent: Account created" in log.messages(logging.INFO)


def test_background_tasks_example_runs_both_in_order(client, tmp_path):
    with recording("examples.register") as log:
        response = client.post("/register/with-log", json=USER)
    assert response.status_code == 201
    task_lines = [m for m in log.messages(logging.INFO) if m.startswith(("notification", "wrote"))]
    assert task_lines[0] == "notification sent: Account created"
    assert task_lines[1].startswith("wrote log.txt: Notification sent @ ")
    assert (tmp_path / "log.txt").read_text().startswith("Notification sent @ ")


def test_bad_registrations_run_no_task(client, tmp_path):
    assert client.post("/register/with-log", json={"email": 1}).status_code == 422
    assert (
        client.post(
            "/register/with-log", content=b"{", headers={"content-type": "application/json"}
        ).status_code
        == 400
    )
    assert not (tmp_path / "log.txt").exists()
