"""Rate limits and per-key concurrency across real `backbeat worker` processes, on SQLite and
Redis (tests/apps/limits_app.py). Start times are the store's (`started_at`, set in the
claim's transaction) or the tasks' own marks; the workers run on this host, so their clocks
are one: a few ms of jitter between a claim and the clock reading that stamps it is allowed.
"""

import asyncio
import contextlib
import itertools
import signal
import sys
import time
from pathlib import Path

import pytest

from backbeat import BackgroundTask, BackgroundTasks, Runner
from backbeat.stores import open_store
from tests.apps import limits_tasks
from tests.serving import background_process
from tests.test_workers import env_for, wait_until, workers_alive

pytestmark = pytest.mark.process

WORKER = [sys.executable, "-m", "backbeat", "worker", "tests.apps.limits_app:runner"]
JITTER = 0.005


@contextlib.contextmanager
def workers(tmp_path: Path, store_url: str, count: int = 3):
    env = env_for(store_url)
    asyncio.run(open_store(store_url).open())  # workers wait for a store that exists
    with contextlib.ExitStack() as stack:
        started = [
            stack.enter_context(background_process(WORKER, tmp_path, env=env, name=f"w{n}"))[0]
            for n in range(count)
        ]
        wait_until(lambda: len(workers_alive(store_url)) == count, 20, "the workers to start")
        yield started


def marks(tmp_path: Path) -> list[tuple[str, int, float]]:
    path = tmp_path / "marks.txt"
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        label, pid, at = line.split()
        found.append((label, int(pid), float(at)))
    return found


def submit(store_url: str, tasks: list[BackgroundTask]) -> None:
    """Write the tasks in one write, from this process (a runner that does not execute)."""
    Runner(store=store_url, execute=False).submit(BackgroundTasks(tasks=tasks, as_group=True))


def stored(store_url: str, ids: list[str]):
    async def read():
        store = open_store(store_url)
        try:
            return [await store.get(task_id) for task_id in ids]
        finally:
            await store.close()

    return asyncio.run(read())


def test_a_rate_limit_holds_across_three_workers_and_other_tasks_pass(tmp_path, shared_db):
    store_url = shared_db
    with workers(tmp_path, store_url):
        rated = [BackgroundTask(limits_tasks.rated, f"r{n}") for n in range(200)]
        began = time.time()
        submit(store_url, rated)
        wait_until(lambda: len(marks(tmp_path)) >= 40, 5, "two windows of starts")
        free = BackgroundTask(limits_tasks.free, "f")
        submit(store_url, [free])
        wait_until(lambda: len(marks(tmp_path)) >= 201, 20, "every task to run")
        statuses = stored(store_url, [task.id for task in [*rated, free]])
    *rated_statuses, free_status = statuses
    starts = sorted(status.started_at for status in rated_statuses)
    busiest = max(
        sum(1 for other in starts[i:] if other < start + 1.0 - JITTER)
        for i, start in enumerate(starts)
    )
    took = max(status.finished_at for status in rated_statuses) - began
    waited = free_status.started_at - free_status.created_at
    print(
        f"{store_url.partition(':')[0]}: 200 starts at 20/s took {took:.2f}s, busiest second "
        f"{busiest}, another task started {waited * 1000:.0f} ms after it was written"
    )
    assert busiest == 20  # never more in any window, bursts of the limit allowed
    assert 9.0 <= took < 13.0
    assert waited < 0.5  # not behind the 150 rate-limited tasks still waiting


def test_one_task_per_key_at_once_and_a_killed_worker_frees_its_key(tmp_path, shared_db):
    store_url = shared_db
    with workers(tmp_path, store_url) as processes:
        tasks = [BackgroundTask(limits_tasks.keyed, f"c{n % 5}", f"t{n}", 0.1) for n in range(50)]
        submit(store_url, tasks)
        wait_until(
            lambda: sum(label.startswith("end:") for label, _, _ in marks(tmp_path)) == 50,
            20,
            "all 50 to run",
        )
        intervals: dict[str, list[tuple[float, float]]] = {}
        begun = {label.removeprefix("start:"): at for label, _, at in marks(tmp_path)}
        for label, _, at in marks(tmp_path):
            if label.startswith("end:"):
                key = label.split(":")[1]
                intervals.setdefault(key, []).append((begun[label.removeprefix("end:")], at))
        assert sorted(intervals) == [f"c{n}" for n in range(5)]
        for key, runs in intervals.items():
            runs.sort()
            assert len(runs) == 10
            for (_, end), (start, _) in itertools.pairwise(runs):
                assert start >= end - JITTER, f"two tasks of {key} ran at once"

        # A worker killed mid-task: the key's tasks go on within seconds (its slot is freed
        # when a live worker takes the dead one over), not after the 30 s lease.
        once = tmp_path / "once"
        doomed = [
            BackgroundTask(limits_tasks.keyed, "k", f"d{n}", 60 if n == 0 else 0.1, str(once))
            for n in range(3)
        ]
        submit(store_url, doomed)
        wait_until(lambda: "start:k:d0" in [m[0] for m in marks(tmp_path)], 10, "d0 to start")
        [pid] = [pid for label, pid, _ in marks(tmp_path) if label == "start:k:d0"]
        [victim] = [process for process in processes if process.pid == pid]
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        killed_at = time.time()
        wait_until(
            lambda: "end:k:d2" in [m[0] for m in marks(tmp_path)], 15, "the key's tasks to go on"
        )
    key_marks = [(label, at) for label, _, at in marks(tmp_path) if ":k:" in label]
    labels = [label for label, _ in key_marks]
    # d0 ran again first (its lost run holds no slot), then d1, then d2, one at a time.
    assert labels == [
        "start:k:d0",
        "start:k:d0",
        "end:k:d0",
        "start:k:d1",
        "end:k:d1",
        "start:k:d2",
        "end:k:d2",
    ]
    took = key_marks[-1][1] - killed_at
    print(f"{store_url.partition(':')[0]}: the key's 3 tasks ran {took:.2f}s after the kill")
    assert took < 6.0
