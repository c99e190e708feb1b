"""The PostgreSQL server that `run.py --backend postgres` measures on.

The one at 127.0.0.1:5432 (trust auth, user postgres) when it answers; otherwise a private
cluster made with initdb and started with pg_ctl on a spare port, removed at the end (as
root, run as the `postgres` user: PostgreSQL refuses root). Each measurement gets a fresh
database, `bench_<pid>`, dropped and made again, so that no contender sees another's
tables, bloat or statistics; it is dropped at the end.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile

LOCAL = "postgresql://postgres@127.0.0.1:5432"


def binary(name: str) -> str:
    """A PostgreSQL program from PATH, or from Debian's /usr/lib/postgresql/*/bin."""
    found = shutil.which(name) or max(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), default=None)
    if found is None:
        raise SystemExit(f"bench/queues on PostgreSQL needs {name} (apt-get install postgresql)")
    return found


class Server:
    def __init__(self, spare_port: int) -> None:
        self.url, self.cluster = LOCAL, ""
        self.database = f"bench_{os.getpid()}"
        self.psql = binary("psql")
        if not self.answers():
            self.start(spare_port)

    def answers(self) -> bool:
        command = [self.psql, f"{self.url}/postgres?connect_timeout=3", "-XtAc", "select 1"]
        return subprocess.run(command, capture_output=True).returncode == 0

    def start(self, port: int) -> None:
        self.cluster = tempfile.mkdtemp(prefix="bench-queues-pg-")
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if as_postgres:
            shutil.chown(self.cluster, "postgres")
        data = os.path.join(self.cluster, "data")
        subprocess.run([*as_postgres, binary("initdb"), "-D", data, "-U", "postgres",
                        "--auth=trust"], check=True, capture_output=True)  # fmt: skip
        options = f"-p {port} -k {self.cluster} -c listen_addresses=127.0.0.1"
        subprocess.run([*as_postgres, binary("pg_ctl"), "-D", data, "-o", options, "-w",
                        "-l", os.path.join(self.cluster, "log"), "start"], check=True,
                       capture_output=True)  # fmt: skip
        self.url = f"postgresql://postgres@127.0.0.1:{port}"
        self.stop_command = [*as_postgres, binary("pg_ctl"), "-D", data, "-m", "fast", "stop"]

    def sql(self, statement: str) -> str:
        command = [self.psql, f"{self.url}/postgres", "-XtAq", "-v", "ON_ERROR_STOP=1"]
        return subprocess.run([*command, "-c", statement], check=True, capture_output=True,
                              text=True).stdout.strip()  # fmt: skip

    def version(self) -> str:
        return self.sql("show server_version")

    def fresh(self) -> str:
        """The URL of an empty database, made anew (the last one's connections are ended)."""
        self.sql(f"drop database if exists {self.database} with (force)")
        self.sql(f"create database {self.database}")
        return f"{self.url}/{self.database}"

    def close(self) -> None:
        self.sql(f"drop database if exists {self.database} with (force)")
        if self.cluster:
            subprocess.run(self.stop_command, capture_output=True)
            shutil.rmtree(self.cluster, ignore_errors=True)
