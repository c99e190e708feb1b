"""Task arguments in tests go through JSON and back, as a store would hand them to a worker:
an unannotated parameter gets a dict for a model, a str for a datetime, in a test without a
store as in production with one."""

from datetime import datetime

import pytest
from pydantic import BaseModel

from backbeat import App, BackgroundTask, BackgroundTasks, Runner, post
from backbeat.serialization import ArgumentError
from backbeat.testing import TestClient

seen: list[tuple[object, object]] = []
WHEN = datetime(2026, 12, 2, 9, 30)


class Order(BaseModel):
    id: int
    total: float


def ship(order, when) -> None:  # unannotated on purpose
    seen.append((order, when))


def ship_typed(order: Order, when: datetime) -> None:
    seen.append((order, when))


@post("/ship")
async def ship_route(tasks: BackgroundTasks) -> None:
    tasks.add_task(ship, Order(id=7, total=9.5), when=WHEN)


@post("/ship-typed")
async def ship_typed_route(tasks: BackgroundTasks) -> None:
    tasks.add_task(ship_typed, Order(id=7, total=9.5), when=WHEN)


@post("/ship-a-socket")
async def ship_a_socket(tasks: BackgroundTasks) -> None:
    tasks.add_task(ship, object(), when=WHEN)


@pytest.fixture(autouse=True)
def nothing_seen_yet():
    seen.clear()


def app_with(runner: Runner | None = None) -> App:
    return App(routes=[ship_route, ship_typed_route, ship_a_socket], runner=runner)


def test_the_test_client_hands_a_task_what_a_store_would():
    with TestClient(app_with()) as client:
        assert client.post("/ship").status_code == 201
    assert seen == [({"id": 7, "total": 9.5}, "2026-12-02T09:30:00")]


def test_which_is_what_a_real_store_hands_it(tmp_path):
    runner = Runner(store=f"sqlite:///{tmp_path}/tasks.db")
    runner.register(ship)
    with TestClient(app_with(runner)) as client:
        assert client.post("/ship").status_code == 201
    assert seen == [({"id": 7, "total": 9.5}, "2026-12-02T09:30:00")]


def test_annotated_parameters_get_their_types_back():
    with TestClient(app_with()) as client:
        client.post("/ship-typed")
    assert seen == [(Order(id=7, total=9.5), WHEN)]


def test_an_argument_a_store_could_not_keep_fails_the_test_and_says_how_to_opt_out():
    with TestClient(app_with()) as client, pytest.raises(ArgumentError) as raised:
        client.post("/ship-a-socket")
    assert "cannot be stored as JSON" in str(raised.value)
    assert "round_trip=False" in str(raised.value)


def test_an_app_that_never_uses_a_store_can_opt_out():
    with TestClient(app_with(), round_trip=False) as client:
        client.post("/ship")
        client.post("/ship-a-socket")
    assert seen[0] == (Order(id=7, total=9.5), WHEN)
    assert len(seen) == 2


@pytest.mark.anyio
async def test_a_runner_made_to_round_trip_does_it_for_submitted_tasks():
    async with Runner(round_trip=True) as runner:
        task = BackgroundTask(ship, Order(id=1, total=2.0), WHEN)
        assert runner.submit(task) == task.id
        await runner.join()
    assert seen == [({"id": 1, "total": 2.0}, "2026-12-02T09:30:00")]
    assert task.args == (Order(id=1, total=2.0), WHEN)  # the caller's object is untouched


@pytest.mark.anyio
async def test_without_it_a_runner_hands_over_live_objects():
    async with Runner() as runner:
        runner.submit(BackgroundTask(ship, Order(id=1, total=2.0), WHEN))
        await runner.join()
    assert seen == [(Order(id=1, total=2.0), WHEN)]
