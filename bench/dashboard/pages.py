"""Every dashboard page's render time over a SQLite store with a million tasks.

    .venv/bin/python bench/dashboard/pages.py [--tasks 1000000] [--repeat 50]

Builds the store once (bench/dashboard/fixture.py, kept in /tmp/backbeat-bench), serves it
with `backbeat dashboard` (uvicorn, one process), fetches each page `--repeat` times one
after another on a keep-alive connection, and prints p50/p95/max of the time to the last
byte. Budget: p95 under 100 ms for every page. Exit 1 when a page misses it or answers
anything but 200.
"""

from __future__ import annotations

import argparse
import platform
import re
import sqlite3
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fixture import ensure  # a script beside this one
from serve import dashboard

BUDGET_MS = 100.0


def samples(path: Path) -> dict[str, str]:
    """Ids and names to ask for, picked from the store (a failed task, an old one...)."""
    conn = sqlite3.connect(path)
    try:
        failed = conn.execute(
            "SELECT id FROM backbeat_tasks WHERE state = 'failed' ORDER BY id DESC LIMIT 1"
        ).fetchone()[0]
        oldest = conn.execute("SELECT min(id) FROM backbeat_tasks").fetchone()[0]
        email = conn.execute("SELECT payload FROM backbeat_tasks WHERE rowid = 777").fetchone()[0]
    finally:
        conn.close()
    argument = re.search(r"user\d+@ex\.com", email)
    return {"failed": failed, "oldest": oldest, "argument": argument.group(0) if argument else ""}


def pages(picked: dict[str, str]) -> list[tuple[str, str]]:
    """(what, URL path): every page, the common filters, and the JSON API behind them."""
    return [
        ("overview", "/"),
        ("tasks", "/tasks"),
        ("tasks, failed", "/tasks?state=failed"),
        ("tasks, by name", "/tasks?name=shop.charge"),
        ("tasks, by queue+state", "/tasks?queue=billing&state=pending"),
        ("tasks, by error", "/tasks?error=TimeoutError"),
        ("tasks, by argument", f"/tasks?argument={picked['argument']}"),
        ("task (failed)", f"/tasks/{picked['failed']}"),
        ("task (oldest)", f"/tasks/{picked['oldest']}"),
        ("failures", "/failures"),
        ("workers & queues", "/workers"),
        ("schedules", "/schedules"),
        ("api overview", "/api/overview"),
        ("api tasks, failed", "/api/tasks?state=failed"),
        ("api failures", "/api/failures"),
    ]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def measure(http: httpx.Client, path: str, repeat: int) -> list[float]:
    http.get(path)  # warm: the store's first read of these pages, Python's first call
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = http.get(path)
        times.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"{path}: {response.status_code} {response.text[:300]}")
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--path", type=Path, default=None)
    args = parser.parse_args()
    path = args.path or Path(f"/tmp/backbeat-bench/{args.tasks}.db")
    ensure(path, args.tasks)
    picked = samples(path)
    print(
        f"{args.tasks} tasks in {path} ({path.stat().st_size / 2**20:.0f} MiB); "
        f"Python {platform.python_version()}, {platform.machine()}; "
        f"{args.repeat} fetches per page after one warm-up"
    )
    log = path.with_suffix(".dashboard.log")
    failed = []
    with (
        dashboard(f"sqlite:///{path}", log) as (url, _pid),
        httpx.Client(base_url=url, timeout=30) as http,
    ):
        print(f"{'page':<24} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}  budget")
        for what, page in pages(picked):
            times = measure(http, page, args.repeat)
            p95 = percentile(times, 0.95)
            verdict = "ok" if p95 < BUDGET_MS else "OVER"
            if p95 >= BUDGET_MS:
                failed.append(what)
            print(
                f"{what:<24} {statistics.median(times):8.1f} {p95:8.1f} {max(times):8.1f}  "
                f"{verdict}"
            )
    if failed:
        print(f"over the {BUDGET_MS:.0f} ms budget: {', '.join(failed)}")
        return 1
    print(f"every page: p95 under {BUDGET_MS:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
