"""The status file (statusfile.py) and ``xcapdiff status``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from xcapdiff_ext.cli import main
from xcapdiff_ext.statusfile import (
    STATUS_NAME,
    StatusFile,
    StatusUnavailable,
    read_status,
    render_status,
    state_of,
)


class Source:
    def __init__(self) -> None:
        self.published = 0

    def __call__(self) -> dict[str, object]:
        return {
            "accepted": 3, "published": self.published, "retried": 1, "failed": 0,
            "dropped": 0, "fallbacks": {"size-cap": 1}, "pending_changes": 0,
            "pending_bytes": 0, "spool_bytes": 812, "latency": {"p50": 0.008, "p90": 0.02,
            "p99": 0.03, "max": 0.05}, "transport": "sip", "target": "sip:127.0.0.1:5060",
            "storage": "Database",
        }  # fmt: skip


def test_written_at_start_refreshed_and_marked_stopped(tmp_path: Path) -> None:
    clock, source, wall = Clock(), Source(), [1000.0]
    status = StatusFile(tmp_path, clock, source, interval=5, wall_clock=lambda: wall[0])
    status.start()
    first = read_status(tmp_path)
    assert first["running"] is True and first["published"] == 0 and first["pid"] == os.getpid()
    source.published, wall[0] = 2, 1005.0
    clock.advance(5)
    assert read_status(tmp_path)["published"] == 2
    assert read_status(tmp_path)["updated"] == 1005.0
    status.stop()
    assert read_status(tmp_path)["running"] is False
    assert clock.getDelayedCalls() == []
    assert [p.name for p in tmp_path.iterdir()] == [STATUS_NAME]  # no temporary left


def test_states() -> None:
    data = {"running": True, "updated": 100.0, "interval": 5}
    assert state_of(data, 110.0) == "running"
    assert state_of(data, 116.0) == "stale"
    assert state_of({**data, "running": False}, 101.0) == "stopped"


def test_unreadable_files_say_why(tmp_path: Path) -> None:
    with pytest.raises(StatusUnavailable, match="no status file"):
        read_status(tmp_path)
    (tmp_path / STATUS_NAME).write_text("{not json")
    with pytest.raises(StatusUnavailable, match="unreadable"):
        read_status(tmp_path)
    (tmp_path / STATUS_NAME).write_text('{"format": 99}')
    with pytest.raises(StatusUnavailable, match="not a status file"):
        read_status(tmp_path)


def test_a_broken_directory_does_not_raise(tmp_path: Path) -> None:
    status = StatusFile(tmp_path / "gone", Clock(), Source())
    status.write()
    assert status.failures == 1


def test_rendered_table() -> None:
    text = render_status({**Source()(), "running": True, "updated": 99.0, "pid": 42}, 100.0)
    assert "running (pid 42, updated 1 s ago)" in text
    assert "sip → sip:127.0.0.1:5060" in text
    assert "size-cap 1" in text
    assert "p50 8 ms p90 20 ms p99 30 ms max 50 ms" in text


def run_status(*args: str, capsysbinary: pytest.CaptureFixture[bytes]) -> tuple[int, str, str]:
    rc = main(["status", *args])
    captured = capsysbinary.readouterr()
    return rc, captured.out.decode(), captured.err.decode()


def test_cli_status(tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    rc, out, err = run_status("--spool-dir", str(tmp_path), capsysbinary=capsysbinary)
    assert rc == 1 and "no status file" in err

    import time

    StatusFile(tmp_path, Clock(), Source(), wall_clock=time.time).write()
    rc, out, _ = run_status("--spool-dir", str(tmp_path), capsysbinary=capsysbinary)
    assert rc == 0 and out.startswith("state ") and "published  0" in out
    rc, out, _ = run_status("--spool-dir", str(tmp_path), "--json", capsysbinary=capsysbinary)
    assert rc == 0 and json.loads(out)["storage"] == "Database"

    StatusFile(tmp_path, Clock(), Source(), wall_clock=lambda: 0.0).write()  # long ago
    rc, out, _ = run_status("--spool-dir", str(tmp_path), capsysbinary=capsysbinary)
    assert rc == 1 and "stale" in out


def test_cli_status_finds_the_spool_from_the_config(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    (tmp_path / "config.ini").write_text(f"[XCAPDiff]\nspool_dir = {spool}\n")
    StatusFile(spool, Clock(), Source()).stop()
    rc, out, _ = run_status("--config", str(tmp_path / "config.ini"), capsysbinary=capsysbinary)
    assert rc == 1 and "stopped" in out
    (tmp_path / "config.ini").write_text("[XCAPDiff]\nspool_dir = relative\n")
    rc, _, err = run_status("--config", str(tmp_path / "config.ini"), capsysbinary=capsysbinary)
    assert rc == 2 and "spool_dir" in err
