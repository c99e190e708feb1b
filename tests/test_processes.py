"""backbeat.processes: telling from a heartbeat that its process is gone, on this machine,
without ever taking a live process for dead."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from backbeat import processes
from backbeat.processes import is_gone, this_process


def test_a_live_process_a_reused_pid_and_an_ended_one():
    me = this_process()
    assert not is_gone(me.machine, me.pid, me.started)
    assert is_gone(me.machine, me.pid, me.started + 100)  # the pid now names a newer process
    assert not is_gone("another machine", 999_999, 1.0)  # only its heartbeats can tell
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    assert is_gone(me.machine, ended.pid, 1.0)


@pytest.mark.skipif(not Path("/proc/uptime").exists(), reason="Linux: /proc")
def test_start_times_are_the_kernels_count_since_boot_not_the_wall_clock():
    """Setting the clock (chrony after boot, an NTP step) moves /proc's boot time: start
    times made from it differ between processes started before and after, and a live
    worker would look like a newer process on its pid."""
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    assert 0 < this_process().started <= uptime + 1


def test_a_process_hidden_from_us_is_taken_to_be_alive(monkeypatch):
    """/proc mounted with hidepid, or another user's process: alive, never dead."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        me = this_process()
        monkeypatch.setattr(processes, "_start_time", lambda pid: None)
        real_read = Path.read_text

        def hidden(path: Path, *args, **kwargs):
            if path.parts[:3] == ("/", "proc", str(child.pid)):
                raise PermissionError(13, "hidden", str(path))
            return real_read(path, *args, **kwargs)

        monkeypatch.setattr(Path, "read_text", hidden)
        assert not is_gone(me.machine, child.pid, 123.0)
    finally:
        child.kill()
        child.wait()


@pytest.mark.process
def test_a_worker_forked_after_its_runner_was_made_is_named_for_its_own_pid(tmp_path):
    """gunicorn --preload: the app (and its runner) is imported before the fork."""
    from backbeat import Runner

    runner = Runner(store=f"sqlite:///{tmp_path}/tasks.db")
    out = tmp_path / "name"
    pid = os.fork()
    if pid == 0:  # the child
        import asyncio

        async def start() -> None:
            async with runner:
                out.write_text(runner._engine.worker.name)

        try:
            asyncio.run(start())
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert out.read_text().split(":")[1] == str(pid)
