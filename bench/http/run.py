"""bench/http: the seed endpoint under wrk, backbeat beside its peers, in one run.

Each app is served by uvicorn (httptools, uvloop, one worker, no access log)
on 127.0.0.1 and driven by wrk with 32 connections. Before measuring, the
harness checks that the endpoint answers 201 and that its background task
really runs (a peer that silently drops the task would otherwise look fast).

    .venv/bin/python bench/http/run.py [--duration 10] [--only backbeat,starlette]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
OURS = sys.executable
PEERS = str(ROOT / "bench" / ".venv-peers" / "bin" / "python")
BODY = b'{"email": "ann@example.com", "password": "s3cret"}'


@dataclass
class Contender:
    name: str
    module: str
    python: str
    note: str


CONTENDERS = [
    Contender("backbeat", "backbeat_app:app", OURS, "backbeat App, supervised (default)"),
    Contender("backbeat-inline", "backbeat_app:inline_app", OURS, "backbeat App, runner=False"),
    Contender("backbeat-sqlite", "backbeat_app:durable_app", OURS, "backbeat App, SQLite store"),
    Contender("backbeat-redis", "backbeat_app:redis_app", OURS, "backbeat App, Redis store"),
    Contender("starlette", "starlette_app:app", OURS, "hand-written Starlette (same version)"),
    Contender(
        "create-task",
        "starlette_app:fire_and_forget_app",
        OURS,
        "hand-written Starlette, task fired with asyncio.create_task",
    ),
    Contender("litestar", "litestar_app:app", PEERS, "Litestar"),
    Contender("fastapi", "fastapi_app:app", PEERS, "FastAPI, injected BackgroundTasks"),
    Contender("esmerald", "esmerald_app:app", PEERS, "Esmerald 3.9.4 (returns a dict)"),
    Contender("bare-asgi", "bare_app:app", OURS, "bare ASGI callable: the ceiling"),
]


def empty_redis_prefix() -> bool:
    """Delete the keys the Redis row left (prefix bench-http); False if Redis is not there."""
    try:
        import redis
    except ImportError:
        return False
    client = redis.Redis.from_url(os.environ.get("BENCH_HTTP_REDIS") or "redis://127.0.0.1:6379/0")
    try:
        keys = list(client.scan_iter(match="{bench-http}*", count=5000))
        for at in range(0, len(keys), 5000):
            client.delete(*keys[at : at + 5000])
    except redis.ConnectionError:
        return False
    finally:
        client.close()
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def version_of(python: str, package: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    result = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return result.stdout.strip() or "?"


def http(method: str, url: str, body: bytes | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method)
    req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=5) as response:
        return response.status, response.read()


def serve(contender: Contender, port: int) -> subprocess.Popen[bytes]:
    command = [
        contender.python,
        "-m",
        "uvicorn",
        contender.module,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--http",
        "httptools",
        "--loop",
        "uvloop",
        "--workers",
        "1",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    env = {**os.environ, "PYTHONPATH": str(HERE / "apps")}
    process = subprocess.Popen(command, cwd=HERE / "apps", env=env)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{contender.name}: uvicorn exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{contender.name}: uvicorn did not start")


def check(contender: Contender, base: str) -> None:
    status, body = http("POST", f"{base}/register", BODY)
    if status != 201 or json.loads(body) != {"message": "Created"}:
        raise RuntimeError(f"{contender.name}: POST /register gave {status} {body!r}")
    time.sleep(0.2)
    _, sent = http("GET", f"{base}/sent")
    if json.loads(sent)["sent"] < 1:
        raise RuntimeError(f"{contender.name}: the background task did not run")


@dataclass
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def wrk(
    base: str,
    duration: int,
    connections: int,
    threads: int,
    path: str = "/register",
    script: str = "post.lua",
) -> Load:
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        "--latency",
        "-s",
        str(HERE / script),
        f"{base}{path}",
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return Load(
        rps,
        percentile(output, "50"),
        percentile(output, "99"),
        int(errors.group(1)) if errors else 0,
    )


def percentile(output: str, which: str) -> float:
    found = re.search(which + r"%\s+([\d.]+)(us|ms|s)\b", output)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    return float(found.group(1)) * scale[found.group(2)] if found else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds measured per app")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per app")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (2 cores: keep 1)")
    parser.add_argument("--only", help="comma-separated contender names")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--skip-latency", action="store_true", help="only the throughput table")
    parser.add_argument("--repeat", type=int, default=1, help="runs per app; the best counts")
    args = parser.parse_args()

    chosen = CONTENDERS
    if args.only:
        names = set(args.only.split(","))
        chosen = [c for c in CONTENDERS if c.name in names]
    results: dict[str, dict[str, float]] = {}
    for contender in chosen:
        if contender.python == PEERS and not Path(PEERS).exists():
            print(f"skipping {contender.name}: no peers venv (run bench/http/run.sh)")
            continue
        if contender.name == "backbeat-redis" and not empty_redis_prefix():
            print("skipping backbeat-redis: no Redis answers (set BENCH_HTTP_REDIS)")
            continue
        loads = []
        for _ in range(args.repeat):
            with served(contender) as base:
                wrk(base, args.warmup, args.connections, args.threads)
                loads.append(wrk(base, args.duration, args.connections, args.threads))
                check(contender, base)
            if contender.name == "backbeat-redis":
                empty_redis_prefix()
        load = max(loads, key=lambda each: each.rps)
        if load.errors:
            raise RuntimeError(f"{contender.name}: {load.errors} non-2xx responses under load")
        results[contender.name] = {"rps": load.rps, "p99_ms": load.p99_ms}
        print(
            f"  {contender.name:<16} {load.rps:>9.0f} req/s  p99 {load.p99_ms:6.2f} ms", flush=True
        )

    reference = results.get("backbeat", {}).get("rps")
    print()
    print(
        f"bench/http — {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, "
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s, best of {args.repeat}"
    )
    print()
    print("| app | version | req/s | p99 ms | backbeat ÷ app |")
    print("|---|---|---:|---:|---:|")
    packages = {
        "backbeat": "backbeat",
        "backbeat-inline": "backbeat",
        "backbeat-sqlite": "backbeat",
        "backbeat-redis": "backbeat",
        "starlette": "starlette",
        "create-task": "starlette",
        "litestar": "litestar",
        "fastapi": "fastapi",
        "esmerald": "esmerald",
        "bare-asgi": "uvicorn",
    }
    for contender in chosen:
        if contender.name not in results:
            continue
        row = results[contender.name]
        version = version_of(contender.python, packages[contender.name])
        ratio = f"{reference / row['rps']:.2f}x" if reference else "-"
        print(
            f"| {contender.note} | {version} | {row['rps']:.0f} | {row['p99_ms']:.2f} | {ratio} |"
        )
    if not args.skip_latency:
        results["latency"] = latency(args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


LATENCY_ROWS = [
    ("backbeat, no task", "backbeat", "/register/no-task"),
    ("backbeat, task sleeping 1 s (supervised)", "backbeat", "/register/slow-task"),
    ("backbeat runner=False, task sleeping 1 s", "backbeat-inline", "/register/slow-task"),
    ("hand-written Starlette, task sleeping 1 s", "starlette", "/register/slow-task"),
]


def latency(args: argparse.Namespace) -> dict[str, float]:
    """p50/p99 at a steady ~1,500 req/s: does a slow task cost the client anything?"""
    by_name = {c.name: c for c in CONTENDERS}
    rows: dict[str, Load] = {}
    for label, name, path in LATENCY_ROWS:
        with served(by_name[name]) as base:
            wrk(base, args.warmup, 32, 1, path, "post-paced.lua")
            rows[label] = wrk(base, args.duration, 32, 1, path, "post-paced.lua")
    print()
    print("Latency at a steady load (wrk -t1 -c32, 20 ms pause per connection between requests):")
    print()
    print("| endpoint | req/s | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|")
    for label, load in rows.items():
        print(f"| {label} | {load.rps:.0f} | {load.p50_ms:.2f} | {load.p99_ms:.2f} |")
    return {f"{label} p99_ms": load.p99_ms for label, load in rows.items()}


@contextmanager
def served(contender: Contender) -> Iterator[str]:
    port = free_port()
    process = serve(contender, port)
    base = f"http://127.0.0.1:{port}"
    try:
        check(contender, base)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


if __name__ == "__main__":
    main()
