"""`backbeat watch`: the frame as text (pure), the queries a frame costs, one frame into a
pipe from a real SQLite store, and the live view under a real pseudo-terminal — redrawn in
place, cut to the terminal, ended by Ctrl-C, and a Redis that dies and comes back."""

import asyncio
import codecs
import contextlib
import dataclasses
import fcntl
import json
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import time

import pytest

from backbeat.progress import read_report
from backbeat.stores import SQLiteStore
from backbeat.stores.base import StoredStatus, WorkerInfo
from backbeat.watch import CLEAR_BELOW, HOME, SHOW_CURSOR, Snapshot, bar, cut, frame, read
from tests.redis_server import OwnRedis
from tests.serving import ROOT
from tests.stores.rows import failed, new_task, succeeded

NOW = 1_800_000_000.0
COUNTS = dict.fromkeys(("pending", "scheduled", "running", "succeeded", "failed", "cancelled"), 0)


def snapshot(clock: float = 100.0, **fields) -> Snapshot:
    given = {
        "store": "sqlite:///tasks.db",
        "taken_at": NOW,
        "clock": clock,
        "counts": dict(COUNTS),
        "queues": {},
        "more_queues": 0,
        "workers": [],
        "running": [],
        "schedules": [],
        **fields,
    }
    return Snapshot(**given)


def running_task(task_id: str, progress: dict | None, started: float, worker: str) -> StoredStatus:
    return StoredStatus(
        id=task_id,
        name="imports.rows",
        state="running",
        attempts=1,
        error=None,
        traceback=None,
        created_at=started,
        started_at=started,
        finished_at=None,
        due_at=started,
        progress=None if progress is None else json.dumps(progress),
        worker=worker,
    )


def worker(name: str = "web1:4242:abcd", running: int = 1, concurrency: int = 8) -> WorkerInfo:
    host, pid, _ = name.split(":")
    return WorkerInfo(name, host, int(pid), None, concurrency, running, started_at=NOW - 60)


# --- the frame, pure ------------------------------------------------------------------------


def test_a_frame_shows_counts_queues_workers_and_running_tasks_longest_running_first():
    counts = {**COUNTS, "pending": 7, "running": 2, "succeeded": 1500}
    shown = snapshot(
        counts=counts,
        queues={"default": {**COUNTS, "pending": 7}, "mail": {**COUNTS, "running": 2}},
        workers=[worker(running=2)],
        running=[
            running_task(
                "T-NEW", {"fraction": 0.42, "message": "42 of 100"}, NOW - 5, "web1:4242:abcd"
            ),
            running_task("T-OLD", None, NOW - 3725, "web2:77:ffff"),
        ],
    )
    lines = frame(shown, None, NOW).splitlines()
    assert lines[0] == "backbeat watch  sqlite:///tasks.db  2027-01-15 08:00:00Z"
    assert "pending 7  scheduled 0  running 2  succeeded 1500  failed 0  cancelled 0" in lines
    assert "throughput  - (measured between two frames)" in lines
    assert [
        line.split()[:3] for line in lines if line.startswith(("QUEUE", "default", "mail"))
    ] == [
        ["QUEUE", "PENDING", "SCHEDULED"],
        ["default", "7", "0"],
        ["mail", "0", "0"],
    ]
    assert "workers  1 alive, running 2 of 8 slot(s)" in lines
    table = lines[lines.index("running  2") + 1 :]
    assert table[0].split() == ["ID", "NAME", "FOR", "PROGRESS", "WORKER", "MESSAGE"]
    # The one running for an hour first; its worker sends no heartbeat (taken over soon).
    assert table[1].split() == [
        "T-OLD",
        "imports.rows",
        "1h02m",
        "[",
        "]",
        "web2:77",
        "(no",
        "heartbeat)",
    ]
    assert table[2].split() == [
        "T-NEW",
        "imports.rows",
        "5s",
        "[####......]",
        "42%",
        "web1:4242",
        "42",
        "of",
        "100",
    ]


def test_a_frame_says_how_many_running_tasks_it_does_not_list():
    listed = [running_task(f"T{n}", None, NOW - n, "w:1:x") for n in range(3)]
    text = frame(snapshot(counts={**COUNTS, "running": 50}, running=listed), None, NOW)
    assert "running  50, 3 newest shown" in text.splitlines()
    assert "running  0" in frame(snapshot(), None, NOW).splitlines()


def test_throughput_is_finished_tasks_per_second_and_never_negative():
    before = snapshot(clock=100.0, counts={**COUNTS, "succeeded": 10, "failed": 1})
    after = snapshot(clock=102.0, counts={**COUNTS, "succeeded": 16, "failed": 3, "cancelled": 1})
    line = frame(after, before, NOW).splitlines()[3]
    assert line == (
        "throughput  4.5/s finished over 2.0s (succeeded 3.0/s, failed 1.0/s, cancelled 0.5/s)"
    )
    # 500 succeeded tasks purged meanwhile, 4 more failed: a lower bound, not -248/s.
    purged = snapshot(clock=104.0, counts={**COUNTS, "succeeded": 10, "failed": 7, "cancelled": 1})
    line = frame(purged, after, NOW).splitlines()[3]
    assert line == (
        "throughput  >= 2.0/s finished over 2.0s (succeeded 0.0/s, failed 2.0/s, cancelled 0.0/s)"
    )
    assert "-" not in line.split("throughput")[1]


def test_progress_bars():
    assert bar(None) == "[          ]"
    assert bar(0) == "[..........]   0%"
    assert bar(0.42) == "[####......]  42%"
    assert bar(0.999) == "[#########.]  99%"  # full only when done
    assert bar(1) == "[##########] 100%"
    assert bar(7) == bar(1)  # stored by something else than backbeat.progress: clamped


def test_a_stored_report_is_read_back_whatever_was_stored():
    # The watch and the dashboard read reports with this one function.
    assert read_report('{"fraction": 0.25, "message": "a", "rows": 3}') == (0.25, "a")
    assert read_report('{"fraction": 7}') == (1.0, "")  # written by something else: clamped
    assert read_report('{"fraction": true, "message": 5}') == (None, "5")
    assert read_report("not json") == (None, "")
    assert read_report("[0.5]") == (None, "")
    assert read_report(None) == (None, "")


def test_a_frame_is_cut_to_the_width_and_height_of_the_terminal():
    tasks = [
        running_task(f"01TASK{n:020d}", {"fraction": 0.5, "message": "x" * 200}, NOW - n, "w:1:x")
        for n in range(30)
    ]
    shown = snapshot(counts={**COUNTS, "running": 30}, running=tasks)
    lines = frame(shown, None, NOW, width=40, height=12).splitlines()
    assert len(lines) == 12 and all(len(line) <= 40 for line in lines)
    assert lines[0].endswith("~")  # the header is cut
    # 39 lines (8 above the table's 31): 11 shown, and this one for the other 28.
    assert lines[-1] == "... 28 more line(s): a taller terminal ~"
    # Wide characters take two columns; a cut never leaves half of one.
    assert cut("数据导入任务", 7) == "数据导~"
    assert cut("short", 7) == "short"


def test_what_a_task_wrote_cannot_drive_the_terminal():
    task = running_task(
        "T1", {"fraction": 0.1, "message": "\x1b[2J\x1b]0;owned\x07\nnext"}, NOW, "w:1:x"
    )
    task.name = "evil\x1b[31m"
    text = frame(snapshot(counts={**COUNTS, "running": 1}, running=[task]), None, NOW)
    assert "\x1b" not in text and "\x07" not in text
    assert "?[2J?]0;owned??next" in text and "evil?[31m" in text


def test_a_store_that_fails_is_said_above_the_last_snapshot_read():
    last = snapshot(counts={**COUNTS, "pending": 3})
    failing = dataclasses.replace(last, error="gone", failed_at=NOW + 5)
    lines = frame(failing, None, NOW + 6).splitlines()
    assert lines[1:3] == [
        "! store error at 2027-01-15 08:00:05Z: gone",
        "! retrying; below: as read at 2027-01-15 08:00:00Z",
    ]
    assert "pending 3  scheduled 0  running 0  succeeded 0  failed 0  cancelled 0" in lines


# --- a snapshot's queries -------------------------------------------------------------------


class Counting:
    """A store whose every call is written down."""

    def __init__(self, store):
        self.store, self.calls = store, []

    def __getattr__(self, name):
        attribute = getattr(self.store, name)
        if not asyncio.iscoroutinefunction(attribute):
            return attribute

        async def call(*args, **kwargs):
            self.calls.append(name)
            return await attribute(*args, **kwargs)

        return call


@pytest.mark.anyio
async def test_a_snapshot_costs_the_same_queries_whatever_the_store_holds(tmp_path):
    store = SQLiteStore(tmp_path / "tasks.db")
    await store.enqueue([new_task(queue=f"q{n:02d}") for n in range(25)])
    await store.enqueue([new_task() for _ in range(300)])
    await store.claim("w:1:x", 60, 60)
    await store.declare_schedules([("nightly", "every 3600s")])
    counting = Counting(store)
    try:
        shown = await read(counting, "sqlite:///tasks.db", limit=5)
    finally:
        await store.close()
    assert shown.counts["running"] == 60 and len(shown.running) == 5
    assert len(shown.queues) == 20 and shown.more_queues == 6  # default and q00..q24
    assert counting.calls == [
        "counts", "queues", *["counts"] * 20, "workers", "list_tasks", "schedules"
    ]  # fmt: skip


# --- the command ----------------------------------------------------------------------------


async def a_store_in_every_state(url_path, *, with_worker: bool = True) -> str:
    """Tasks pending, scheduled (in another queue), running with progress, succeeded, failed
    and cancelled, a worker's heartbeat and a schedule; returns the running task's id."""
    store = SQLiteStore(url_path)
    working, done, broken = new_task("imports.rows"), new_task("ok.task"), new_task("bad.task")
    await store.enqueue([working, done, broken])
    claims = {claim.id: claim for claim in await store.claim("web1:4242:abcd", 3, 600)}
    progress = {"fraction": 0.42, "message": "42 of 100 chunks", "rows": 4200}
    await store.progress(claims[working.id].receipt, json.dumps(progress))
    await store.finish([succeeded(claims[done.id]), failed(claims[broken.id])])
    await store.enqueue([new_task("emails.send") for _ in range(5)])
    await store.enqueue([new_task("reports.build", queue="reports", due_in=3600)])
    [cancelled] = await store.enqueue([new_task("old.task")])
    await store.cancel([cancelled], "test")
    if with_worker:
        await store.heartbeat(worker(running=1, concurrency=4), 600)
    await store.declare_schedules([("sync", "every 300s")])
    await store.close()
    return working.id


def backbeat(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    inherited = {k: v for k, v in os.environ.items() if k not in ("BACKBEAT_STORE", "COLUMNS")}
    return subprocess.run(
        [sys.executable, "-m", "backbeat", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**inherited, **env},
    )


@pytest.mark.process
@pytest.mark.anyio
async def test_into_a_pipe_watch_prints_one_frame_and_exits_0(tmp_path):
    url = f"sqlite:///{tmp_path}/tasks.db"
    path = tmp_path / "tasks.db"
    working = await a_store_in_every_state(path)

    def files() -> tuple[list[str], bytes, int]:
        return (
            sorted(p.name for p in tmp_path.iterdir()),
            path.read_bytes(),
            path.stat().st_mtime_ns,
        )

    before = files()
    result = await asyncio.to_thread(backbeat, "watch", "--store", url)
    assert (result.returncode, result.stderr) == (0, "")
    assert "\x1b" not in result.stdout  # no escape sequence into a file
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"backbeat watch  {url}  ")
    assert "pending 5  scheduled 1  running 1  succeeded 1  failed 1  cancelled 1" in lines
    assert [line.split() for line in lines if line.startswith(("default ", "reports "))] == [
        ["default", "5", "0", "1", "1", "1", "1"],
        ["reports", "0", "1", "0", "0", "0", "0"],
    ]
    assert "workers  1 alive, running 1 of 4 slot(s)" in lines
    [row] = [line.split() for line in lines if line.startswith(working)]
    assert row[1] == "imports.rows" and row[2].endswith("s")
    assert row[3:] == ["[####......]", "42%", "web1:4242", "42", "of", "100", "chunks"]
    [schedule] = [line.split() for line in lines if line.startswith("sync ")]
    assert schedule[1:3] == ["every", "300s"]
    # --once is the same frame; $COLUMNS cuts it.
    once = await asyncio.to_thread(backbeat, "watch", "--once", "--store", url, COLUMNS="50")
    assert once.returncode == 0 and max(len(line) for line in once.stdout.splitlines()) == 50
    assert files() == before  # read only: no byte, no mtime, no -wal or -shm left behind


@pytest.mark.process
def test_a_missing_store_is_exit_2_and_bad_options_exit_1(tmp_path):
    missing = tmp_path / "none" / "tasks.db"
    result = backbeat("watch", "--store", f"sqlite:///{missing}")
    assert result.returncode == 2 and "backbeat watch: error: no store at" in result.stderr
    assert not missing.parent.exists()
    result = backbeat("watch", "--interval", "0", "--store", f"sqlite:///{missing}")
    assert (result.returncode, result.stderr) == (
        1, "backbeat watch: error: --interval must be at least 0.1s, got 0\n"
    )  # fmt: skip


class Terminal:
    """`backbeat watch` on a pseudo-terminal of `columns` x `rows`; what it draws is read
    as it comes."""

    def __init__(self, args: list[str], columns: int = 100, rows: int = 30) -> None:
        self.master, slave = os.openpty()
        self.resize(columns, rows, fd=slave)
        env = {
            k: v for k, v in os.environ.items() if k not in ("BACKBEAT_STORE", "COLUMNS", "LINES")
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "backbeat", "watch", *args],
            cwd=ROOT,
            stdin=slave,
            stdout=slave,
            stderr=subprocess.PIPE,
            env={**env, "TERM": "xterm"},
        )
        os.close(slave)
        self.output = ""
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def resize(self, columns: int, rows: int, fd: int | None = None) -> None:
        fcntl.ioctl(
            self.master if fd is None else fd,
            termios.TIOCSWINSZ,
            struct.pack("HHHH", rows, columns, 0, 0),
        )

    def frames(self) -> list[list[str]]:
        """Every frame drawn whole, as its lines without escape sequences."""
        drawn = [part for part in self.output.split(HOME)[1:] if CLEAR_BELOW in part]
        return [part.split(CLEAR_BELOW)[0].replace("\x1b[K", "").split("\r\n") for part in drawn]

    def wait_for(self, condition, within: float, what: str) -> None:
        deadline = time.monotonic() + within
        while not condition(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}:\n{self.output[-3000:]}")
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                with contextlib.suppress(OSError):  # EIO: the process has ended
                    self.output += self.decoder.decode(os.read(self.master, 65536))

    def interrupt(self) -> tuple[int, str]:
        self.process.send_signal(signal.SIGINT)
        self.wait_for(lambda t: t.process.poll() is not None, 10, "the exit")
        self.wait_for(lambda t: SHOW_CURSOR in t.output, 5, "the cursor back")
        errors = self.process.stderr.read().decode()
        return self.process.returncode, errors

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        self.process.stderr.close()
        os.close(self.master)


@pytest.mark.process
@pytest.mark.anyio
async def test_on_a_terminal_watch_redraws_in_place_until_ctrl_c(tmp_path):
    url = f"sqlite:///{tmp_path}/tasks.db"
    working = await a_store_in_every_state(tmp_path / "tasks.db")
    terminal = Terminal(["--interval", "0.2", "--store", url], columns=100, rows=30)
    try:
        await asyncio.to_thread(terminal.wait_for, lambda t: len(t.frames()) >= 4, 15, "4 frames")
        frames = terminal.frames()
        assert terminal.output.startswith("\x1b[?25l")  # the cursor hidden while it draws
        for lines in frames:
            assert len(lines) <= 30 and all(len(line) <= 99 for line in lines)
            assert any(line.startswith(working) and "42%" in line for line in lines)
        # The second frame on has a rate: nothing finished meanwhile.
        assert any(line.startswith("throughput  0.0/s finished over ") for line in frames[-1])

        terminal.resize(60, 12)
        terminal.process.send_signal(signal.SIGWINCH)  # what the terminal sends its foreground
        await asyncio.to_thread(
            terminal.wait_for,
            lambda t: len(t.frames()[-1]) <= 12 and max(map(len, t.frames()[-1])) == 59,
            10,
            "a frame at the new size",
        )
        code, errors = await asyncio.to_thread(terminal.interrupt)
    finally:
        await asyncio.to_thread(terminal.close)
    assert (code, errors) == (0, "")
    assert "Traceback" not in terminal.output and terminal.output.endswith(SHOW_CURSOR + "\r\n")


@pytest.mark.process
@pytest.mark.redis
def test_a_redis_that_dies_is_said_in_the_frame_and_watched_again_when_it_is_back(tmp_path):
    from backbeat.stores.redis import RedisStore

    redis = OwnRedis(str(tmp_path), append_only=True).start()

    async def some_tasks() -> None:
        store = RedisStore(redis.url)
        await store.enqueue([new_task() for _ in range(3)])
        await store.close()

    terminal = None
    try:
        asyncio.run(some_tasks())
        terminal = Terminal(["--interval", "0.2", "--store", redis.url])
        terminal.wait_for(lambda t: len(t.frames()) >= 2, 15, "2 frames")
        redis.kill()
        terminal.wait_for(lambda t: t.frames()[-1][1].startswith("! store error"), 15, "the error")
        failing = terminal.frames()[-1]
        assert "pending 3  scheduled 0  running 0  succeeded 0  failed 0  cancelled 0" in failing
        assert terminal.process.poll() is None
        redis.start()  # the same port and files
        terminal.wait_for(lambda t: t.frames()[-1][1] == "", 15, "a frame without the error")
        assert (
            "pending 3  scheduled 0  running 0  succeeded 0  failed 0  cancelled 0"
            in (terminal.frames()[-1])
        )
        assert terminal.interrupt() == (0, "")
    finally:
        if terminal is not None:
            terminal.close()
        redis.stop()
