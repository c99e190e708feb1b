"""An app with the dashboard mounted at /ops/dash, for the browser tests and the benchmarks.

Env: BACKBEAT_TEST_STORE (the store's URL), BACKBEAT_TEST_DIR (where `flaky` looks for
its `succeed` flag file). The app runs its own tasks. Access: the cookie ``ops`` or the
header ``x-ops-token`` equal to ``full-token`` may act, ``read-token`` may only look;
anyone else gets 403 (loopback or not: there is an authorizer).
"""

import asyncio
import os
from pathlib import Path

from starlette.requests import Request
from starlette.routing import Mount

from backbeat import App, BackgroundTasks, Runner, get, post, progress, task
from backbeat.dashboard import dashboard

FULL_TOKEN = "full-token"
READ_TOKEN = "read-token"

runner = Runner(
    store=os.environ["BACKBEAT_TEST_STORE"],
    poll_interval=0.1,
    lease=1.0,  # a cancelled running task stops at its next renewal: soon
    concurrency=int(os.environ.get("BACKBEAT_TEST_CONCURRENCY", "8")),
    shutdown_timeout=2,
)


def flag() -> Path:
    return Path(os.environ["BACKBEAT_TEST_DIR"]) / "succeed"


@task(name="ops.flaky")
def flaky(order: str) -> str:
    """Fails until the file `succeed` exists in BACKBEAT_TEST_DIR."""
    if not flag().exists():
        raise ConnectionError(f"payment gateway unreachable for order {order}")
    return f"order {order} charged"


@task(name="ops.stepwise")
async def stepwise(steps: int, pause: float) -> str:
    """Reports its progress every `pause` seconds, `steps` times."""
    for step in range(1, steps + 1):
        await asyncio.sleep(pause)
        progress(step / steps, f"step {step} of {steps}")
    return f"{steps} steps"


@task(name="ops.quick")
async def quick(label: str) -> str:
    return label


runner.register_module(__name__)


def authorize(request: Request) -> str | None:
    token = request.headers.get("x-ops-token") or request.cookies.get("ops")
    if token == FULL_TOKEN:
        return "full"
    if token == READ_TOKEN:
        return "read"
    return None


@post("/orders")
async def order(ident: str, tasks: BackgroundTasks) -> dict[str, str]:
    return {"id": tasks.add_task(flaky, ident).id}


@post("/imports")
async def imports(steps: int, pause: float, tasks: BackgroundTasks) -> dict[str, str]:
    return {"id": tasks.add_task(stepwise, steps, pause).id}


@post("/quick")
async def quick_route(label: str, tasks: BackgroundTasks) -> dict[str, str]:
    return {"id": tasks.add_task(quick, label).id}


@get("/health")
async def health() -> dict[str, bool]:
    return {"ok": True}


app = App(
    routes=[
        order,
        imports,
        quick_route,
        health,
        Mount("/ops/dash", app=dashboard(runner, authorize=authorize)),
    ],
    runner=runner,
)
