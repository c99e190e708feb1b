"""The dashboard server's memory with 10 live viewers for 5 minutes while a worker works.

    .venv/bin/python bench/dashboard/viewers.py [--viewers 10] [--minutes 5] [--every 10]

A fresh SQLite store; `backbeat worker` running the tasks of bench/dashboard/work_app.py
(each reports its progress ten times) that this script enqueues all along (3 a second, and
a failing one every 2 s); `backbeat dashboard` serving the store; `--viewers` SSE streams
on /events held open the whole time. The server's RSS is sampled every `--every` seconds.
Verdict: flat when the last sample is within 5% (or 3 MiB) of the first one taken after
the first minute's warm-up, and every viewer kept receiving updates.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import platform
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from serve import ROOT, dashboard, process, rss_mb  # noqa: E402

sys.path.insert(0, str(ROOT))

from backbeat import BackgroundTask, Runner  # noqa: E402
from bench.dashboard import work_app  # noqa: E402

WARM_UP = 60.0


async def create_store(url: str) -> None:
    """The store exists before the dashboard starts (it never creates one)."""
    async with Runner(store=url, execute=False):
        pass


async def finished(url: str) -> dict[str, int]:
    """The store's counts at the end: what the worker did meanwhile."""
    async with Runner(store=url, execute=False) as runner:
        assert runner.store is not None
        return await runner.store.counts()


async def feed(url: str, stop: asyncio.Event, seconds: float) -> int:
    fed = 0
    until = time.monotonic() + seconds
    async with Runner(store=url, execute=False) as runner:
        runner.register_module(work_app.__name__)
        while not stop.is_set() and time.monotonic() < until:
            for _ in range(3):
                await runner.asubmit(BackgroundTask(work_app.step, 10, 0.2))
                fed += 1
            if fed % 6 == 0:
                await runner.asubmit(BackgroundTask(work_app.fail, fed))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
    return fed


async def view(base: str, received: list[float], stop: asyncio.Event) -> None:
    """One viewer: an open /events stream; `received` gets the time of each update."""
    async with httpx.AsyncClient(base_url=base, timeout=None) as http:
        while not stop.is_set():
            async with http.stream("GET", "/events") as response:
                if response.status_code != 200:
                    raise SystemExit(f"/events answered {response.status_code}")
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        received.append(time.monotonic())
                    if stop.is_set():
                        return


async def watch(pid: int, every: float, seconds: float, viewers: list[list[float]]) -> list[float]:
    samples = []
    started = time.monotonic()
    while True:
        elapsed = time.monotonic() - started
        samples.append(rss_mb(pid))
        fresh = sum(1 for got in viewers if got and time.monotonic() - got[-1] < every)
        print(
            f"t={elapsed:5.0f}s rss={samples[-1]:7.1f} MiB  viewers updated in the last "
            f"{every:.0f}s: {fresh}/{len(viewers)}  updates so far: {sum(map(len, viewers))}",
            flush=True,
        )
        if elapsed >= seconds:
            return samples
        await asyncio.sleep(every)


async def run(args: argparse.Namespace, directory: Path) -> int:
    url = f"sqlite:///{directory}/tasks.db"
    await create_store(url)
    worker_command = [sys.executable, "-m", "backbeat", "worker", "bench.dashboard.work_app:runner"]
    worker_command += ["--store", url, "--log-level", "WARNING"]
    with (
        process(worker_command, directory / "worker.log"),
        dashboard(url, directory / "dashboard.log") as (base, pid),
    ):
        stop = asyncio.Event()
        received: list[list[float]] = [[] for _ in range(args.viewers)]
        feeding = args.minutes if args.feed_minutes is None else args.feed_minutes
        feeder = asyncio.create_task(feed(url, stop, feeding * 60))
        viewers = [asyncio.create_task(view(base, got, stop)) for got in received]
        try:
            samples = await watch(pid, args.every, args.minutes * 60, received)
        finally:
            stop.set()
            fed = await feeder
            for viewer in viewers:
                viewer.cancel()
            await asyncio.gather(*viewers, return_exceptions=True)
    counts = await finished(url)
    warm = [value for n, value in enumerate(samples) if n * args.every >= WARM_UP] or samples
    first, last, peak = warm[0], samples[-1], max(samples)
    flat = last - first <= max(3.0, first * 0.05)
    starved = [n for n, got in enumerate(received) if not got or time.monotonic() - got[-1] > 30]
    print(
        f"{args.viewers} viewers, {args.minutes:g} min, {fed} tasks fed (and 1 failing per 6); "
        "RSS MiB: first "
        f"{samples[0]:.1f}, after warm-up {first:.1f}, last {last:.1f}, max {peak:.1f}; "
        f"updates per viewer: {min(map(len, received))}-{max(map(len, received))}; "
        f"the store at the end: {counts}"
    )
    print(
        f"verdict: {'flat' if flat else 'GROWING'}" + (f"; starved: {starved}" if starved else "")
    )
    return 0 if flat and not starved else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--viewers", type=int, default=10)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument(
        "--feed-minutes",
        type=float,
        help="enqueue for this long only (default: all along); then the store stops growing",
    )
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    args = parser.parse_args()
    print(f"Python {platform.python_version()}, {platform.machine()}")
    with tempfile.TemporaryDirectory(prefix="backbeat-viewers-") as directory:
        return asyncio.run(run(args, Path(directory)))


if __name__ == "__main__":
    sys.exit(main())
