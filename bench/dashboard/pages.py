"""Every dashboard page's render time over a SQLite store with a million tasks.

    .venv/bin/python bench/dashboard/pages.py [--tasks 1000000] [--repeat 50] [--alone 5]

Builds the store once (bench/dashboard/store_queries.py's fixture: direct INSERTs in the
store's own schema, kept in /tmp and shared with that benchmark), serves it
with `backbeat dashboard` (uvicorn, one process, `--refresh 1`) and times each page to its
last byte on a keep-alive connection, two ways:

- busy: `--repeat` fetches back to back: the pages share the snapshot (counts, queues,
  workers...) read at most once a second, as many viewers do;
- alone: `--alone` fetches, each after the snapshot went stale (1.2 s apart): one operator
  clicking around, who pays for the snapshot's read whenever the page needs it.

Budget: p95 under 100 ms for every page, both ways. Exit 1 when a page misses it or
answers anything but 200.
"""

from __future__ import annotations

import argparse
import platform
import sqlite3
import statistics
import sys
import time
from pathlib import Path

import httpx

from backbeat.ids import lowest_id

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve import dashboard  # scripts beside this one
from store_queries import count, fill

BUDGET_MS = 100.0
REFRESH = 1.0


def samples(path: Path) -> dict[str, str]:
    """Ids to ask for, picked from the store: the newest failed task, the oldest task."""
    conn = sqlite3.connect(path)
    try:
        failed = conn.execute(
            "SELECT id FROM backbeat_tasks WHERE state = 'failed' ORDER BY id DESC LIMIT 1"
        ).fetchone()[0]
        oldest = conn.execute("SELECT min(id) FROM backbeat_tasks").fetchone()[0]
    finally:
        conn.close()
    return {"failed": failed, "oldest": oldest}


def pages(picked: dict[str, str]) -> list[tuple[str, str]]:
    """(what, URL path): every page, the common filters, and the JSON API behind them."""
    return [
        ("overview", "/"),
        ("tasks", "/tasks"),
        ("tasks, failed", "/tasks?state=failed"),
        ("tasks, by name", "/tasks?name=app.task_07"),
        ("tasks, queue+state", "/tasks?queue=mail&state=pending"),
        ("tasks, by error", "/tasks?error=smtp.example.com"),
        ("tasks, by argument", "/tasks?argument=user4242@"),
        ("tasks, by id prefix", f"/tasks?id={picked['failed'][:12]}"),
        ("tasks, 15 days back", f"/tasks?before={picked['middle']}"),
        ("task (failed)", f"/tasks/{picked['failed']}"),
        ("task (oldest)", f"/tasks/{picked['oldest']}"),
        ("failures", "/failures"),
        ("workers & queues", "/workers"),
        ("schedules & limits", "/schedules"),
        ("api overview", "/api/overview"),
        ("api tasks, failed", "/api/tasks?state=failed"),
        ("api task", f"/api/tasks/{picked['failed']}"),
        ("api failures", "/api/failures"),
    ]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def measure(http: httpx.Client, path: str, repeat: int, pause: float = 0.0) -> list[float]:
    http.get(path)  # warm: the store's first read of these pages, Python's first call
    times = []
    for _ in range(repeat):
        time.sleep(pause)
        started = time.perf_counter()
        response = http.get(path)
        times.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"{path}: {response.status_code} {response.text[:300]}")
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=50, help="busy fetches per page")
    parser.add_argument("--alone", type=int, default=5, help="fetches after a stale snapshot")
    parser.add_argument("--path", type=Path, default=None)
    args = parser.parse_args()
    path = args.path or Path(f"/tmp/backbeat-bench-dashboard-{args.tasks}.db")
    if count(path) != args.tasks:
        for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            leftover.unlink(missing_ok=True)
        began = time.monotonic()
        fill(path, args.tasks)
        print(f"filled {path} with {args.tasks:,} tasks in {time.monotonic() - began:.0f}s")
    picked = samples(path)
    picked["middle"] = lowest_id(time.time() - 15 * 86_400)
    print(
        f"{args.tasks} tasks in {path} ({path.stat().st_size / 2**20:.0f} MiB); "
        f"Python {platform.python_version()}, {platform.machine()}; "
        f"{args.repeat} fetches per page after one warm-up"
    )
    log = path.with_suffix(".dashboard.log")
    failed = []
    served = dashboard(f"sqlite:///{path}", log, "--refresh", str(REFRESH))
    with served as (url, _pid), httpx.Client(base_url=url, timeout=60) as http:
        print(f"{'':<22} {'busy (ms)':^26}  {'alone (ms)':^26}")
        print(f"{'page':<22} {'p50':>8} {'p95':>8} {'max':>8}  {'p50':>8} {'p95':>8} {'max':>8}")
        for what, page in pages(picked):
            busy = measure(http, page, args.repeat)
            alone = measure(http, page, args.alone, pause=REFRESH + 0.2)
            over = max(percentile(busy, 0.95), percentile(alone, 0.95)) >= BUDGET_MS
            if over:
                failed.append(what)
            print(
                f"{what:<22} {statistics.median(busy):8.1f} {percentile(busy, 0.95):8.1f} "
                f"{max(busy):8.1f}  {statistics.median(alone):8.1f} "
                f"{percentile(alone, 0.95):8.1f} {max(alone):8.1f}  {'OVER' if over else 'ok'}"
            )
    if failed:
        print(f"over the {BUDGET_MS:.0f} ms budget: {', '.join(failed)}")
        return 1
    print(f"every page: p95 under {BUDGET_MS:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
