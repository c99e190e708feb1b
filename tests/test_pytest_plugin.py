"""backbeat.pytest, the plugin: its fixtures, run in an inner pytest session (`pytester`)
that finds the plugin through its entry point, as a user's test suite would."""

from __future__ import annotations

import re

import pytest

from tests.serving import ROOT

pytestmark = pytest.mark.process

pytest_plugins = ["pytester"]

APP = """
import pytest
from backbeat import App, BackgroundTask, JSONResponse, Runner, post, task
from backbeat.testing import TestClient

done = []

@task(name="plugin.remember")
async def remember(word: str) -> None:
    if word == "bad":
        raise ValueError("a bad word")
    done.append(word)

@post("/say/{word}")
async def say(word: str) -> JSONResponse:
    return JSONResponse({"ok": True}, background=BackgroundTask(remember, word))
"""


def run_inner(pytester: pytest.Pytester, tests: str) -> pytest.RunResult:
    pytester.makepyfile(test_inner=APP + tests)
    return pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")


def test_the_fixtures_come_from_the_entry_point(pytester):
    result = run_inner(
        pytester,
        """
async def test_a_real_runner_and_join(backbeat_runner):
    async with backbeat_runner:
        backbeat_runner.submit(BackgroundTask(remember, "one"))
        await backbeat_runner.join()
    assert "one" in done

def test_an_app_served_with_the_runner(backbeat_runner):
    with TestClient(App(routes=[say], runner=backbeat_runner)) as client:
        client.post("/say/two")
    assert "two" in done

def test_eager_raises_in_place(backbeat_eager_runner):
    app = App(routes=[say], runner=backbeat_eager_runner)
    with TestClient(app) as client, pytest.raises(ValueError, match="a bad word"):
        client.post("/say/bad")

def test_a_store_of_its_own(backbeat_sqlite_runner, backbeat_store, tmp_path):
    assert backbeat_store == f"sqlite:///{tmp_path}/backbeat.db"
    with TestClient(App(routes=[say], runner=backbeat_sqlite_runner)) as client:
        client.post("/say/three")
    assert Runner(store=backbeat_store).stats()["succeeded"] == 1

pytestmark = pytest.mark.anyio

@pytest.fixture
def anyio_backend():
    return "asyncio"
""",
    )
    result.assert_outcomes(passed=4)


def test_a_task_failing_for_good_fails_the_test_unless_marked(pytester):
    result = run_inner(
        pytester,
        """
pytestmark = pytest.mark.anyio

@pytest.fixture
def anyio_backend():
    return "asyncio"

async def test_unmarked(backbeat_runner):
    async with backbeat_runner:
        backbeat_runner.submit(BackgroundTask(remember, "bad"))
        await backbeat_runner.join()

@pytest.mark.backbeat_failures_ok
async def test_marked(backbeat_runner, backbeat_failures):
    async with backbeat_runner:
        backbeat_runner.submit(BackgroundTask(remember, "bad"))
        await backbeat_runner.join()
    assert [info.name for info, _ in backbeat_failures] == ["plugin.remember"]
""",
    )
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        ["*background task(s) failed for good:*", "*'plugin.remember' (id *): *a bad word*"]
    )


def test_the_example_of_docs_testing_md_passes(pytester):
    text = (ROOT / "docs" / "testing.md").read_text()
    [example] = re.findall(r"^```py\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    pytester.makepyfile(test_docs_example=example)
    pytester.makeconftest(
        "import pytest\n@pytest.fixture\ndef anyio_backend():\n    return 'asyncio'\n"
    )
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_the_fixtures_round_trip_task_arguments_as_a_store_would(pytester):
    result = run_inner(
        pytester,
        """
from datetime import datetime
from pydantic import BaseModel

class Point(BaseModel):
    x: int

got = []

def keep(point, when) -> None:
    got.append((point, when))

@pytest.fixture
def anyio_backend():
    return "asyncio"

@pytest.mark.anyio
async def test_the_runner(backbeat_runner):
    async with backbeat_runner:
        backbeat_runner.submit(BackgroundTask(keep, Point(x=1), datetime(2026, 1, 2)))
        await backbeat_runner.join()
    assert got[-1] == ({"x": 1}, "2026-01-02T00:00:00")

def test_the_eager_runner(backbeat_eager_runner):
    @post("/keep")
    async def keep_route() -> JSONResponse:
        task = BackgroundTask(keep, Point(x=2), datetime(2026, 1, 3))
        return JSONResponse({}, background=task)

    with TestClient(App(routes=[keep_route], runner=backbeat_eager_runner)) as client:
        client.post("/keep")
    assert got[-1] == ({"x": 2}, "2026-01-03T00:00:00")
""",
    )
    result.assert_outcomes(passed=2)
