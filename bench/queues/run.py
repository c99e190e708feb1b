"""bench/queues: backbeat beside other task queues on the same server, one run.

    bash bench/queues/run.sh [--n 20000] [--only backbeat,saq] [--backend postgres]

On Redis (the default): backbeat, arq, saq, taskiq-redis and streaq on a redis-server of the
bench's own (no persistence) on a free port, emptied before each measurement. On PostgreSQL
(`--backend postgres`, `pgserver.py`): backbeat, procrastinate, pgqueuer and saq's
PostgreSQL queue, each measurement in a fresh database of the server at 127.0.0.1:5432 (or
of a private cluster when none answers), the contender's tables made before the clock runs.
For each library (peers in bench/.venv-queues):

* W1  enqueue N no-op tasks one by one from 32 concurrent producers (and with the
      library's batch API, where it has one: batches of 1,000);
* W2  N no-op tasks end to end with 1 worker process (concurrency 32): the tasks are
      enqueued first, then the clock runs from the worker's spawn until all have run;
* W3  the same with 2 worker processes;
* W4  enqueue-to-start latency of single tasks on an idle worker (200, 20 ms apart);
* W5  1,000 tasks sleeping 1 s on one worker with 200 slots (ideal: 5 s).

Every task adds its number to a set in Redis (the bench's redis-server, on either backend):
a run checks that exactly N ran, once each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
from pgserver import Server

from backbeat.stores import StoreError, open_store

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
OURS = sys.executable
PEERS = str(ROOT / "bench" / ".venv-queues" / "bin" / "python")
CONTENDERS = {
    "redis": {"backbeat": OURS, "arq": PEERS, "saq": PEERS, "taskiq": PEERS, "streaq": PEERS},
    "postgres": {"backbeat": OURS, "procrastinate": PEERS, "pgqueuer": PEERS, "saq": PEERS},
}
BATCH = {"backbeat", "streaq", "procrastinate", "pgqueuer"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Bench:
    def __init__(self, url: str, server: Server | None) -> None:
        self.url, self.server, self.database = url, server, ""
        self.contenders = CONTENDERS["postgres" if server else "redis"]
        self.counts = redis.Redis.from_url(url.rsplit("/", 1)[0] + "/15")
        self.main = redis.Redis.from_url(url)

    def env(self, concurrency: int) -> dict[str, str]:
        return {**os.environ, "BENCH_REDIS": self.url, "BENCH_CONCURRENCY": str(concurrency),
                "BENCH_POSTGRES": self.database, "PYTHONPATH": str(HERE)}  # fmt: skip

    def side(self, name: str, *args: str, concurrency: int = 32) -> dict[str, float]:
        command = [self.contenders[name], str(HERE / f"{name}_side.py"), *args]
        done = subprocess.run(command, cwd=HERE, env=self.env(concurrency), capture_output=True,
                              text=True, timeout=600)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"{name} {args}: {done.stderr[-2000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    def worker_command(self, name: str, concurrency: int) -> list[str]:
        # Made with the concurrency of the workers it starts: a command may carry it (taskiq's,
        # procrastinate's and pgqueuer's do).
        code = f"import {name}_side as s, json; print(json.dumps(s.WORKER))"
        done = subprocess.run([self.contenders[name], "-c", code], cwd=HERE,
                              env=self.env(concurrency), capture_output=True, text=True,
                              check=True)  # fmt: skip
        return json.loads(done.stdout)

    def fresh(self, name: str) -> None:
        self.main.flushall()
        if self.server:
            self.database = self.server.fresh()
            self.side(name, "install")

    def workers(self, name: str, count: int, concurrency: int) -> list[subprocess.Popen[bytes]]:
        command = self.worker_command(name, concurrency)
        return [
            subprocess.Popen(command, cwd=HERE, env=self.env(concurrency),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(count)
        ]  # fmt: skip

    def wait_for(self, n: int, started: float, timeout: float) -> float:
        while int(self.counts.scard("ran")) < n:
            if time.perf_counter() - started > timeout:
                raise TimeoutError(f"only {self.counts.scard('ran')} of {n} ran")
            time.sleep(0.01)
        return time.perf_counter() - started

    def check(self, n: int) -> str:
        ran, runs = int(self.counts.scard("ran")), int(self.counts.get("runs") or 0)
        return f"{ran}/{n} ran, {runs - ran} twice"


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def end_to_end(bench: Bench, name: str, n: int, workers: int, concurrency: int,
               sleep: float = 0.0) -> tuple[float, str]:  # fmt: skip
    bench.fresh(name)
    bench.side(name, "enqueue", "--n", str(n), "--sleep", str(sleep))
    started = time.perf_counter()
    processes = bench.workers(name, workers, concurrency)
    try:
        elapsed = bench.wait_for(n, started, timeout=300)
        time.sleep(0.3)  # a second run of anything would show by now
        return elapsed, bench.check(n)
    finally:
        stop(processes)


def latency(bench: Bench, name: str, samples: int) -> tuple[float, float]:
    bench.fresh(name)
    processes = bench.workers(name, 1, 32)
    try:
        time.sleep(3)  # the worker is up and idle
        bench.side(name, "latency", "--n", str(samples))
        bench.wait_for(samples, time.perf_counter(), timeout=60)
    finally:
        stop(processes)
    values = sorted(float(v) for v in bench.counts.lrange("latency", 0, -1))
    cuts = statistics.quantiles(values, n=100)
    return cuts[49] * 1000, cuts[98] * 1000


def backbeat_refuses(server: Server) -> str:
    """Why backbeat cannot run on PostgreSQL here ("" when it can): its store may be newer
    than the checkout measured."""
    try:
        open_store(f"{server.url}/postgres?schema=backbeat")
    except (StoreError, ImportError) as error:
        return f"backbeat: no PostgreSQL store in this version ({error})"
    return ""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--only", help="comma-separated contenders")
    parser.add_argument("--backend", choices=list(CONTENDERS), default="redis")
    args = parser.parse_args()
    names = [n for n in CONTENDERS[args.backend] if not args.only or n in args.only.split(",")]
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("bench/queues needs redis-server (apt-get install redis-server)")
    server, skipped = Server(free_port()) if args.backend == "postgres" else None, ""
    on = f"PostgreSQL {server.version()}" if server else "Redis"
    if server and "backbeat" in names and (skipped := backbeat_refuses(server)):
        print(skipped, flush=True)
        names.remove("backbeat")
    port, directory = free_port(), tempfile.mkdtemp(prefix="bench-queues-")
    command = [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", directory]
    redis_server = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    bench = Bench(f"redis://127.0.0.1:{port}/0", server)
    rows: dict[str, dict[str, str]] = {}
    values: dict[str, dict[str, float]] = {}
    try:
        for name in names:
            got, shown = values.setdefault(name, {}), rows.setdefault(name, {})
            n = args.n if name != "arq" else min(args.n, 5_000)
            bench.fresh(name)
            got["W1"] = bench.side(name, "enqueue", "--n", str(n))["rate"]
            shown["W1"] = f"{got['W1']:,.0f}"
            if name in BATCH:
                bench.fresh(name)
                got["W1b"] = bench.side(name, "enqueue-many", "--n", str(n))["rate"]
                shown["W1b"] = f"{got['W1b']:,.0f}"
            for key, workers in (("W2", 1), ("W3", 2)):
                elapsed, checked = end_to_end(bench, name, n, workers, 32)
                got[key] = n / elapsed
                shown[key] = f"{n / elapsed:,.0f}" + ("" if n == args.n else f" (N={n:,})")
                print(f"  {name} {key}: {checked}, {elapsed:.2f} s", flush=True)
            p50, p99 = latency(bench, name, 200)
            got["W4p50"], got["W4p99"] = -p50, -p99  # lower is better
            shown["W4p50"], shown["W4p99"] = f"{p50:.2f}", f"{p99:.2f}"
            elapsed, checked = end_to_end(bench, name, 1000, 1, 200, sleep=1.0)
            got["W5"] = -elapsed
            shown["W5"] = f"{elapsed:.2f}"
            print(f"  {name} W5: {checked}, {elapsed:.2f} s; row {shown}", flush=True)
    finally:
        redis_server.terminate()
        redis_server.wait()
        shutil.rmtree(directory, ignore_errors=True)
        if server:
            server.close()
    labels = {
        "W1": "W1 enqueue, one by one, 32 producers (tasks/s)",
        "W1b": "W1 enqueue, batch API (tasks/s)",
        "W2": "W2 no-op end to end, 1 worker (tasks/s)",
        "W3": "W3 no-op end to end, 2 workers (tasks/s)",
        "W4p50": "W4 latency enqueue→start, p50 (ms)",
        "W4p99": "W4 latency enqueue→start, p99 (ms)",
        "W5": "W5 1,000 x 1 s tasks, 200 slots (s; ideal 5)",
    }
    print()
    print(f"bench/queues on {on} — {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}, N={args.n:,}, "
          "concurrency 32")  # fmt: skip
    print()
    columns = [f"{name}-pg" if server and name == "saq" else name for name in names]
    print("| workload | " + " | ".join(columns) + " | backbeat ÷ best peer |")
    print("|---|" + "---:|" * (len(names) + 1))
    for key, label in labels.items():
        cells = [rows[name].get(key, "n/a") for name in names]
        peers = [values[p][key] for p in names if p != "backbeat" and key in values[p]]
        ratio = "-"
        if "backbeat" in values and key in values["backbeat"] and peers:
            ours, best = values["backbeat"][key], max(peers)
            ratio = f"{ours / best:.2f}x" if ours > 0 else f"{best / ours:.2f}x"
        print(f"| {label} | " + " | ".join(cells) + f" | {ratio} |")
    if skipped:
        print(f"\nSkipped: {skipped}")


if __name__ == "__main__":
    main()
