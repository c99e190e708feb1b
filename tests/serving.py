"""A real uvicorn on 127.0.0.1 for tests, and a tiny raw HTTP/1.1 client."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    out_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def marks_with_pids(self) -> list[tuple[str, int]]:
        if not self.out_path.exists():
            return []
        lines = self.out_path.read_text().splitlines()
        return [(line.split()[0], int(line.split()[1])) for line in lines]

    def marks(self) -> list[str]:
        if not self.out_path.exists():
            return []
        return [line.split()[0] for line in self.out_path.read_text().splitlines()]

    def wait_for_mark(self, name: str, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while name not in self.marks():
            if time.monotonic() > deadline:
                raise AssertionError(f"{name!r} never marked; server log:\n{self.log()}")
            time.sleep(0.02)


@contextmanager
def uvicorn(
    app: str, tmp_path: Path, *extra: str, env: dict[str, str] | None = None, name: str = "server"
) -> Iterator[Server]:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
    with background_process([*command, *extra], tmp_path, env=env, name=name) as (process, log):
        server = Server(port, process, log, tmp_path / "marks.txt")
        _wait_until_listening(server)
        yield server


@contextmanager
def background_process(
    command: list[str], tmp_path: Path, *, env: dict[str, str] | None = None, name: str
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A process of the tests, logging to tmp_path/NAME.log, stopped at the end."""
    log_path = tmp_path / f"{name}.log"
    full_env = {
        **os.environ,
        "BACKBEAT_TEST_OUT": str(tmp_path / "marks.txt"),
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        yield process, log_path
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_listening(server: Server, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"uvicorn exited early:\n{server.log()}")
        try:
            socket.create_connection(("127.0.0.1", server.port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"uvicorn did not start listening:\n{server.log()}")


def request(sock: socket.socket, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    """One HTTP/1.1 keep-alive request on an open socket; returns (status, body)."""
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        buffer += chunk
    header_block, rest = buffer.split(b"\r\n\r\n", 1)
    lines = header_block.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection mid-body")
        rest += chunk
    return status, rest[:length]
