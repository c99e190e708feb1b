"""`backbeat dashboard` started as an operator would, for the dashboard's benchmarks."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int) -> float:
    """The resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@contextmanager
def process(command: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "ab") as out:
        running = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield running
    finally:
        running.terminate()
        try:
            running.wait(timeout=15)
        except subprocess.TimeoutExpired:
            running.kill()
            running.wait()


@contextmanager
def dashboard(store: str, log: Path, *extra: str) -> Iterator[tuple[str, int]]:
    """The dashboard of `store` served on a free port: (its URL, its pid)."""
    port = free_port()
    command = [sys.executable, "-m", "backbeat", "dashboard", "--store", store]
    command += ["--port", str(port), "--log-level", "warning", *extra]
    with process(command, log) as running:
        deadline = time.monotonic() + 60
        while True:
            if running.poll() is not None:
                raise SystemExit(f"backbeat dashboard exited:\n{log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(
                        f"backbeat dashboard never listened:\n{log.read_text()}"
                    ) from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", running.pid
