"""Every Python snippet in README.md and docs/ runs as written (tests/run_snippets.py)."""

import subprocess
import sys

import pytest

from tests.serving import ROOT

pytestmark = pytest.mark.process

PAGES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", PAGES)
def test_every_python_snippet_runs_as_written(page, tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "run_snippets.py"), str(ROOT / page)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "python block(s) ran" in result.stdout
