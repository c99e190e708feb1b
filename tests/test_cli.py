"""The `backbeat` command as an operator meets it: --version, BACKBEAT_STORE, a pipe into
`head`, the ids a command did not act on, counts per queue, read-only commands that write
nothing. Real subprocesses on real SQLite stores."""

import asyncio
import hashlib
import json
import os
import subprocess
import sys

import pytest

from backbeat import BackgroundTask, __version__
from tests.apps import durable_tasks
from tests.serving import ROOT

BACKBEAT = [sys.executable, "-m", "backbeat"]


def backbeat(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The command, with BACKBEAT_STORE only if `env` sets it."""
    inherited = {key: value for key, value in os.environ.items() if key != "BACKBEAT_STORE"}
    return subprocess.run(
        [*BACKBEAT, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**inherited, **(env or {})},
    )


async def stored_tasks(url: str, count: int, **using: object) -> list[str]:
    """`count` tasks written by an app that runs none of them (they stay pending)."""
    async with durable_tasks.runner(url, execute=False) as runner:
        tasks = [
            BackgroundTask(durable_tasks.record_sync, f"t{n}", "x" * 200).using(**using)
            for n in range(count)
        ]
        return [await runner.asubmit(task) for task in tasks]


def test_version():
    result = backbeat("--version")
    assert (result.returncode, result.stdout) == (0, f"backbeat {__version__}\n")


@pytest.mark.anyio
async def test_backbeat_store_stands_in_for_store_on_every_command(tmp_path):
    url = f"sqlite:///{tmp_path}/tasks.db"
    [task_id] = await stored_tasks(url, 1)
    env = {"BACKBEAT_STORE": url}
    for args in (["status"], ["workers"], ["list"], ["show", task_id], ["purge", "--dry-run"]):
        result = await asyncio.to_thread(backbeat, *args, env=env)
        assert (result.returncode, result.stderr) == (0, ""), args
    assert task_id in (await asyncio.to_thread(backbeat, "list", env=env)).stdout
    cancelled = await asyncio.to_thread(backbeat, "cancel", task_id, env=env)
    assert cancelled.stdout == "1 task(s) cancelled\n"
    # --store still wins; without either, the usage error says what is missing.
    elsewhere = await asyncio.to_thread(
        backbeat, "status", "--store", f"sqlite:///{tmp_path}/none.db", env=env
    )
    assert elsewhere.returncode == 2 and "no store at" in elsewhere.stderr
    missing = await asyncio.to_thread(backbeat, "status")
    assert missing.returncode == 2 and "--store" in missing.stderr
    assert "BACKBEAT_STORE" in (await asyncio.to_thread(backbeat, "status", "--help")).stdout


@pytest.mark.anyio
async def test_a_listing_piped_into_head_ends_without_a_traceback(tmp_path):
    url = f"sqlite:///{tmp_path}/tasks.db"
    await stored_tasks(url, 400)  # ~250 KB of JSON lines: more than a pipe holds

    def list_into_head() -> tuple[bytes, bytes, int]:
        listing = subprocess.Popen(
            [*BACKBEAT, "list", "--json", "--limit", "1000", "--store", url],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        head = subprocess.Popen(["head", "-1"], stdin=listing.stdout, stdout=subprocess.PIPE)
        assert listing.stdout is not None
        listing.stdout.close()  # head alone reads the pipe
        first, _ = head.communicate(timeout=60)
        _, errors = listing.communicate(timeout=60)
        return first, errors, listing.returncode

    first, errors, code = await asyncio.to_thread(list_into_head)
    assert first.startswith(b'{"id": ') and first.count(b"\n") == 1
    assert errors == b"", errors.decode()
    assert code == 1  # as Python's own advice for EPIPE: not all of it was read


@pytest.mark.anyio
async def test_cancel_and_retry_name_the_ids_they_did_not_act_on(tmp_path):
    url = f"sqlite:///{tmp_path}/tasks.db"
    async with durable_tasks.runner(url) as runner:
        done = await runner.asubmit(BackgroundTask(durable_tasks.total, [1, 2]))
        failed = await runner.asubmit(BackgroundTask(durable_tasks.fail_unless, "/nowhere"))
        await runner.join(timeout=5)
    [waiting] = await stored_tasks(url, 1, delay=3600)
    unknown = "01NOSUCHTASK0000000000000X"

    cancelled = await asyncio.to_thread(
        backbeat, "cancel", waiting, done, unknown, waiting, "--store", url
    )
    assert (cancelled.returncode, cancelled.stdout) == (1, "1 task(s) cancelled\n")
    assert cancelled.stderr == (
        f"backbeat cancel: error: 2 of the 3 ids given not cancelled: "
        f"{done} (succeeded), {unknown} (unknown)\n"
    )
    retried = await asyncio.to_thread(backbeat, "retry", failed, done, "--store", url)
    assert (retried.returncode, retried.stdout) == (1, "1 task(s) back to pending\n")
    assert f"1 of the 2 ids given not retried (only failed tasks are): {done} (succeeded)" in (
        retried.stderr
    )
    all_acted_on = await asyncio.to_thread(backbeat, "cancel", failed, "--store", url)
    assert (all_acted_on.returncode, all_acted_on.stderr) == (0, "")


@pytest.mark.anyio
async def test_status_counts_tasks_per_queue(tmp_path):
    url = f"sqlite:///{tmp_path}/tasks.db"
    await stored_tasks(url, 2, queue="mail")
    await stored_tasks(url, 1, queue="reports", delay=3600)
    await stored_tasks(url, 3)
    status = await asyncio.to_thread(backbeat, "status", "--store", url)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    table = lines[lines.index("by queue:") + 1 :]
    assert [line.split() for line in table[:4]] == [
        ["QUEUE", "PENDING", "SCHEDULED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"],
        ["default", "3", "0", "0", "0", "0", "0"],
        ["mail", "2", "0", "0", "0", "0", "0"],
        ["reports", "0", "1", "0", "0", "0", "0"],
    ]
    assert any(line.split() == ["pending", "5"] for line in lines)  # the totals stay


@pytest.mark.anyio
async def test_read_only_commands_write_nothing(tmp_path):
    path = tmp_path / "tasks.db"
    url = f"sqlite:///{path}"
    [task_id] = await stored_tasks(url, 1)

    def snapshot() -> tuple[list[str], str, int]:
        files = sorted(entry.name for entry in tmp_path.iterdir())
        return files, hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns

    before = snapshot()
    for args in (["status"], ["workers"], ["list"], ["show", task_id], ["list", "--json"]):
        result = await asyncio.to_thread(backbeat, *args, "--store", url)
        assert result.returncode == 0, (args, result.stderr)
    assert snapshot() == before  # no byte, no mtime, no -wal or -shm left behind

    missing = tmp_path / "missing" / "tasks.db"
    for args in (["status"], ["workers"], ["list"], ["show", task_id]):
        result = await asyncio.to_thread(backbeat, *args, "--store", f"sqlite:///{missing}")
        assert result.returncode == 2, (args, result.stderr)
    assert not missing.parent.exists()


@pytest.mark.anyio
@pytest.mark.process
async def test_schedules_are_listed_paused_and_resumed_in_the_store(tmp_path):
    from backbeat.stores import SQLiteStore
    from tests.stores.rows import new_task

    url = f"sqlite:///{tmp_path}/tasks.db"
    store = SQLiteStore(tmp_path / "tasks.db")
    await store.declare_schedules(
        [("nightly", "cron 30 2 * * * Europe/Berlin"), ("sync", "every 300s")]
    )
    task = new_task("sync")
    # Its last tick in the future, so that the next one shown does not depend on the clock.
    await store.fire_schedule("sync", "every 300s", 1_893_456_000, task)  # 2030-01-01 00:00Z
    await store.close()

    listed = backbeat("schedules", "--store", url)
    assert listed.returncode == 0, listed.stderr
    header, nightly, sync = listed.stdout.splitlines()
    assert header.split() == ["NAME", "RULE", "ZONE", "NEXT", "LAST", "LAST", "STATE"]
    assert nightly.split()[:7] == ["nightly", "30", "2", "*", "*", "*", "Europe/Berlin"]
    assert nightly.split()[7].endswith(("T02:30:00+01:00", "T02:30:00+02:00"))
    assert sync.split()[1:3] == ["every", "300s"]
    assert sync.split()[-3:] == [
        "2030-01-01T00:05:00+00:00",
        "2030-01-01T00:00:00+00:00",
        "pending",
    ]

    assert backbeat("schedules", "pause", "nightly", "--store", url).returncode == 0
    documents = [
        json.loads(line)
        for line in backbeat("schedules", "--json", "--store", url).stdout.splitlines()
    ]
    assert [(d["name"], d["paused"], d["next_run"]) for d in documents] == [
        ("nightly", True, "paused"),
        ("sync", False, "2030-01-01T00:05:00+00:00"),
    ]
    assert documents[1]["last_task"] == task.id
    assert backbeat("schedules", "resume", "nightly", "--store", url).returncode == 0
    assert '"paused": false' in backbeat("schedules", "--json", "--store", url).stdout

    unknown = backbeat("schedules", "pause", "nigthly", "--store", url)
    assert unknown.returncode == 1
    assert unknown.stderr == (
        "backbeat schedules: error: no schedule named 'nigthly' (known: nightly, sync)\n"
    )
    nameless = backbeat("schedules", "pause", "--store", url)
    assert nameless.returncode == 1
    assert "say which schedule to pause" in nameless.stderr
