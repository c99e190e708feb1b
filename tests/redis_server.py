"""A Redis server for the tests: the one at $REDIS_URL or 127.0.0.1:6379 if it answers,
else a `redis-server` of our own on a free port (skipped, loudly, only without one).

$REDIS_SERVER names another server binary (Redis 6.2, Valkey: `make test-compat`): then
every test, the ones that kill and restart their own server too, runs on that binary."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.serving import free_port


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def server_binary() -> str | None:
    return os.environ.get("REDIS_SERVER") or shutil.which("redis-server")


class OwnRedis:
    """A redis-server process of a test's own, on a free port, its files in `directory`."""

    def __init__(self, directory: str, *, append_only: bool = False) -> None:
        binary = server_binary()
        if binary is None:
            pytest.skip("NO REDIS: there is no redis-server binary; this test did not run")
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.append_only = append_only
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> OwnRedis:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.append_only else []
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--dir", self.directory, *persistence],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not _answers("127.0.0.1", self.port):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("the test's own redis-server did not start")
            time.sleep(0.05)
        return self

    def kill(self) -> None:
        """kill -9: what an AOF with appendfsync always has written survives it."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """The base URL of a Redis server that answers."""
    given = os.environ.get("REDIS_URL")
    if given:
        yield given
        return
    if _answers("127.0.0.1", 6379) and not os.environ.get("REDIS_SERVER"):
        yield "redis://127.0.0.1:6379/0"
        return
    if server_binary() is None:
        pytest.skip(
            "NO REDIS: nothing answers on 127.0.0.1:6379, REDIS_URL is not set and there is "
            "no redis-server binary; the Redis store's tests did not run"
        )
    directory = tempfile.mkdtemp(prefix="backbeat-redis-")
    server = OwnRedis(directory).start()
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def fresh_prefix_url(base: str) -> str:
    """The server's URL with a prefix no other test uses (tests share one server)."""
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}prefix=test-{uuid.uuid4().hex[:12]}"


def raw_client(url: str, *, asyncio: bool = False) -> Any:
    """A redis-py client of a store URL's server (a cluster client for `?cluster=yes`),
    to look at or tamper with the keys directly."""
    import redis
    import redis.asyncio

    module: Any = redis.asyncio if asyncio else redis
    kind = module.RedisCluster if "cluster=yes" in url else module.Redis
    return kind.from_url(url.partition("?")[0], decode_responses=True)


def forget(url: str) -> None:
    """Delete the keys of a test's prefix (the server outlives the test)."""
    prefix = url.rpartition("prefix=")[2].partition("&")[0]
    client = raw_client(url)
    try:
        keys = list(client.scan_iter(match="{" + prefix + "}*", count=1000))
        for at in range(0, len(keys), 1000):
            client.delete(*keys[at : at + 1000])
    finally:
        client.close()
