"""The suite's per-test time limit (pyproject: timeout = 300): a hang fails its own test, by name, and moves on."""

from __future__ import annotations

import subprocess
import sys


def test_a_hanging_test_fails_by_name_instead_of_holding_the_suite(pytestconfig, tmp_path):
    # The project's own limit is set: without it (pytest-timeout's default is none) a hang holds the whole run.
    # getini reads pyproject.toml whatever --timeout this run was given.
    assert 0 < float(pytestconfig.getini("timeout") or 0) <= 600, "set timeout = 300 in pyproject.toml"
    # And pytest-timeout enforces a limit: the test past it fails by name, the next one still runs.
    (tmp_path / "test_hang.py").write_text("import time\n\n\ndef test_hangs():\n    time.sleep(60)\n\n\n"
                                           "def test_after():\n    assert True\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--timeout=1", "-q",
                           str(tmp_path / "test_hang.py")], cwd=tmp_path, capture_output=True, text=True, timeout=50)
    assert proc.returncode == 1
    assert "Timeout" in proc.stdout and "test_hangs" in proc.stdout and "1 failed, 1 passed" in proc.stdout
