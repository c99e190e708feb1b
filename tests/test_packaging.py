"""What `pip install backbeat` gives, with no extras: the wheel and the sdist build, the
wheel installs into a clean venv and imports (typed), and the CLI and a worker run there
(its /healthz too; /metrics says what to install). Then `backbeat[testing]` in the same
venv: the README's test snippet runs, without a warning.

A fresh venv, a real build and a real worker process: slow (~40 s), so one test does it all.
"""

import os
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.run_snippets import blocks
from tests.serving import ROOT, free_port

pytestmark = pytest.mark.process

APP = """
from pathlib import Path

from backbeat import App, BackgroundTasks, Runner, post, task

runner = Runner(store="sqlite:///tasks.db", execute=False)


@task(name="notes.write")
def write_note(text: str) -> None:
    Path("note.txt").write_text(text)


@post("/notes")
async def note(tasks: BackgroundTasks) -> None:
    tasks.add_task(write_note, "from the worker")


app = App(routes=[note], runner=runner)
"""

ENQUEUE = """
import asyncio
from backbeat import BackgroundTask
from app import runner, write_note

async def main():
    async with runner:
        print(await runner.asubmit(BackgroundTask(write_note, "from the worker")))

asyncio.run(main())
"""


CRON_WITHOUT_THE_EXTRA = """
from backbeat import task

@task(every=60)
def hourly() -> None: ...

try:
    @task(cron="* * * * *")
    def minutely() -> None: ...
except ImportError as exc:
    print(exc)
"""


def run(*args: str | Path, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(arg) for arg in args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result


def test_the_wheel_installs_alone_and_runs_the_cli_and_a_worker(tmp_path):
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "build", "--outdir", dist, ROOT, cwd=tmp_path)
    wheel = next(dist.glob("backbeat-*.whl"))
    sdist = next(dist.glob("backbeat-*.tar.gz"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "backbeat/py.typed" in names
    assert any(name.endswith("licenses/LICENSE") for name in names)
    with tarfile.open(sdist) as archive:
        members = archive.getnames()
    assert any(name.endswith("/LICENSE") for name in members)
    assert any(name.endswith("/src/backbeat/py.typed") for name in members)

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    bin_dir = venv / "bin"
    run(bin_dir / "python", "-m", "pip", "install", "-q", wheel, cwd=tmp_path)
    freeze = run(bin_dir / "python", "-m", "pip", "freeze", cwd=tmp_path).stdout.lower()
    installed = {line.split("==")[0].split(" @ ")[0] for line in freeze.splitlines()}
    assert not installed & {"httpx", "uvicorn", "pytest", "fastapi"}, installed

    work = tmp_path / "work"
    work.mkdir()
    (work / "app.py").write_text(APP)
    assert "worker" in run(bin_dir / "backbeat", "--help", cwd=work).stdout
    assert run(bin_dir / "backbeat", "--version", cwd=work).stdout.startswith("backbeat ")
    task_id = run(bin_dir / "python", "-c", ENQUEUE, cwd=work).stdout.strip()
    status = run(bin_dir / "backbeat", "status", "--store", "sqlite:///tasks.db", cwd=work)
    assert any(line.split() == ["pending", "1"] for line in status.stdout.splitlines())
    assert status.stderr == ""
    # Schedules: every= needs nothing more; cron= needs the cron extra, and says so.
    cron = run(bin_dir / "python", "-c", CRON_WITHOUT_THE_EXTRA, cwd=work).stdout
    assert "pip install 'backbeat[cron]'" in cron, cron

    env = {**os.environ, "PYTHONPATH": ""}
    endpoint = f"http://127.0.0.1:{free_port()}"
    worker = subprocess.Popen(
        [bin_dir / "backbeat", "worker", "app:app", "--metrics", endpoint[len("http://") :]],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (work / "note.txt").exists():
            assert worker.poll() is None, worker.stdout.read() if worker.stdout else ""
            assert time.monotonic() < deadline, "the worker ran nothing in 30 s"
            time.sleep(0.1)
        # Health needs nothing more; metrics need prometheus-client, and say so.
        assert httpx.get(f"{endpoint}/healthz", timeout=5).json()["healthy"] is True
        metrics = httpx.get(f"{endpoint}/metrics", timeout=5)
        assert metrics.status_code == 501
        assert 'pip install "backbeat[prometheus]"' in metrics.text
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=30)
    assert worker.returncode == 0, output
    assert output.count('pip install "backbeat[prometheus]"') == 1, output
    assert (work / "note.txt").read_text() == "from the worker"
    status = run(bin_dir / "backbeat", "status", "--store", "sqlite:///tasks.db", cwd=work)
    assert any(line.split() == ["succeeded", "1"] for line in status.stdout.splitlines())
    assert len(task_id) == 26

    # `pip install 'backbeat[testing]'`: the README's quickstart and its test, as written,
    # with every warning an error (Starlette's test client warns with httpx alone).
    run(bin_dir / "python", "-m", "pip", "install", "-q", f"{wheel}[testing]", cwd=tmp_path)
    quickstart, test = (code for _, code in blocks((ROOT / "README.md").read_text())[:2])
    assert "from backbeat.testing import TestClient" in test
    (work / "readme_test.py").write_text(
        f"{quickstart}\n{test}\ntest_register_sends_the_email()\nprint('passed')\n"
    )
    tested = run(bin_dir / "python", "-W", "error", "readme_test.py", cwd=work)
    assert (tested.stdout, tested.stderr) == ("passed\n", "")
