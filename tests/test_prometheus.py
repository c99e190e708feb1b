"""backbeat.prometheus: scraped through `metrics_route` (Prometheus's text format), parsed
with prometheus_client's own parser."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from backbeat import App, BackgroundTask, JSONResponse, Runner, post, task
from backbeat.prometheus import instrument, metrics_route
from backbeat.testing import TestClient

failures: list[int] = []


@task(name="prom.work", retries=1, backoff=0.01, queue="pdf")
async def work(fail_first: bool) -> None:
    if fail_first and not failures:
        failures.append(1)
        raise RuntimeError("first try fails")


@task(name="prom.later", queue="mail")
async def later() -> None:
    pass


@post("/work")
async def handler(fail_first: bool = False) -> JSONResponse:
    return JSONResponse({}, background=BackgroundTask(work, fail_first))


def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    return parsed(response.text)


def parsed(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_attempts_and_durations_by_task_queue_and_outcome():
    failures.clear()
    registry = CollectorRegistry()
    runner = Runner()
    metrics = instrument(runner, registry)
    app = App(routes=[handler, metrics_route(metrics)], runner=runner)
    with TestClient(app) as client:
        client.post("/work")
        client.post("/work?fail_first=true")
        seen = scrape(client)
    labels = (("outcome", "succeeded"), ("queue", "pdf"), ("task", "prom.work"))
    assert seen[("backbeat_task_attempts_total", labels)] == 2
    retried = (("outcome", "scheduled"), ("queue", "pdf"), ("task", "prom.work"))
    assert seen[("backbeat_task_attempts_total", retried)] == 1
    durations = ("backbeat_task_duration_seconds_count", (("queue", "pdf"), ("task", "prom.work")))
    assert seen[durations] == 3
    assert seen[("backbeat_tasks", (("queue", "pdf"), ("state", "running")))] == 0


@pytest.mark.anyio
async def test_live_tasks_per_queue_and_a_queue_keeps_reporting_when_empty():
    registry = CollectorRegistry()
    runner = Runner()
    metrics = instrument(runner, registry)
    async with runner:
        waiting = runner.submit(BackgroundTask(later).using(delay=60))
        await metrics.refresh()
        before = parsed(generate_latest(registry).decode())
        runner.cancel(waiting)
        await metrics.refresh()
        after = parsed(generate_latest(registry).decode())
    assert before[("backbeat_tasks", (("queue", "mail"), ("state", "scheduled")))] == 1
    assert before[("backbeat_tasks", (("queue", "mail"), ("state", "pending")))] == 0
    assert after[("backbeat_tasks", (("queue", "mail"), ("state", "scheduled")))] == 0


def test_a_stored_runner_reports_every_processs_tasks_from_the_store(tmp_path):
    store = f"sqlite:///{tmp_path}/tasks.db"
    Runner(store=store, execute=False).submit(BackgroundTask(later).using(delay=60))
    registry = CollectorRegistry()
    runner = Runner(store=store, execute=False)
    metrics = instrument(runner, registry)
    with TestClient(App(routes=[metrics_route(metrics)], runner=runner)) as client:
        seen = scrape(client)
    assert seen[("backbeat_tasks", (("queue", "mail"), ("state", "scheduled")))] == 1
    assert seen[("backbeat_tasks", (("queue", "mail"), ("state", "pending")))] == 0
