"""An installed wheel finds its templates and migrations (not only a checkout)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_carries_templates_and_migrations(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next(tmp_path.glob("ca_service-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "ca_service/templates/base.html" in names
    assert "ca_service/templates/auth/login.html" in names
    assert "ca_service/static/css/app.css" in names
    assert any(n.startswith("ca_service/migrations/versions/0001") for n in names)
    assert "hsm/token.py" in names

    target = tmp_path / "installed"
    zipfile.ZipFile(wheel).extractall(target)
    code = "from ca_service.paths import templates_dir; print(templates_dir())"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"PYTHONPATH": str(target)},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    assert out == str(target / "ca_service" / "templates")
