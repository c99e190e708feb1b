"""bench/sqlite: backbeat's SQLite store beside huey's SqliteHuey, in one run.

    .venv/bin/python bench/sqlite/run.py [--tasks 20000]     (or: bash bench/sqlite/run.sh)

Three measures of no-op tasks, each on a fresh database file:

* enqueue     — 32 concurrent producers write tasks (backbeat: 32 coroutines awaiting
                `runner.asubmit`, i.e. until the row is committed; huey: 32 threads
                calling the task, each call one insert and commit);
* one process — write N tasks and run them all in the same process
                (backbeat: Runner(store=...), concurrency 100; huey: a consumer with
                4 worker threads started in-process);
* app + 2 workers — one process writes N tasks, two worker processes run them
                (`backbeat worker`, concurrency 100; `huey` consumers, 4 threads each);
                timed from the first write until every task is done.

huey runs in the peers' venv (bench/.venv-peers) so its pins never touch ours.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PEERS = ROOT / "bench" / ".venv-peers" / "bin" / "python"
PRODUCERS = 32

sys.path.insert(0, str(HERE))


async def produce(runner, total: int) -> int:  # type: ignore[no-untyped-def]
    from tasks import noop

    from backbeat import BackgroundTask

    per = total // PRODUCERS

    async def producer() -> None:
        for index in range(per):
            await runner.asubmit(BackgroundTask(noop, index))

    await asyncio.gather(*(producer() for _ in range(PRODUCERS)))
    return per * PRODUCERS


async def ours_enqueue(db: str, total: int) -> float:
    from backbeat import Runner

    async with Runner(store=db, execute=False) as runner:
        started = time.perf_counter()
        done = await produce(runner, total)
        return done / (time.perf_counter() - started)


async def ours_one_process(db: str, total: int) -> float:
    from backbeat import Runner

    async with Runner(store=db, concurrency=100, poll_interval=0.05) as runner:
        started = time.perf_counter()
        done = await produce(runner, total)
        await runner.join()
        elapsed = time.perf_counter() - started
        assert runner.stats()["succeeded"] == done
    return done / elapsed


async def ours_with_workers(db: str, total: int, folder: Path) -> float:
    from backbeat import Runner

    env = {**os.environ, "BENCH_STORE": db, "PYTHONPATH": str(HERE)}
    command = [
        sys.executable,
        "-m",
        "backbeat",
        "worker",
        "tasks:app",
        "--concurrency",
        "100",
        "--log-level",
        "WARNING",
    ]
    workers = [subprocess.Popen(command, cwd=HERE, env=env) for _ in range(2)]  # noqa: ASYNC220
    try:
        await asyncio.sleep(1.5)  # let them start
        async with Runner(store=db, execute=False) as runner:
            started = time.perf_counter()
            done = await produce(runner, total)
            while runner.stats()["succeeded"] < done:  # noqa: ASYNC110 - polling another process
                await asyncio.sleep(0.01)
            return done / (time.perf_counter() - started)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=30)


def huey(*args: str) -> dict[str, float]:
    output = subprocess.run(
        [str(PEERS), str(HERE / "huey_side.py"), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def huey_with_workers(path: str, total: int) -> float:
    consumers = [
        subprocess.Popen(
            [str(PEERS), str(HERE / "huey_side.py"), "consume", path],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    try:
        time.sleep(1.5)
        started = time.perf_counter()
        huey("produce", str(total), path)
        expected = total // PRODUCERS * PRODUCERS
        while huey("count", path)["done"] < expected:
            time.sleep(0.05)
        return expected / (time.perf_counter() - started)
    finally:
        for consumer in consumers:
            consumer.terminate()
        for consumer in consumers:
            consumer.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    args = parser.parse_args()
    total = args.tasks
    folder = Path(tempfile.mkdtemp(prefix="bench-sqlite-"))
    rows: list[tuple[str, float, float]] = []

    def ours_db(name: str) -> str:
        return f"sqlite:///{folder}/{name}.db"

    measures = [
        (
            "enqueue, 32 producers (tasks/s)",
            lambda: asyncio.run(ours_enqueue(ours_db("enqueue"), total)),
            lambda: huey("enqueue", str(total), str(folder / "h-enqueue.db"))["rate"],
        ),
        (
            "one process, end to end (tasks/s)",
            lambda: asyncio.run(ours_one_process(ours_db("one"), total)),
            lambda: huey("e2e", str(total // 4), str(folder / "h-one.db"))["rate"],
        ),
        (
            "app + 2 workers, end to end (tasks/s)",
            lambda: asyncio.run(ours_with_workers(ours_db("workers"), total, folder)),
            lambda: huey_with_workers(str(folder / "h-workers.db"), total // 4),
        ),
    ]
    for label, ours, theirs in measures:
        mine = ours()
        other = theirs() if PEERS.exists() else float("nan")
        rows.append((label, mine, other))
        print(f"  {label:<40} backbeat {mine:>8.0f}  huey {other:>8.0f}", flush=True)

    print()
    print(
        f"bench/sqlite — {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, {total} tasks "
        f"(huey: {total // 4} for the end-to-end runs)"
    )
    print()
    print("| measure | backbeat | huey | backbeat ÷ huey |")
    print("|---|---:|---:|---:|")
    for label, mine, other in rows:
        print(f"| {label} | {mine:,.0f} | {other:,.0f} | {mine / other:.1f}x |")


if __name__ == "__main__":
    main()
