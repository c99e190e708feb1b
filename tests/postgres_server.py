"""A PostgreSQL server for the tests: the one at $POSTGRES_URL or 127.0.0.1:5432 (database
``test``, user ``postgres``) if it answers, else a cluster of our own made with
`initdb` and started with `pg_ctl` on a free port (skipped, loudly, only without those).

Tests share the server; each gets a schema of its own (`fresh_schema_url`), dropped after
(`forget`), so that they never see one another's tasks."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.serving import free_port

LOCAL = "postgresql://postgres@127.0.0.1:5432/test"
# Where Debian's packages put the server's programs (not on PATH).
_DEBIAN = Path("/usr/lib/postgresql")


def run_async(coroutine: Any) -> Any:
    """Run a coroutine to its end from anywhere, an event loop's thread included."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _answers(url: str) -> bool:
    async def connect() -> bool:
        import asyncpg

        try:
            conn = await asyncpg.connect(url, timeout=2)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False
        await conn.close()
        return True

    return bool(run_async(connect()))


def _children(parent: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # The fields after the command's name (in parentheses): state, then parent pid.
            if int(stat.read_text().rpartition(")")[2].split()[1]) == parent:
                found.append(int(stat.parent.name))
    return found


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found is None:
        packaged = sorted(_DEBIAN.glob(f"*/bin/{name}"))
        found = str(packaged[-1]) if packaged else None
    return found


class OwnPostgres:
    """A PostgreSQL cluster of a test's own, on a free port, its files in `directory`.

    As root, its processes run as the ``postgres`` user (PostgreSQL refuses root). Another
    `address` than loopback serves another host (`on_host`: the words that run a command
    there, as `tests.hosts.Hosts.run_in` gives them), trusting the clients on its subnet."""

    def __init__(
        self,
        directory: str,
        address: str = "127.0.0.1",
        port: int | None = None,
        on_host: list[str] | None = None,
    ) -> None:
        initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
        if initdb is None or pg_ctl is None:
            pytest.skip("NO POSTGRES: there is no initdb/pg_ctl; this test did not run")
        self.initdb, self.pg_ctl = initdb, pg_ctl
        self.directory = Path(directory)
        self.data = self.directory / "data"
        self.address = address
        self.port = port or free_port()
        self._as: list[str] = list(on_host or [])
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.directory, user.pw_uid, user.pw_gid)
            self._as += ["runuser", "-u", "postgres", "--"]

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.address}:{self.port}/test"

    def _run(self, *command: str) -> None:
        subprocess.run([*self._as, *command], check=True, capture_output=True)

    def start(self) -> OwnPostgres:
        if not self.data.exists():
            self._run(self.initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust")
            if self.address != "127.0.0.1":
                with (self.data / "pg_hba.conf").open("a") as rules:
                    rules.write("host all all samenet trust\n")
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses={self.address} -c fsync=on"
        )
        start = [self.pg_ctl, "-D", str(self.data), "-o", options, "-w", "-t", "30", "start",
                 "-l", str(self.directory / "log")]  # fmt: skip
        # After a kill -9, the old server's processes may still hold its shared memory for a
        # moment (until they notice their postmaster is gone): it refuses to start till then.
        deadline = time.monotonic() + 15
        while True:
            try:
                self._run(*start)
                break
            except subprocess.CalledProcessError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

        async def create_database() -> None:
            import asyncpg

            # By its socket file: the test's process may be on another host than the server.
            conn = await asyncpg.connect(
                host=str(self.directory), port=self.port, user="postgres", database="postgres",
                timeout=5,
            )  # fmt: skip
            try:
                if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = 'test'"):
                    await conn.execute("CREATE DATABASE test")
            finally:
                await conn.close()

        run_async(create_database())
        return self

    def kill(self) -> None:
        """kill -9 of the server, its postmaster and every process it started (a machine
        that lost power): what was committed survives it (the WAL)."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signal.SIGKILL)  # first: it starts no process any more
        for child in _children(postmaster):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)

    def stop(self) -> None:
        subprocess.run(
            [*self._as, self.pg_ctl, "-D", str(self.data), "-m", "immediate", "stop"],
            capture_output=True,
        )


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The URL of a PostgreSQL database that answers."""
    given = os.environ.get("POSTGRES_URL")
    if given:
        yield given
        return
    if _answers(LOCAL):
        yield LOCAL
        return
    directory = tempfile.mkdtemp(prefix="backbeat-postgres-")
    try:
        server = OwnPostgres(directory).start()
    except (OSError, subprocess.CalledProcessError) as exc:
        shutil.rmtree(directory, ignore_errors=True)
        pytest.skip(
            "NO POSTGRES: nothing answers on 127.0.0.1:5432, POSTGRES_URL is not set and a "
            f"cluster of our own could not start ({exc}); the PostgreSQL store's tests did not run"
        )
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def fresh_schema_url(base: str) -> str:
    """The server's URL with a schema no other test uses (tests share one server)."""
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}schema=test_{uuid.uuid4().hex[:12]}"


def forget(url: str) -> None:
    """Drop a test's schema (the server outlives the test)."""
    schema = url.rpartition("schema=")[2].partition("&")[0]

    async def drop() -> None:
        import asyncpg

        conn = await asyncpg.connect(url.partition("?")[0], timeout=5)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    run_async(drop())
