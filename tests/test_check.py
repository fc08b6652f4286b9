"""``xcapdiff check`` end to end: each case runs the command in a fresh interpreter
(it runs its own reactor) against real peers on loopback: ``xcapdiff monitor`` and
SIPp as SIP peers, a small MI datagram server speaking OpenSIPS's JSON-RPC replies.
OpenXCAP is the stand-in (tests/openxcap_standin) with the pip route's import hook.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers.conftest import free_port, require_binary, wait_listening

REPO = Path(__file__).resolve().parents[1]
STANDIN = REPO / "tests" / "openxcap_standin"
SCENARIOS = REPO / "tests" / "peers" / "scenarios"

# An OpenSIPS MI datagram endpoint: 'which' lists the commands, pua_publish answers
# as pua_mi does (a SIP failure comes back as a result: MI.md).  argv: port, mode.
MI_SERVER = r"""
import json, socket, sys
port, mode = int(sys.argv[1]), sys.argv[2]
commands = ["which", "version", "uptime"] + ([] if mode == "no-pua" else ["pua_publish"])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", port))
print("ready", flush=True)
while True:
    data, addr = s.recvfrom(65535)
    msg = json.loads(data)
    if msg["method"] == "which":
        out = {"result": commands}
    elif msg["method"] == "pua_publish" and mode != "no-pua":
        if mode == "489":
            out = {"result": {"reply": "489 Bad Event"}}
        elif mode == "no-event":  # OpenSIPS 3.6.8 without presence_xcapdiff
            out = {"error": {"code": 500, "message": "MI/PUBLISH failed"}}
        elif msg["params"]["expires"] == 0:
            out = {"result": {"reply": "200 OK", "ETag": "a.1", "Expires": 0}}
        else:
            out = {"result": {"reply": "200 OK", "ETag": "a.1", "Expires": 3600}}
    else:
        out = {"error": {"code": -32601, "message": "Method not found"}}
    s.sendto(json.dumps({"jsonrpc": "2.0", "id": msg["id"], **out}).encode(), addr)
"""


def write_config(directory: Path, **ours: str) -> Path:
    spool = directory / "spool"
    spool.mkdir(exist_ok=True)
    values = {"spool_dir": str(spool), "mi_timeout": "1", **ours}
    config = directory / "config.ini"
    config.write_text(
        textwrap.dedent(
            f"""
            [Server]
            root = http://127.0.0.1/xcap-root
            backend = XCAPDiff
            [Database]
            authentication_db_uri = sqlite:///{directory}/a
            storage_db_uri = sqlite:///{directory}/s
            [XCAPDiff]
            """
        )
        + "".join(f"{k} = {v}\n" for k, v in values.items())
    )
    return config


def check(config: Path, *, user: list[str] | None = None) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(STANDIN), str(REPO)])}
    code = "import _xcapdiff_ext_hook, sys\nfrom xcapdiff_ext.cli import main\n"
    code += f"sys.exit(main(['check', '--config', {str(config)!r}]))\n"
    proc = subprocess.run(
        [*(user or []), sys.executable, "-c", code],
        env=env, capture_output=True, text=True, timeout=60, check=False, cwd="/",
    )  # fmt: skip
    return proc.returncode, proc.stdout + proc.stderr


def lines(output: str, mark: str) -> list[str]:
    return [line[2:] for line in output.splitlines() if line.startswith(mark + " ")]


@pytest.fixture
def peer_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def monitor() -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "xcapdiff_ext", "monitor", "--listen", f"udp:127.0.0.1:{port}"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_listening("udp", port, proc, "xcapdiff monitor")
        yield port
    finally:
        proc.kill()
        proc.wait(5)


def mi_server(mode: str) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", MI_SERVER, str(port), mode], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc, port


def test_a_correct_sip_setup_passes(peer_dir: Path, monitor: int) -> None:
    config = write_config(peer_dir, transport="sip", sip_proxy=f"sip:127.0.0.1:{monitor}")
    rc, out = check(config)
    assert rc == 0, out
    assert lines(out, "✘") == []
    passed = "\n".join(lines(out, "✔"))
    for expected in (
        "settings valid",
        "writable",
        "OpenXCAP 3.2.0 importable",
        "[Server] backend = XCAPDiff",
        "OpenXCAP finds xcap.backend.xcapdiff (import hook",
        "no double publishing",
        f"next hop sip:127.0.0.1:{monitor} answers OPTIONS (200 OK)",
        "PUBLISH xcap-diff (Expires: 0) for sip:xcapdiff-check@127.0.0.1 accepted",
    ):
        assert expected in passed, out
    assert out.rstrip().endswith("all checks passed")


def test_a_correct_mi_setup_passes_and_removes_its_probe(peer_dir: Path) -> None:
    server, port = mi_server("ok")
    try:
        rc, out = check(write_config(peer_dir, transport="mi", mi_url=f"udp:127.0.0.1:{port}"))
    finally:
        server.kill()
        server.wait(5)
    assert rc == 0, out
    passed = "\n".join(lines(out, "✔"))
    assert f"MI udp:127.0.0.1:{port} answers (4 commands)" in passed
    assert "lists pua_publish (pua_mi loaded)" in passed
    assert "OpenSIPS accepted an xcap-diff publication for sip:xcapdiff-check@127.0.0.1" in passed
    assert lines(out, "!") == []  # the probe was removed


@pytest.mark.parametrize(
    ("mode", "failure", "fix"),
    [
        ("no-pua", "has no pua_publish command", 'loadmodule "pua_mi.so"'),
        ("489", "refused an xcap-diff publication", 'loadmodule "presence_xcapdiff.so"'),
        ("no-event", "MI/PUBLISH failed", 'loadmodule "presence_xcapdiff.so" if it is missing'),
    ],
)
def test_missing_opensips_modules_are_named(
    peer_dir: Path, mode: str, failure: str, fix: str
) -> None:
    server, port = mi_server(mode)
    try:
        rc, out = check(write_config(peer_dir, transport="mi", mi_url=f"udp:127.0.0.1:{port}"))
    finally:
        server.kill()
        server.wait(5)
    assert rc == 1
    (failed,) = lines(out, "✘")
    assert failure in failed, out
    assert f"fix: {fix}" in out


def test_an_unreachable_mi_fails_with_the_fix(peer_dir: Path) -> None:
    port = free_port()  # nothing listens there
    t0 = time.monotonic()
    rc, out = check(write_config(peer_dir, transport="mi", mi_url=f"udp:127.0.0.1:{port}"))
    assert rc == 1
    (failed,) = lines(out, "✘")
    assert f"MI udp:127.0.0.1:{port} does not answer" in failed
    assert "fix: start OpenSIPS, or make mi_url match its MI module" in out
    assert time.monotonic() - t0 < 30  # mi_timeout = 1 s and a few retransmissions


def test_a_sip_peer_answering_489_fails_with_the_fix(peer_dir: Path) -> None:
    sipp = require_binary("sipp")
    port, media = free_port(), free_port()
    proc = subprocess.Popen(
        [sipp, "-sf", str(SCENARIOS / "uas-489.xml"), "-t", "u1", "-i", "127.0.0.1",
         "-p", str(port), "-mp", str(media), "-m", "2", "-nostdin", "-timeout", "30"],
        cwd=peer_dir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_listening("udp", port, proc, "sipp uas-489")
        rc, out = check(write_config(peer_dir, transport="sip", sip_proxy=f"sip:127.0.0.1:{port}"))
        assert proc.wait(10) == 0  # SIPp saw both calls through
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert rc == 1
    assert f"next hop sip:127.0.0.1:{port} answers OPTIONS (200 OK)" in "\n".join(lines(out, "✔"))
    (failed,) = lines(out, "✘")
    assert "answered 489 Bad Event" in failed
    assert 'loadmodule "presence_xcapdiff.so"' in out


def test_a_bad_config_key_fails_and_skips_the_rest(peer_dir: Path) -> None:
    rc, out = check(write_config(peer_dir, min_intervall="5"))
    assert rc == 1
    (failed,) = lines(out, "✘")
    assert "min_intervall" in failed and "did you mean 'min_interval'" in failed
    assert lines(out, "–") == ["transport: not checked (the settings are not valid)"]


def test_a_spool_directory_without_permission_fails(monitor: int) -> None:
    # As a user other than the spool's owner (root bypasses permission bits).
    base = Path(tempfile.mkdtemp(prefix="check-perm-"))
    try:
        base.chmod(0o755)
        config = write_config(base, transport="sip", sip_proxy=f"sip:127.0.0.1:{monitor}")
        config.chmod(0o644)
        (base / "spool").chmod(0o700)
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        rc, out = check(config, user=nobody)
        assert rc == 1, out
        (failed,) = lines(out, "✘")
        assert (
            f"spool directory {base / 'spool'} is not writable by this user (uid 65534)" in failed
        )
        assert "fix: chown it to the user OpenXCAP runs as" in out
        assert stat.S_IMODE((base / "spool").stat().st_mode) == 0o700
    finally:
        shutil.rmtree(base)
