"""The dashboard's script and stylesheet are in the wheel (no CDN, no build step)."""

import subprocess
import sys
import zipfile

import pytest

from tests.serving import ROOT

pytestmark = pytest.mark.process

STATIC = ROOT / "src" / "backbeat" / "dashboard" / "static"


def test_the_wheel_ships_the_static_files(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", tmp_path, ROOT],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    wheel = zipfile.ZipFile(next(tmp_path.glob("backbeat-*.whl")))
    for name in ("dashboard.js", "dashboard.css"):
        shipped = wheel.read(f"backbeat/dashboard/static/{name}")
        assert shipped == (STATIC / name).read_bytes()
    assert "backbeat/dashboard/__init__.py" in wheel.namelist()
    # The pages reference nothing outside the dashboard: no CDN.
    script = (STATIC / "dashboard.js").read_text()
    assert "http://" not in script and "https://" not in script
