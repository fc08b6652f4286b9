"""Kill -9 with changes pending, restart: every owner's last state is delivered."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OWNERS, CHANGES = 40, 200


def child(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.publisher.crash_child", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_pending_changes_survive_sigkill(tmp_path: Path) -> None:
    spool, out = tmp_path / "spool", tmp_path / "delivered.jsonl"
    spool.mkdir()
    loader = child("load", str(spool), str(out), str(OWNERS), str(CHANGES))
    assert loader.stdout is not None
    line = loader.stdout.readline()
    assert line.strip() == "ACCEPTED", loader.stderr.read() if loader.stderr else ""
    time.sleep(0.3)  # > the 100 ms group commit: everything accepted is durable now
    os.kill(loader.pid, signal.SIGKILL)
    loader.wait(10)
    assert loader.returncode == -signal.SIGKILL
    assert not out.exists()  # the transport was down: nothing was delivered

    recovery = child("recover", str(spool), str(out))
    stdout, stderr = recovery.communicate(timeout=60)
    assert recovery.returncode == 0, stderr
    assert "DONE" in stdout

    last: dict[str, list[str]] = {}
    for record in map(json.loads, out.read_text().splitlines()):
        for sel, _previous, new in record["docs"]:
            last[sel] = [record["owner"], new]
    per_owner = CHANGES // OWNERS
    assert len(last) == OWNERS
    for sel, (owner, new_etag) in last.items():
        assert owner in sel
        assert new_etag == f"e{per_owner}"  # the owner's final version
