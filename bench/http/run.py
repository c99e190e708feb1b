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
    Contender("backbeat", "backbeat_app:app", OURS, "backbeat App, decorator task"),
    Contender("starlette", "starlette_app:app", OURS, "hand-written Starlette (same version)"),
    Contender("litestar", "litestar_app:app", PEERS, "Litestar"),
    Contender("fastapi", "fastapi_app:app", PEERS, "FastAPI, injected BackgroundTasks"),
    Contender("esmerald", "esmerald_app:app", PEERS, "Esmerald 3.9.4 (returns a dict)"),
    Contender("bare-asgi", "bare_app:app", OURS, "bare ASGI callable: the ceiling"),
]


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


def wrk(base: str, duration: int, connections: int, threads: int) -> tuple[float, float, int]:
    script = HERE / "post.lua"
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        "--latency",
        "-s",
        str(script),
        f"{base}/register",
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", output)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    p99_ms = float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return rps, p99_ms, int(errors.group(1)) if errors else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds measured per app")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per app")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (2 cores: keep 1)")
    parser.add_argument("--only", help="comma-separated contender names")
    parser.add_argument("--json", type=Path, help="also write the results here")
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
        port = free_port()
        process = serve(contender, port)
        base = f"http://127.0.0.1:{port}"
        try:
            check(contender, base)
            wrk(base, args.warmup, args.connections, args.threads)
            rps, p99_ms, errors = wrk(base, args.duration, args.connections, args.threads)
            check(contender, base)
        finally:
            process.terminate()
            process.wait(timeout=10)
        if errors:
            raise RuntimeError(f"{contender.name}: {errors} non-2xx responses under load")
        results[contender.name] = {"rps": rps, "p99_ms": p99_ms}
        print(f"  {contender.name:<10} {rps:>9.0f} req/s  p99 {p99_ms:6.2f} ms", flush=True)

    reference = results.get("backbeat", {}).get("rps")
    print()
    print(
        f"bench/http — {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, "
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s"
    )
    print()
    print("| app | version | req/s | p99 ms | backbeat ÷ app |")
    print("|---|---|---:|---:|---:|")
    packages = {
        "backbeat": "backbeat",
        "starlette": "starlette",
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
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
