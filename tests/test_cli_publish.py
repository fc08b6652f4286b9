"""``xcapdiff publish`` end to end, in a subprocess (a reactor runs once per process)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "xcapdiff_ext", *args],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def body(tmp_path: Path) -> Path:
    out = run("diff", "examples/resource-lists-old.xml", "examples/resource-lists-new.xml")
    assert out.returncode == 0, out.stderr
    path = tmp_path / "body.xml"
    path.write_text(out.stdout)
    return path


def config(tmp_path: Path, **keys: str) -> Path:
    path = tmp_path / "config.ini"
    lines = ["[XCAPDiff]", f"spool_dir = {tmp_path}"] + [f"{k} = {v}" for k, v in keys.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_publish_through_the_null_transport(tmp_path: Path) -> None:
    out = run(
        "publish",
        str(body(tmp_path)),
        "--owner",
        "sip:alice@example.com",
        "--config",
        str(config(tmp_path, transport="null")),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("published sip:alice@example.com via null")


class FakeMiDatagram(threading.Thread):
    """Answers each pua_publish like OpenSIPS 3.6 mi_datagram (MI.md), recording it."""

    def __init__(self, reply: dict[str, object] | None = None) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(30)
        self.port = self.sock.getsockname()[1]
        self.reply = reply or {"reply": "200 OK", "ETag": "a.1795696722.1981.4.2", "Expires": 3600}
        self.requests: list[dict[str, object]] = []

    def run(self) -> None:
        try:
            data, peer = self.sock.recvfrom(65535)
        except OSError:
            return
        request = json.loads(data)
        self.requests.append(request)
        answer = {"jsonrpc": "2.0", "result": self.reply, "id": request["id"]}
        self.sock.sendto(json.dumps(answer).encode(), peer)


def test_publish_over_mi_datagram(tmp_path: Path) -> None:
    server = FakeMiDatagram()
    server.start()
    cfg = config(tmp_path, transport="mi", mi_url=f"udp:127.0.0.1:{server.port}", mi_timeout="5")
    out = run(
        "publish", str(body(tmp_path)), "--owner", "sip:alice@example.com", "--config", str(cfg)
    )
    server.join(10)
    assert out.returncode == 0, out.stderr
    assert "etag=a.1795696722.1981.4.2 expires=3600" in out.stdout
    (request,) = server.requests
    assert request["method"] == "pua_publish"
    params = request["params"]
    assert isinstance(params, dict)
    assert params["presentity_uri"] == "sip:alice@example.com"
    assert params["event_package"] == "xcap-diff" and params["expires"] == 3600
    assert "extra_headers" not in params
    assert params["body"] == (tmp_path / "body.xml").read_text()


def test_a_sip_failure_inside_the_result_is_reported(tmp_path: Path) -> None:
    server = FakeMiDatagram({"reply": "408 Request Timeout"})
    server.start()
    cfg = config(tmp_path, transport="mi", mi_url=f"udp:127.0.0.1:{server.port}", mi_timeout="5")
    out = run(
        "publish", str(body(tmp_path)), "--owner", "sip:alice@example.com", "--config", str(cfg)
    )
    server.join(10)
    assert out.returncode == 1
    assert "not published (retryable)" in out.stderr and "408" in out.stderr


def test_publish_usage_errors(tmp_path: Path) -> None:
    missing = run(
        "publish", str(body(tmp_path)), "--owner", "sip:a@x", "--config", str(tmp_path / "nope.ini")
    )
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    not_sip = run(
        "publish",
        str(body(tmp_path)),
        "--owner",
        "alice",
        "--config",
        str(config(tmp_path, transport="null")),
    )
    assert not_sip.returncode == 2


def test_remove_over_mi_datagram(tmp_path: Path) -> None:
    server = FakeMiDatagram({"reply": "200 OK", "ETag": "a.1.2.3.4", "Expires": 0})
    server.start()
    cfg = config(tmp_path, transport="mi", mi_url=f"udp:127.0.0.1:{server.port}", mi_timeout="5")
    out = run("publish", "-", "--remove", "--owner", "sip:alice@example.com", "--config", str(cfg))
    server.join(10)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("removed sip:alice@example.com via mi")
    params = server.requests[0]["params"]
    assert isinstance(params, dict)
    assert params["expires"] == 0 and "body" not in params


def test_publish_over_mi_http(tmp_path: Path) -> None:
    import http.server

    seen: list[tuple[str, dict[str, object]]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            request = json.loads(self.rfile.read(length))
            seen.append((self.headers["Content-Type"], request))
            reply = {
                "jsonrpc": "2.0",
                "result": {"reply": "200 OK", "ETag": "a.9", "Expires": 3600},
                "id": request["id"],
            }
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/mi"
    out = run(
        "publish",
        str(body(tmp_path)),
        "--owner",
        "sip:alice@example.com",
        "--config",
        str(config(tmp_path, transport="mi", mi_url=url, mi_timeout="5")),
    )
    thread.join(10)
    server.server_close()
    assert out.returncode == 0, out.stderr
    assert "etag=a.9" in out.stdout
    ((content_type, request),) = seen
    assert content_type == "application/json"  # anything else hangs mi_http (MI.md)
    assert request["method"] == "pua_publish"


def test_publish_over_mi_fifo(tmp_path: Path) -> None:
    fifo, replies = tmp_path / "opensips_fifo", tmp_path / "replies"
    os.mkfifo(fifo)
    replies.mkdir()
    seen: list[str] = []

    def opensips() -> None:  # reads one ":reply:json" request and answers into reply_dir
        with open(fifo, encoding="utf-8") as requests:
            data = requests.read()
        name, _, payload = data[1:].partition(":")
        request = json.loads(payload)
        seen.append(name)
        answer = {
            "jsonrpc": "2.0",
            "result": {"reply": "200 OK", "ETag": "a.7", "Expires": 3600},
            "id": request["id"],
        }
        with open(replies / name, "w", encoding="utf-8") as reply:
            reply.write(json.dumps(answer))

    thread = threading.Thread(target=opensips, daemon=True)
    thread.start()
    cfg = config(
        tmp_path, transport="mi", mi_url=f"fifo:{fifo}", mi_reply_dir=str(replies), mi_timeout="5"
    )
    out = run(
        "publish", str(body(tmp_path)), "--owner", "sip:alice@example.com", "--config", str(cfg)
    )
    thread.join(10)
    assert out.returncode == 0, out.stderr
    assert "etag=a.7" in out.stdout
    assert seen and "." not in seen[0] and "/" not in seen[0]
    assert list(replies.iterdir()) == []  # the private reply FIFO was removed


def test_publish_over_sip_to_the_monitor(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a free port (TCP, then UDP on the same number)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    monitor = subprocess.Popen(
        # Both: a request over 1300 bytes leaves UDP for TCP (RFC 3261 section 18.1.1).
        [
            sys.executable,
            "-m",
            "xcapdiff_ext",
            "monitor",
            "--listen",
            f"udp:127.0.0.1:{port}",
            "--listen",
            f"tcp:127.0.0.1:{port}",
            "--count",
            "1",
            "--json",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert monitor.stderr is not None
        assert "listening" in monitor.stderr.readline()
        cfg = config(tmp_path, transport="sip", sip_proxy=f"sip:127.0.0.1:{port};transport=udp")
        sent = body(tmp_path)
        out = run("publish", str(sent), "--owner", "sip:alice@example.com", "--config", str(cfg))
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("published sip:alice@example.com via sip: ")
        stdout, _ = monitor.communicate(timeout=20)
    finally:
        if monitor.poll() is None:
            monitor.kill()
    (line,) = stdout.splitlines()
    received = json.loads(line)
    assert received["aor"] == "sip:alice@example.com"
    assert received["valid"] is True
    assert received["body"] == sent.read_text()
