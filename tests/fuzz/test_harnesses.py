"""The atheris harnesses of tests/fuzz/harness.py, each for a bounded number of inputs in a
subprocess (libFuzzer exits non-zero on a crash or an input over its time limit)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris")

ROOT = Path(__file__).resolve().parents[2]
# Bounded for CI (about 15 s together); CA_TEST_FUZZ_RUNS multiplies them for a longer run.
RUNS = {
    "csr": 1000,
    "seal-pdf": 150,
    "seal-cms": 100,
    "ocsp": 3000,
    "certificate": 2000,
    "upload": 300,
}
SCALE = int(os.environ.get("CA_TEST_FUZZ_RUNS", "1"))


@pytest.mark.parametrize("target", sorted(RUNS))
def test_harness_finds_no_crash_or_hang(target: str, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.fuzz.harness",
            target,
            f"-runs={RUNS[target] * SCALE}",
            f"-artifact_prefix={tmp_path}/",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120 * SCALE,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Done" in proc.stderr
