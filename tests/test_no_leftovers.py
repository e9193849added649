"""The suite's session-end check catches a redis-server left behind (and kills it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from app.sandbox.app_runner import ROOT

LEAKY_TEST = '''
import subprocess
import time
from app.redis_conn import redis_server_binary
from app.sandbox.app_runner import free_port

def test_leaks_a_server(tmp_path):
    # Started detached, as a crashed helper would leave it: nothing here stops it.
    subprocess.Popen([redis_server_binary(), "--port", str(free_port()), "--dir", str(tmp_path), "--save", ""],
                     start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)  # up and running in its --dir
'''


def test_a_leftover_redis_server_fails_the_run(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text("from tests.conftest import pytest_sessionfinish  # noqa: F401\n")
    (tmp_path / "test_leaky.py").write_text(LEAKY_TEST)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
         "--basetemp", str(tmp_path / "base"), str(tmp_path / "test_leaky.py")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0, result.stdout
    assert "left behind by the tests: redis-server" in result.stdout
